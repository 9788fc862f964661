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
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEBUG_HINT = "`edgecnn --debug compress ...` shows the traceback"


def _location(exc: BaseException, source: str | None) -> str:
    """Where ``exc`` happened in the user's code: ``FILE line N`` (a SyntaxError's own line, else the deepest frame
    of the traceback in ``source``, else the deepest frame outside the import machinery); '' when unknown."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        name = exc.filename or source
        if name and source and _same_file(name, source):
            name = source  # as the user wrote it
        return f"{name} line {exc.lineno}"
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if not fr.filename.startswith("<frozen")]
    if source is not None:
        mine = [fr for fr in frames if _same_file(fr.filename, source)]
        if mine:
            return f"{source} line {mine[-1].lineno}"
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [fr for fr in frames if os.path.dirname(os.path.abspath(fr.filename)) != here] or frames
    return f"{frames[-1].filename} line {frames[-1].lineno}" if frames else ""


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _code_error(spec: str, doing: str, exc: BaseException, source: str | None) -> ValueError:
    """One line for an exception raised by the user's code: the file and line, the exception, how to see more."""
    where = _location(exc, source)
    if isinstance(exc, SyntaxError):
        what = f"SyntaxError: {exc.msg}"
    else:
        text = str(exc).strip().splitlines()
        what = type(exc).__name__ + (f": {text[0][:160]}" if text else "")
    at = f" at {where}" if where else ""
    return ValueError(f"--model {spec!r}: {doing} failed{at}: {what}; fix the code ({DEBUG_HINT})")


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable ``spec`` names: ``package.module:function`` or ``path/to/file.py:function``.

    Importing runs the user's code: an exception there (a ``SyntaxError``
    included) is a one-line ``ValueError`` naming the file, the line and the
    exception, chained to the original (``--debug`` shows its traceback).
    """
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"--model {spec!r}: give MODULE:FUNCTION, e.g. 'torchvision.models:resnet18' or "
                         "'my_net.py:build' (called without arguments, it returns the network)")  # fmt: skip
    source: str | None = None
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"--model {spec!r}: file {where} does not exist")
        source = str(path)
        modname = f"edgecnn_user_{path.stem}"
        loader = importlib.util.spec_from_file_location(modname, path)
        if loader is None or loader.loader is None:
            raise ValueError(f"--model {spec!r}: {where} cannot be imported as a Python file")
        module = importlib.util.module_from_spec(loader)
        sys.modules[modname] = module  # its classes must pickle into worker processes
        try:
            loader.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(modname, None)
            raise _code_error(spec, f"importing {where}", exc, source) from exc
    else:
        if "" not in sys.path:
            sys.path.insert(0, "")  # the current folder, as `python -m` has it
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
                raise ValueError(f"--model {spec!r}: cannot import {where} ({exc}); install it or give a file path"
                                 ) from None  # fmt: skip
            raise _code_error(spec, f"importing {where}", exc, None) from exc
        except (Exception, SystemExit) as exc:
            raise _code_error(spec, f"importing {where}", exc, None) from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--model {spec!r}: {where} has no function or class {name!r}")
    return fn  # type: ignore[no-any-return]


def build_user_model(spec: str) -> nn.Module:
    """Import ``spec`` (:func:`load_factory`) and call it without arguments; the network it returns.

    An exception in the user's code is a one-line ``ValueError`` with its file
    and line (the original chained, for ``--debug``).
    """
    fn = load_factory(spec)
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__init__", None), "__code__", None)
    source = getattr(code, "co_filename", None)
    try:
        model = fn()
    except (Exception, SystemExit) as exc:
        raise _code_error(spec, f"calling {spec.rpartition(':')[2]}()", exc, source) from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


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
        raise ValueError(f"{weights} is not a PyTorch weights file ({type(exc).__name__}); pass the state_dict of "
                         "the --model network") from None  # fmt: skip
    if isinstance(d, dict):
        for key in ("state_dict", "model"):
            if isinstance(d.get(key), dict):
                d = d[key]
                break
    if not isinstance(d, dict) or not d or not all(isinstance(v, torch.Tensor) for v in d.values()):
        raise ValueError(f"{weights} holds no state_dict (a dict of tensors); save model.state_dict()")
    return d


def user_model(spec: str, weights: str, *, input_shape: tuple[int, int, int], num_classes: int,
               model: nn.Module | None = None) -> nn.Module:  # fmt: skip
    """The network ``spec`` builds (or ``model``, built already by :func:`build_user_model`), with the weights of
    ``weights`` loaded strictly, checked against the data: one image of ``input_shape`` gives ``num_classes``
    outputs."""
    if model is None:
        model = build_user_model(spec)
    try:
        model.load_state_dict(_state_dict(weights))
    except RuntimeError as exc:
        raise ValueError(f"the weights in {weights} do not fit --model {spec}: {str(exc).splitlines()[0]}") from None
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
    except Exception as exc:
        where = _location(exc, getattr(getattr(type(model).forward, "__code__", None), "co_filename", None))
        at = f" (at {where})" if where else ""
        text = (str(exc).strip().splitlines() or [""])[0][:100]
        raise ValueError(f"--model {spec} does not run on the data's images {input_shape}{at}: "
                         f"{type(exc).__name__}: {text}; {DEBUG_HINT}") from exc  # fmt: skip
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"--model {spec} gives {shape} per image, the data has {num_classes} classes: build it "
                         "with that many outputs")  # fmt: skip
    return model
