"""Activations chosen by name (docs/design.md §1).

hard-swish ``x·ReLU6(x+3)/6`` and hard-sigmoid ``ReLU6(x+3)/6`` are the
piecewise-linear approximations introduced by MobileNetV3 (Howard et al.
2019, §5.2); swish ``x·σ(x)`` is from Ramachandran et al. 2017.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# name -> factory. One table, so the arch format, the CLI and the errors agree.
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "swish": nn.SiLU,
    "hswish": nn.Hardswish,
    "hsigmoid": nn.Hardsigmoid,
    "linear": nn.Identity,
}

ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)
"""Valid activation names, in the order error messages list them."""

GATES: tuple[str, ...] = ("sigmoid", "hsigmoid")
"""Valid squeeze-and-excitation gate functions."""


def check_activation(name: str, *, what: str = "activation") -> str:
    """Return ``name`` if it is a known activation, else raise a ValueError listing the valid ones."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return name


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    return _ACTIVATIONS[check_activation(name)]()
