"""The arch format: a compact, human-readable network string <-> typed specs.

A network is a sequence of blocks separated by spaces; a block is a kind
followed by ``_``-separated tokens, in the spirit of timm's
``_efficientnet_builder`` (``ir_r2_k3_s2_e6_c24_se0.25``)::

    conv_k3_s2_c16_hswish ir_k3_m16_c16 ir_k3_s2_m64_c24_relu ... gap fc_c1280_hswish dropout_p0.2 fc

Tokens are ``<key><number>`` (``k3``, ``s2``, ``e6``, ``m72``, ``c24``,
``se0.25``), a bare activation name (``relu6``, ``hswish``, see
:data:`edgecnn.activations.ACTIVATIONS`) or a flag (``pre``, ``noskip``, ...).
The full grammar, one row per kind, is :data:`KINDS`, read from each kind's
record (:mod:`edgecnn.kinds`: one file per kind); the README documents it.

``m`` gives a block's inner width explicitly (``m72``) instead of the
expansion ratio ``e`` — MobileNetV3's table lists widths, not ratios, and a
pruned network has uneven widths, so both reference and pruned networks are
expressible. A final ``fc`` without ``c`` is the classifier (``num_classes``
outputs, chosen when building).

Parsing fills every default, so two strings that mean the same network give
equal specs; :meth:`ArchSpec.format` writes the canonical string (defaults
omitted, tokens in :data:`TOKEN_ORDER`), and ``format(parse(s)) == s`` for
every canonical ``s``. Parsing accepts tokens in any order.

This module only describes networks; :mod:`edgecnn.build` turns a spec into
an ``nn.Module`` and :func:`edgecnn.plan.resolve` into per-layer shapes.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from edgecnn.activations import ACTIVATIONS
from edgecnn.kinds import BLOCK_KINDS, KindInfo

KINDS: dict[str, KindInfo] = {name: k.grammar for name, k in BLOCK_KINDS.items()}
"""Block kind -> its grammar (keys, defaults, skip values): read from the kind's record (:mod:`edgecnn.kinds`)."""

INT_KEYS = ("r", "k", "s", "d", "g", "m", "c")
FLOAT_KEYS = ("e", "se", "p")
TOKEN_ORDER = ("r", "k", "s", "d", "e", "m", "c", "g", "se", "gate", "p", "act", "pre", "skip", "bn", "bias")
"""Canonical order of tokens within a block (timm's order for the shared keys)."""

# flag token -> (field, value). A flag sets a non-default value of a field.
FLAGS: dict[str, tuple[str, Any]] = {
    "hsgate": ("gate", "hsigmoid"),
    "pre": ("pre", True),
    "noskip": ("skip", "none"),
    "padskip": ("skip", "pad"),
    "idskip": ("skip", "id"),
    "nobn": ("bn", False),
    "bn": ("bn", True),
    "bias": ("bias", True),
}
_KEY_RE = re.compile(r"([a-z]+?)([-+.\d].*|nan|inf|infinity)\Z")


def _fmt_float(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class BlockSpec:
    """One block of an arch string; ``None`` fields take the kind's default (see :data:`KINDS`)."""

    kind: str  # block kind: a key of KINDS
    r: int | None = None  # repeats; the first repeat has stride s, the others stride 1
    k: int | None = None  # kernel size
    s: int | None = None  # stride
    d: int | None = None  # dilation (ghost: the cheap depthwise kernel, the paper's d)
    e: float | None = None  # expansion ratio (ir, er: of the input width; basic/bottleneck: of c; ghost: c / m)
    m: int | None = None  # explicit inner width (instead of e); pruned networks use it
    c: int | None = None  # output channels (fc: features; absent on the classifier)
    g: int | None = None  # groups of a plain conv
    se: float | None = None  # squeeze-and-excitation ratio of the inner width, 0 = no SE
    gate: str | None = None  # SE gate: "sigmoid" or "hsigmoid" (token `hsgate`)
    p: float | None = None  # dropout probability
    act: str | None = None  # activation name
    pre: bool | None = None  # pre-activation order (BN → act → conv)
    skip: str | None = None  # residual: "auto" (when shapes allow), "none", "pad" (zero-pad), "id" (identity, required)
    bn: bool | None = None  # batch norm after the conv / linear
    bias: bool | None = None  # conv bias

    def __post_init__(self) -> None:
        info = KINDS.get(self.kind)
        if info is None:
            raise ValueError(f"unknown block kind {self.kind!r}; valid: {', '.join(KINDS)}")
        for f in fields(self):
            if f.name == "kind":
                continue
            value = getattr(self, f.name)
            if f.name not in info.keys:
                if value is not None:
                    raise ValueError(
                        f"{self.kind!r} blocks take no {_token_name(f.name)!r}; "
                        f"valid: {', '.join(_token_name(k) for k in info.keys) or 'nothing'}"
                    )
                continue
            if value is None:
                if f.name in info.defaults:
                    object.__setattr__(self, f.name, info.defaults[f.name])
                elif f.name in info.required:
                    raise ValueError(f"{self.kind!r} block needs {_token_name(f.name)!r} (e.g. {_example(f.name)})")
        if self.m is not None and "e" in info.keys:
            object.__setattr__(self, "e", None)  # an explicit width wins over the default ratio
        self._validate()

    def _validate(self) -> None:
        for key in INT_KEYS:
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        for key in ("e",):
            v = self.e
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"e (expansion) must be a positive number, got {v!r}")
        if self.se is not None and not (math.isfinite(self.se) and 0 <= self.se <= 1):
            raise ValueError(f"se (SE ratio) must be in (0, 1], got {self.se!r}")
        if self.p is not None and not (math.isfinite(self.p) and 0 <= self.p < 1):
            raise ValueError(f"p (dropout probability) must be in [0, 1), got {self.p!r}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.gate is not None:
            if self.gate not in ("sigmoid", "hsigmoid"):
                raise ValueError(f"unknown SE gate {self.gate!r}; valid: sigmoid, hsigmoid")
            if self.gate != "sigmoid" and not self.se:
                raise ValueError("`hsgate` needs an SE ratio (e.g. se0.25)")
        skips = KINDS[self.kind].skips
        if self.skip is not None and self.skip not in skips:
            raise ValueError(f"{self.kind!r} blocks take skip in {skips or None}, got {self.skip!r}")

    def tokens(self) -> list[str]:
        """The canonical tokens of this block, kind first, defaults omitted."""
        info = KINDS[self.kind]
        out = [self.kind]
        for key in TOKEN_ORDER:
            if key not in info.keys:
                continue
            value = getattr(self, key)
            if value is None or value == info.defaults.get(key, None):
                continue
            if key == "e" and self.m is not None:
                continue
            if key in INT_KEYS:
                out.append(f"{key}{value}")
            elif key in FLOAT_KEYS:
                out.append(f"{key}{_fmt_float(value)}")
            elif key == "act":
                out.append(value)
            else:  # a flag field
                out.append(next(t for t, (f, v) in FLAGS.items() if f == key and v == value))
        return out

    def format(self) -> str:
        """Canonical string of this block, e.g. ``ir_r2_k3_s2_c24``."""
        return "_".join(self.tokens())

    def with_(self, **changes: Any) -> BlockSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _token_name(field_name: str, kind: str | None = None) -> str:
    flags = [t for t, (f, v) in FLAGS.items() if f == field_name and _flag_fits(kind, f, v)]
    if field_name == "act":
        return "activation"
    return "/".join(flags) if flags else field_name


def _example(key: str) -> str:
    return {"c": "c32", "p": "p0.2"}.get(key, f"{key}1")


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: its blocks in order. ``str(spec)`` is the canonical arch string."""

    blocks: tuple[BlockSpec, ...]  # the network, input to output

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ValueError("an arch needs at least one block (e.g. 'conv_c16 gap fc')")
        object.__setattr__(self, "blocks", tuple(self.blocks))

    @classmethod
    def parse(cls, text: str) -> ArchSpec:
        """Parse an arch string; errors quote the offending token and its character position."""
        return parse(text)

    def format(self) -> str:
        """The canonical arch string."""
        return " ".join(b.format() for b in self.blocks)

    def __str__(self) -> str:
        return self.format()

    def expand(self) -> ArchSpec:
        """The same network with every repeat written out (r=1 everywhere, later repeats at stride 1)."""
        out: list[BlockSpec] = []
        for b in self.blocks:
            if b.r is None:  # kinds without repeats
                out.append(b)
                continue
            for i in range(b.r):
                out.append(replace(b, r=1, s=b.s if i == 0 else 1))
        return ArchSpec(tuple(out))


def parse_block(text: str, *, offset: int = 0, index: int = 0) -> BlockSpec:
    """Parse one block string such as ``ir_k5_s2_e6_c40_se0.25``.

    Cached by text: specs are immutable, and search/NetAdapt parse the same blocks
    thousands of times. Errors are not cached; they are raised again with the
    block's position in the whole string.
    """
    try:
        return _parse_block_cached(text)
    except ValueError:
        return _parse_block(text, offset=offset, index=index)


@functools.lru_cache(maxsize=8192)
def _parse_block_cached(text: str) -> BlockSpec:
    return _parse_block(text)


def _parse_block(text: str, *, offset: int = 0, index: int = 0) -> BlockSpec:
    if not text:
        raise ValueError(f"empty block at char {offset}")
    parts = text.split("_")
    where = f"in block {index} {text!r} at char {offset}"
    kind = parts[0]
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r} {where}; valid kinds: {', '.join(KINDS)}")
    info = KINDS[kind]
    values: dict[str, Any] = {}
    pos = offset + len(kind) + 1
    for tok in parts[1:]:
        here = f"token {tok!r} at char {pos} ({where.removeprefix('in ')})"
        field_name, value = _parse_token(tok, kind, info, here)
        if field_name in values:
            raise ValueError(f"duplicate {_token_name(field_name)!r}: {here}")
        values[field_name] = value
        pos += len(tok) + 1
    if "e" in values and "m" in values:
        raise ValueError(f"give the expansion e or the inner width m, not both, {where}")
    try:
        return BlockSpec(kind, **values)
    except ValueError as exc:
        raise ValueError(f"{exc} {where}") from None


def _flag_fits(kind: str | None, field_name: str, value: Any) -> bool:
    """Whether a flag setting ``field_name`` to ``value`` is valid for ``kind`` (None: for some kind)."""
    return kind is None or field_name != "skip" or value in KINDS[kind].skips


def _valid_tokens(info: KindInfo, kind: str) -> str:
    return ", ".join(sorted({t for k in info.keys for t in _token_name(k, kind).split("/")})) or "no tokens"


def _parse_token(tok: str, kind: str, info: KindInfo, here: str) -> tuple[str, Any]:
    if not tok:
        raise ValueError("empty token (double '_') " + here.removeprefix("token '' "))
    if tok in FLAGS:
        field_name, value = FLAGS[tok]
        if field_name not in info.keys or not _flag_fits(kind, field_name, value):
            raise ValueError(f"{kind!r} takes no flag {tok!r}: {here}; valid: {_valid_tokens(info, kind)}")
        return field_name, value
    if tok in ACTIVATIONS:
        if "act" not in info.keys:
            raise ValueError(f"{kind!r} takes no activation: {here}")
        return "act", tok
    match = _KEY_RE.match(tok)
    key, raw = (match.group(1), match.group(2)) if match else ("", "")
    if key not in INT_KEYS + FLOAT_KEYS or key not in info.keys or not raw:
        hint = f"; activations: {', '.join(ACTIVATIONS)}" if not raw else ""
        raise ValueError(f"unknown key {key or tok!r} in {here}; valid for {kind!r}: {_valid_tokens(info, kind)}{hint}")
    if key in INT_KEYS:
        if not raw.isdigit():
            raise ValueError(f"{key} needs a positive integer, got {raw!r}: {here}")
        value: Any = int(raw)
        if value < 1:
            raise ValueError(f"{key} must be positive, got {raw!r}: {here}")
        return key, value
    try:
        fvalue = float(raw)
    except ValueError:
        raise ValueError(f"{key} needs a number, got {raw!r}: {here}") from None
    if not math.isfinite(fvalue) or fvalue < 0 or (key in ("e", "se") and fvalue == 0):
        raise ValueError(f"{key} must be a positive finite number, got {raw!r}: {here}")
    return key, fvalue


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> ArchSpec:
    """Parse a whole arch string (blocks separated by whitespace); cached, specs are immutable."""
    if not isinstance(text, str):
        raise ValueError(f"an arch string is needed, got {type(text).__name__}")
    blocks = []
    for i, m in enumerate(re.finditer(r"\S+", text)):
        blocks.append(parse_block(m.group(0), offset=m.start(), index=i))
    if not blocks:
        raise ValueError("empty arch string; example: 'conv_k3_s2_c16 ir_c24 gap fc'")
    return ArchSpec(tuple(blocks))


def format_arch(spec: ArchSpec) -> str:
    """The canonical arch string of ``spec`` (the inverse of :func:`parse`)."""
    return spec.format()


def as_spec(arch: str | ArchSpec) -> ArchSpec:
    """Accept an arch string or a spec."""
    if isinstance(arch, ArchSpec):
        return arch
    return parse(arch)
