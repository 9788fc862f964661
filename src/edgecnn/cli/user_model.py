"""``--model MODULE:FN``: a network from the user's own code (not an EdgeNet) and its weights, for ``compress``.

An edgecnn checkpoint rebuilds an EdgeNet from its arch string; a network
defined in code (a torchvision ResNet, a model of one's own) cannot be rebuilt
from a file without running code, and checkpoints never run code
(``weights_only=True``). So the user names the code — ``pkg.models:resnet18``
or ``my_net.py:build`` (a file path, imported from that file) — and it is
called without arguments; the weights come from ``CKPT``, loaded safely: a
plain ``state_dict``, a dict holding one under ``"state_dict"`` or ``"model"``,
or an edgecnn checkpoint. The compressed result is an edgecnn checkpoint
(arch ``None``) whose ``config["compress"]`` records the pruning steps;
:func:`edgecnn.compress.netadapt_state.load_pruned` rebuilds it from the same
code.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable ``spec`` names: ``package.module:function`` or ``path/to/file.py:function``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"--model {spec!r}: give MODULE:FUNCTION, e.g. 'torchvision.models:resnet18' or "
                         "'my_net.py:build' (called without arguments, it returns the network)")  # fmt: skip
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"--model {spec!r}: file {where} does not exist")
            modname = f"edgecnn_user_{path.stem}"
            loader = importlib.util.spec_from_file_location(modname, path)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[modname] = module  # its classes must pickle into worker processes
            loader.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # the current folder, as `python -m` has it
            module = importlib.import_module(where)
    except ImportError as exc:
        raise ValueError(f"--model {spec!r}: cannot import {where} ({exc}); install it or give a file path") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--model {spec!r}: {where} has no function or class {name!r}")
    return fn  # type: ignore[no-any-return]


def _state_dict(weights: str) -> dict[str, torch.Tensor]:
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist; pass the state_dict of the --model network")
    try:
        d: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"refusing to load {weights}: it asks to run code (a pickled module?); save "
                         "model.state_dict() instead — nothing was executed") from None  # fmt: skip
    except Exception as exc:
        raise ValueError(f"{weights} is not a PyTorch weights file ({type(exc).__name__})") from None
    if isinstance(d, dict):
        for key in ("state_dict", "model"):
            if isinstance(d.get(key), dict):
                d = d[key]
                break
    if not isinstance(d, dict) or not d or not all(isinstance(v, torch.Tensor) for v in d.values()):
        raise ValueError(f"{weights} holds no state_dict (a dict of tensors); save model.state_dict()")
    return d


def user_model(spec: str, weights: str, *, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The network ``spec`` builds, with the weights of ``weights`` loaded strictly, checked against the data."""
    model = load_factory(spec)()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        model.load_state_dict(_state_dict(weights))
    except RuntimeError as exc:
        raise ValueError(f"the weights in {weights} do not fit --model {spec}: {str(exc).splitlines()[0]}") from None
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
    except Exception as exc:
        raise ValueError(f"--model {spec} does not run on the data's images {input_shape} "
                         f"({type(exc).__name__}: {str(exc)[:100]})") from None  # fmt: skip
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"--model {spec} gives {shape} per image, the data has {num_classes} classes: build it "
                         "with that many outputs")  # fmt: skip
    return model
