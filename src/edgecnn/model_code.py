"""A network of the user's own code: the ``MODULE:FN[:key=value,...]`` reference, building it, loading its weights.

An edgecnn checkpoint rebuilds an EdgeNet from its arch string; a network
defined in code (a torchvision MobileNetV3, a model of one's own) cannot be
rebuilt from a file without running code, and loading a checkpoint never
unpickles code (``weights_only=True``). So the user names the code —
``pkg.models:resnet18`` or ``my_net.py:build`` (a file path, imported from that
file) — with keyword arguments after a second colon, parsed as Python literals
(``torchvision.models:mobilenet_v3_small:num_classes=10``,
``my_net.py:build:width_mult=0.5,num_classes=10``; :func:`parse_model_ref`).

A checkpoint of such a network records that reference as plain data,
``config["constructor"] = {"ref": "my_net.py:build", "kwargs": {...}}``
(:meth:`ModelRef.record`); :func:`build_recorded` rebuilds it (imported and
called, references into the standard library and code loaders refused). The
weights load strictly (:func:`load_into`); a mismatch names the missing,
unexpected and mis-shaped keys. :mod:`edgecnn.cli.user_model` adds the
command-line side and :func:`~edgecnn.cli.user_model.load_any` (any checkpoint,
pruned results of ``edgecnn compress`` included). This module sits below
training and compression, which use it; docs/own_network.md.
"""


from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import keyword
import os
import pickle
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.checkpoint import Checkpoint, load_weights

DEBUG_HINT = "`edgecnn --debug compress ...` shows the traceback"
FORM = ("MODULE:FUNCTION[:key=value,...], e.g. 'torchvision.models:mobilenet_v3_small:num_classes=10' or "
        "'my_net.py:build:width_mult=0.5,num_classes=10'")  # fmt: skip
RECORD_KEY = "constructor"  # where a checkpoint's config keeps the reference that rebuilds its network
_REF = re.compile(r"(?P<module>.+?\.py|[A-Za-z_][\w.]*):(?P<fn>[A-Za-z_]\w*)(?::(?P<kw>.*))?", re.S)
_WORDS = {"true": True, "false": False, "none": None, "null": None}  # CLI spellings of the Python constants
_MAX_RECORD = 10_000  # characters of a recorded reference (a checkpoint's field, bounded before use)
# where a recorded reference may not point: code and file loaders (a checkpoint could name them with arguments)
_REFUSED = ("torch.hub", "torch.serialization", "torch.package", "torch.jit", "torch.utils.cpp_extension",
            "torch.onnx", "torch.export", "torch.distributed", "torch._dynamo", "numpy", "pandas", "joblib",
            "dill", "cloudpickle", "IPython", "pip", "setuptools", "edgecnn")  # fmt: skip


def _hint(command: str) -> str:
    return f"`edgecnn --debug {command} ...` shows the traceback"


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


def _code_error(spec: str, doing: str, exc: BaseException, source: str | None,
                command: str = "compress") -> ValueError:  # fmt: skip
    """One line for an exception raised by the user's code: the file and line, the exception, how to see more."""
    where = _location(exc, source)
    if isinstance(exc, SyntaxError):
        what = f"SyntaxError: {exc.msg}"
    else:
        text = str(exc).strip().splitlines()
        what = type(exc).__name__ + (f": {text[0][:160]}" if text else "")
    at = f" at {where}" if where else ""
    return ValueError(f"--model {spec!r}: {doing} failed{at}: {what}; fix the code ({_hint(command)})")


# ------------------------------------------------------------------------------------- the reference
@dataclass(frozen=True)
class ModelRef:
    """``MODULE:FUNCTION`` and the keyword arguments it is called with: what builds a network of the user's code."""

    target: str  # "pkg.module:fn" or "path/to/file.py:fn", as the user wrote it
    kwargs: dict[str, Any] = field(default_factory=dict)  # plain literals (numbers, strings, bools, None, lists)
    file: str | None = None  # a file target's absolute path when it was recorded (found from another folder)

    @property
    def text(self) -> str:
        """The reference as ``--model`` takes it: ``my_net.py:build:num_classes=10,act='relu'``."""
        kw = ",".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.target}:{kw}" if kw else self.target

    @property
    def name(self) -> str:
        """The function or class name (after the colon)."""
        return self.target.rpartition(":")[2]

    def with_kwargs(self, **kwargs: Any) -> ModelRef:
        """The same target with ``kwargs`` added or replaced."""
        return ModelRef(self.target, {**self.kwargs, **kwargs}, self.file)

    def record(self) -> dict[str, Any]:
        """Plain data for a checkpoint's ``config["constructor"]`` (never pickled code)."""
        rec: dict[str, Any] = {"ref": self.target, "kwargs": dict(self.kwargs)}
        module = self.target.rpartition(":")[0]
        if self.file is not None:  # recorded before: where it was found then
            rec["file"] = self.file
        elif module.endswith(".py"):
            rec["file"] = str(Path(module).resolve())
        return rec

    @classmethod
    def from_record(cls, rec: Any, source: str) -> ModelRef:
        """The reference a checkpoint's ``config["constructor"]`` holds; ``ValueError`` naming ``source`` if damaged."""
        bad = f"{source}: field 'config.{RECORD_KEY}' must be {{'ref': 'MODULE:FUNCTION', 'kwargs': {{...}}}}"
        if not isinstance(rec, dict) or not isinstance(rec.get("ref"), str) or len(repr(rec)) > _MAX_RECORD:
            raise ValueError(f"{bad}; the file is damaged — pass --model {FORM}")
        kwargs = rec.get("kwargs") or {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
            raise ValueError(f"{bad} (kwargs: a dict of names); the file is damaged — pass --model MODULE:FUNCTION")
        try:
            ref = parse_model_ref(rec["ref"])
            for k, v in kwargs.items():
                _check_plain(v, k, rec["ref"])
        except ValueError as exc:
            raise ValueError(f"{source}: field 'config.{RECORD_KEY}' is damaged ({exc})") from None
        file = rec.get("file")
        return cls(ref.target, {**ref.kwargs, **kwargs}, file if isinstance(file, str) else None)


def is_model_ref(text: str) -> bool:
    """Whether a MODEL argument is a ``MODULE:FUNCTION[:kwargs]`` reference rather than a file, zoo name or arch."""
    if not _REF.fullmatch(text.strip()):
        return False
    try:
        return not Path(text).exists()
    except OSError:  # a name too long for a path
        return True


def parse_model_ref(spec: str) -> ModelRef:
    """``MODULE:FUNCTION[:key=value,...]`` as a :class:`ModelRef`; the values are Python literals.

    ``torchvision.models:mobilenet_v3_small:num_classes=10``,
    ``my_net.py:build:width_mult=0.5,num_classes=10,act=relu``: numbers,
    strings (quoted, or a bare word), ``True``/``False``/``None`` (also
    lower-case), lists, tuples and dicts of those. A ``ValueError`` names the
    bad part and shows the right form.
    """
    m = _REF.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(f"--model {spec!r}: give {FORM} (the function is called with those keyword arguments "
                         "and returns the network)")  # fmt: skip
    target = f"{m['module']}:{m['fn']}"
    if m["kw"] is None:
        return ModelRef(target)
    return ModelRef(target, parse_kwargs(m["kw"], spec))


def parse_kwargs(text: str, spec: str) -> dict[str, Any]:
    """``width_mult=0.5,num_classes=10`` as a dict; each value a literal (:func:`ast.literal_eval`) or a bare word."""
    if not text.strip():
        raise ValueError(f"--model {spec!r}: nothing after the second ':'; give {FORM}")
    out: dict[str, Any] = {}
    for item in _split_items(text, spec):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key.isidentifier() or keyword.iskeyword(key) or not value:
            raise ValueError(f"--model {spec!r}: {item.strip()!r} is not key=value (a parameter name = a Python "
                             f"literal); give {FORM}")  # fmt: skip
        if key in out:
            raise ValueError(f"--model {spec!r}: {key!r} is given twice; give each keyword once, {FORM}")
        out[key] = _literal(value, key, spec)
    return out


def _split_items(text: str, spec: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes; ``ValueError`` for an unclosed one."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"--model {spec!r}: unmatched {ch!r} in {text!r}; give {FORM}")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError(f"--model {spec!r}: unclosed {'quote' if quote else 'bracket'} in {text!r}; give {FORM}")
    return [*items, text[start:]]


def _literal(value: str, key: str, spec: str) -> Any:
    """A Python literal (``10``, ``0.5``, ``'a'``, ``(1, 2)``, ``None``), else the bare word as a string."""
    try:
        v = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if value.lower() in _WORDS:
            return _WORDS[value.lower()]
        if value[0] in "'\"([{" or not re.fullmatch(r"[\w.+\-/]+", value):
            raise ValueError(f"--model {spec!r}: the value of {key!r}, {value!r}, is not a Python literal "
                             f"(a number, 'a string', True/False/None, a list); give {FORM}") from None
        return value
    _check_plain(v, key, spec)
    return v


def _check_plain(v: Any, key: str, spec: str, depth: int = 0) -> None:
    """``ValueError`` unless ``v`` is plain data a checkpoint can hold: None, bool, int, float, str, lists of them."""
    if isinstance(v, (list, tuple)) and depth < 8:
        for x in v:
            _check_plain(x, key, spec, depth + 1)
    elif isinstance(v, dict) and depth < 8:
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"--model {spec!r}: the value of {key!r} has a key that is no string ({k!r})")
            _check_plain(x, key, spec, depth + 1)
    elif v is not None and not isinstance(v, (bool, int, float, str)):
        raise ValueError(f"--model {spec!r}: the value of {key!r} is a {type(v).__name__}; keyword values are "
                         "numbers, strings, True/False/None or lists, tuples and dicts of them")  # fmt: skip


# ------------------------------------------------------------------------------------- importing it
def _import_file(where: str, spec: str, command: str) -> Any:
    """The module of the Python file ``where`` (kept in ``sys.modules``: its classes must pickle to workers)."""
    path = Path(where)
    if not path.is_file():
        raise ValueError(f"--model {spec!r}: file {where} does not exist")
    modname = f"edgecnn_user_{path.stem}"
    loader = importlib.util.spec_from_file_location(modname, path)
    if loader is None or loader.loader is None:
        raise ValueError(f"--model {spec!r}: {where} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(loader)
    sys.modules[modname] = module
    try:
        loader.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(modname, None)
        raise _code_error(spec, f"importing {where}", exc, str(path), command) from exc
    return module


def _import_module(where: str, spec: str, command: str) -> Any:
    """The module ``where`` (a dotted name), the current folder on the path as ``python -m`` has it."""
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
            raise ValueError(f"--model {spec!r}: cannot import {where} ({exc}); install it or give a file path"
                             ) from None  # fmt: skip
        raise _code_error(spec, f"importing {where}", exc, None, command) from exc
    except (Exception, SystemExit) as exc:
        raise _code_error(spec, f"importing {where}", exc, None, command) from exc


def _target_callable(ref: ModelRef, command: str = "compress") -> Callable[..., Any]:
    """The function or class ``ref.target`` names, imported (which runs the user's module)."""
    where, _, name = ref.target.rpartition(":")
    if where.endswith(".py"):
        file = where if Path(where).is_file() or ref.file is None else ref.file
        module = _import_file(file, ref.text, command)
    else:
        module = _import_module(where, ref.text, command)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--model {ref.text!r}: {where} has no function or class {name!r}")
    return fn  # type: ignore[no-any-return]


def check_importable(ref: ModelRef, command: str = "compress") -> None:
    """Import what ``ref`` names (running the user's module), so a broken import is refused before any work."""
    _target_callable(ref, command)


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable ``spec`` names: ``package.module:function`` or ``path/to/file.py:function``, with the keyword
    arguments of ``spec`` bound (``my_net.py:build:num_classes=10``).

    Importing runs the user's code: an exception there (a ``SyntaxError``
    included) is a one-line ``ValueError`` naming the file, the line and the
    exception, chained to the original (``--debug`` shows its traceback).
    """
    ref = parse_model_ref(spec)
    fn = _target_callable(ref)
    return partial(fn, **ref.kwargs) if ref.kwargs else fn


def _source_file(fn: Callable[..., Any]) -> str | None:
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__init__", None), "__code__", None)
    return getattr(code, "co_filename", None)


def _check_kwargs(fn: Callable[..., Any], ref: ModelRef) -> None:
    """``ValueError`` when ``fn`` does not take ``ref``'s keyword arguments (before anything is called)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: the call itself will tell
        return
    try:
        sig.bind(**ref.kwargs)
    except TypeError as exc:
        raise ValueError(f"--model {ref.text!r}: {ref.name}{sig} does not take these arguments ({exc}); "
                         f"give its keyword parameters after a second ':', {FORM}") from None  # fmt: skip


def build_ref(ref: ModelRef | str, *, command: str = "compress") -> nn.Module:
    """Import ``ref``'s target and call it with its keyword arguments; the ``nn.Module`` it returns.

    An exception in the user's code is a one-line ``ValueError`` with its file
    and line (the original chained, for ``--debug``).
    """
    ref = parse_model_ref(ref) if isinstance(ref, str) else ref
    return _call(_target_callable(ref, command), ref, command)


def _call(fn: Callable[..., Any], ref: ModelRef, command: str) -> nn.Module:
    """``fn(**ref.kwargs)``, checked to take them first and to return an ``nn.Module``."""
    _check_kwargs(fn, ref)
    try:
        model = fn(**ref.kwargs)
    except (Exception, SystemExit) as exc:
        raise _code_error(ref.text, f"calling {ref.name}()", exc, _source_file(fn), command) from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {ref.text!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_user_model(spec: str) -> nn.Module:
    """Import ``spec`` (``MODULE:FUNCTION[:key=value,...]``, :func:`parse_model_ref`) and call it; the network."""
    return build_ref(spec)


# ------------------------------------------------------------------------------------- recorded references
def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names or name.split(".")[0] == "builtins"


def _refused(name: str) -> bool:
    """Whether module ``name`` is in the standard library or under one of :data:`_REFUSED`."""
    return _stdlib(name) or any(name == p or name.startswith(p + ".") for p in _REFUSED)


def _check_recorded(ref: ModelRef, source: str) -> None:
    """Refuse, before importing anything, a recorded reference into the standard library or to a stdlib file."""
    where = ref.target.rpartition(":")[0]
    if where.endswith(".py"):
        stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
        file = os.path.realpath(where if Path(where).is_file() or ref.file is None else ref.file)
        bad = file.startswith(stdlib + os.sep) and "site-packages" not in file
    else:
        bad = _refused(where)
    if bad:
        raise ValueError(f"{source} records the constructor {ref.text!r}, which is no network builder edgecnn "
                         f"will call from a checkpoint; pass --model {FORM}")  # fmt: skip


def _check_recorded_callable(fn: Any, ref: ModelRef, source: str) -> None:
    """A recorded reference must name a Python function or an ``nn.Module`` class outside the refused modules."""
    ok = inspect.isclass(fn) and issubclass(fn, nn.Module)
    if not ok and inspect.isfunction(fn):
        home = getattr(fn, "__module__", "") or ""
        ok = not _refused(home)
    if not ok:
        raise ValueError(f"{source} records the constructor {ref.text!r}, which names no network builder (a "
                         f"Python function or nn.Module class of your code); pass --model {FORM}")  # fmt: skip


def build_recorded(ref: ModelRef, source: str, *, command: str = "compress") -> nn.Module:
    """The network of a checkpoint's recorded reference: checked, imported, called; one-line errors naming it."""
    _check_recorded(ref, source)
    try:
        fn = _target_callable(ref, command)
    except ValueError as exc:
        raise ValueError(f"{source} records the constructor {ref.text!r}, which cannot be imported here "
                         f"({str(exc).removeprefix(f'--model {ref.text!r}: ')}); pass --model MODULE:FUNCTION"
                         "[:key=value,...] to build the network") from None  # fmt: skip
    _check_recorded_callable(fn, ref, source)
    return _call(fn, ref, command)


def recorded_ref(ckpt: Checkpoint, source: str) -> ModelRef | None:
    """The reference a checkpoint records for its network: ``config["constructor"]``, else the ``--model`` that
    ``edgecnn compress`` noted in ``config["compress"]["source"]``; None when it records none."""
    config = ckpt.config if isinstance(ckpt.config, dict) else {}
    if RECORD_KEY in config:
        return ModelRef.from_record(config[RECORD_KEY], source)
    rec = config.get("compress")
    if isinstance(rec, dict) and isinstance(rec.get("source"), str) and len(rec["source"]) < _MAX_RECORD:
        try:
            return parse_model_ref(rec["source"])
        except ValueError:
            raise ValueError(f"{source}: field 'config.compress.source' is no MODULE:FUNCTION reference; pass "
                             f"--model {FORM}") from None  # fmt: skip
    return None


# ------------------------------------------------------------------------------------- loading weights
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


def _classes_hint(ref: ModelRef | None) -> Callable[[int], str]:
    """The advice for weights trained for ``n`` classes (:func:`edgecnn.checkpoint.load_weights`)."""
    if ref is None:
        return lambda n: f"build it with the checkpoint's num_classes, e.g. MODULE:FUNCTION:num_classes={n}"
    return lambda n: f"build it with the checkpoint's num_classes, e.g. {ref.with_kwargs(num_classes=n).text}"


def load_into(model: nn.Module, weights: str | dict[str, torch.Tensor], *, ref: ModelRef | None = None,
              what: str | None = None) -> nn.Module:  # fmt: skip
    """Load ``weights`` (a file: a state_dict, a dict holding one, an edgecnn checkpoint; or the dict) strictly.

    A mismatch is one line naming the missing, unexpected and mis-shaped keys,
    with the ``num_classes=N`` to build the network with when only the
    classifier differs.
    """
    state = weights if isinstance(weights, dict) else _state_dict(weights)
    name = what or (f"the weights in {weights}" if isinstance(weights, str) else "the weights")
    network = f"--model {ref.text}" if ref is not None else "the network"
    return load_weights(model, state, what=name, network=network, hint=_classes_hint(ref))


def check_runs(model: nn.Module, spec: str, input_shape: tuple[int, ...], num_classes: int | None,
               command: str = "compress") -> None:  # fmt: skip
    """``ValueError`` unless one image of ``input_shape`` runs through ``model`` and gives ``num_classes`` scores."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_shape))
    except Exception as exc:
        where = _location(exc, getattr(getattr(type(model).forward, "__code__", None), "co_filename", None))
        at = f" (at {where})" if where else ""
        text = (str(exc).strip().splitlines() or [""])[0][:100]
        raise ValueError(f"--model {spec} does not run on the data's images {tuple(input_shape)}{at}: "
                         f"{type(exc).__name__}: {text}; {_hint(command)}") from exc  # fmt: skip
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or (num_classes is not None and out.shape[1] != num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"--model {spec} gives {shape} per image, the data has {num_classes} classes: build it "
                         f"with that many outputs, e.g. {_with_classes(spec, num_classes)}")  # fmt: skip


def _with_classes(spec: str, n: int | None) -> str:
    try:
        return parse_model_ref(spec).with_kwargs(num_classes=n).text
    except ValueError:
        return f"MODULE:FUNCTION:num_classes={n}"


def user_model(spec: str, weights: str, *, input_shape: tuple[int, int, int], num_classes: int,
               model: nn.Module | None = None) -> nn.Module:  # fmt: skip
    """The network ``spec`` builds (or ``model``, built already by :func:`build_user_model`), with the weights of
    ``weights`` loaded strictly, checked against the data: one image of ``input_shape`` gives ``num_classes``
    outputs."""
    if model is None:
        model = build_user_model(spec)
    load_into(model, weights, ref=parse_model_ref(spec))
    model.eval()
    check_runs(model, spec, input_shape, num_classes)
    return model
