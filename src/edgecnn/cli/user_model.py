"""``--model MODULE:FN[:key=value,...]`` on the command line, and :func:`load_any`: any edgecnn checkpoint's network.

The reference itself — parsing it, building the network, loading its weights, the
record a checkpoint keeps — is :mod:`edgecnn.model_code` (below training and
compression, which use it); its names are re-exported here for the commands.
:func:`load_any` rebuilds any edgecnn checkpoint: an EdgeNet from its arch
string, a network of the user's code from ``--model`` or else from the recorded
reference (imported and called: it says so), a pruned one (``edgecnn compress
--model``) by replaying its steps (:func:`edgecnn.compress.netadapt.state.load_pruned`).
docs/own_network.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgecnn.checkpoint import Checkpoint, load_checkpoint, load_model
from edgecnn.model_code import (  # noqa: F401  (re-exported for the commands)
    DEBUG_HINT,
    FORM,
    ModelRef,
    RECORD_KEY,
    build_recorded,
    build_ref,
    build_user_model,
    check_importable,
    check_runs,
    is_model_ref,
    load_factory,
    load_into,
    parse_kwargs,
    parse_model_ref,
    recorded_ref,
    user_model,
)

__all__ = ["DEBUG_HINT", "FORM", "Loaded", "MODEL_HELP", "ModelRef", "RECORD_KEY", "add_model_option", "build_recorded", "build_ref", "build_user_model", "check_importable", "check_runs", "infer_in_chans", "is_checkpoint_arg", "is_model_ref", "load_any", "load_factory", "load_into", "model_spec", "notice", "parse_kwargs", "parse_model_ref", "recorded_ref", "user_model"]  # fmt: skip


# ------------------------------------------------------------------------------------- any checkpoint
@dataclass(frozen=True)
class Loaded:
    """A checkpoint's network with its weights, and how it was built."""

    model: nn.Module
    checkpoint: Checkpoint
    ref: ModelRef | None  # the constructor of a network that is no EdgeNet (None: rebuilt from its arch string)
    how: str  # one line for the console: which code built it


def load_any(ckpt_path: str | os.PathLike[str] | Checkpoint, model_spec: str | ModelRef | None = None, *,
             ema: bool = False, log: Callable[[str], None] | None = None, command: str = "compress",
             source: str | None = None) -> Loaded:  # fmt: skip
    """Any edgecnn checkpoint's network with its weights, loaded strictly.

    An EdgeNet is rebuilt from its arch string, unless ``model_spec``
    (``--model``) names the code to build it with. A network that is no
    EdgeNet is built by ``model_spec``, else by the constructor the checkpoint
    records (``config["constructor"]``, or the ``--model`` of ``edgecnn
    compress``), which is imported and called — ``log`` says so. A pruned
    result of ``edgecnn compress --model`` has its steps replayed on the
    built network. The weights are loaded with :func:`load_into` (mismatches
    named key by key).
    """
    say = log or (lambda _: None)
    src = source or (str(ckpt_path) if not isinstance(ckpt_path, Checkpoint) else "the checkpoint")
    ckpt = ckpt_path if isinstance(ckpt_path, Checkpoint) else load_checkpoint(ckpt_path)
    explicit = parse_model_ref(model_spec) if isinstance(model_spec, str) else model_spec
    recorded = None
    if explicit is None or ckpt.arch is None:
        try:
            recorded = recorded_ref(ckpt, src)
        except ValueError:
            if explicit is None:
                raise  # a damaged record matters only where nothing else builds the network
    if explicit is None and ckpt.arch is not None:
        model, ckpt = load_model(ckpt, ema=ema)
        return Loaded(model, ckpt, None, f"{src}: {type(model).__name__} from its arch string")
    if explicit is not None:
        ref = explicit
        over = f" (over the recorded {recorded.text})" if recorded is not None and recorded.text != ref.text else ""
        how = f"{src}: the network built by --model {ref.text}{over}"
        model = build_ref(ref, command=command)
    elif recorded is not None:
        ref = recorded
        how = (f"{src}: the network built by its recorded constructor {ref.text} (that code is imported and "
               "called; --model overrides it)")  # fmt: skip
        say(how)
        model = build_recorded(ref, src, command=command)
    else:
        raise ValueError(f"{src} holds a network that is no EdgeNet and records no constructor; pass --model "
                         f"{FORM} to build it")  # fmt: skip
    if explicit is not None:
        say(how)
    return Loaded(_with_weights(model, ckpt, ckpt_path, ref, ema=ema, src=src), ckpt, ref, how)


def _with_weights(model: nn.Module, ckpt: Checkpoint, path: Any, ref: ModelRef, *, ema: bool,
                  src: str) -> nn.Module:  # fmt: skip
    """``model`` with the checkpoint's weights: its pruning steps replayed first when it records any."""
    pruned = ckpt.config.get("compress") if isinstance(ckpt.config, dict) else None
    if isinstance(pruned, dict) and isinstance(pruned.get("steps"), list) and not isinstance(path, Checkpoint):
        from edgecnn.compress.netadapt.state import load_pruned

        return load_pruned(path, model)
    state = ckpt.state_dict
    if ema:
        if ckpt.ema_state_dict is None:
            raise ValueError("this checkpoint holds no EMA weights; drop --ema or train with --ema DECAY")
        state = ckpt.ema_state_dict
    return load_into(model, state, ref=ref, what=f"the weights in {src}")


# ------------------------------------------------------------------------------------- the CLI option
MODEL_HELP = ("build the network with your own code: MODULE:FN[:key=value,...], e.g. my_net.py:build or "
              "torchvision.models:mobilenet_v3_small:num_classes=10 (docs/own_network.md)")  # fmt: skip


def notice(message: str) -> None:
    """One line on stderr (unwrapped, unlike a rich console's): what the command is doing with the user's code."""
    print(message, file=sys.stderr)


def add_model_option(parser: Any, *, dest: str = "model", also: str = "") -> None:
    """``--model MODULE:FN[:key=value,...]`` on ``parser`` (stored in ``dest``); ``also`` ends the help text."""
    parser.add_argument("--model", dest=dest, default=None, metavar="MODULE:FN[:KW]", help=MODEL_HELP + also)


def is_checkpoint_arg(text: str | None) -> bool:
    """Whether a MODEL argument names a checkpoint file (``*.pt``, ``*.pth``, or an existing file with a suffix)."""
    if text is None:
        return False
    path = Path(text)
    return text.endswith((".pt", ".pth")) or (bool(path.suffix) and path.is_file() and not is_model_ref(text))


def model_spec(positional: str | None, option: str | None) -> str | None:
    """The ``--model`` reference of a command whose MODEL argument may itself be ``MODULE:FN[:kwargs]``.

    ``ValueError`` when both name a network (MODEL may be a checkpoint whose weights go into ``--model``'s network).
    """
    ref = positional if positional is not None and is_model_ref(positional) else None
    if option is not None and positional is not None and not is_checkpoint_arg(positional):
        raise ValueError(f"MODEL {positional!r} and --model {option!r} both name a network; give one (or MODEL a "
                         "checkpoint, whose weights load into --model's network)")  # fmt: skip
    return option or ref


def infer_in_chans(model: nn.Module, default: int = 3) -> int:
    """The input channels of ``model``'s first convolution (``default`` without one)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else default
