"""Search spaces in the arch format: per stage kernel, expansion, SE, activation, width and depth.

MnasNet (Tan et al. 2019, §4.1, "factorized hierarchical search space")
splits the network into stages and searches one configuration per stage,
shared by the stage's layers: kernel size, expansion ratio, squeeze-and-
excitation on/off, number of layers and output width. MobileNetV3 (Howard
et al. 2019, §4) searches the same space and adds the activation (ReLU or
hard-swish). A candidate is a :data:`Genome` — one :class:`StageChoice` per
stage — and :meth:`SearchSpace.arch` writes it as an arch string, so a
candidate is built, costed, timed and reported like any other network;
:meth:`SearchSpace.decode` reads such a string back.

Built-in spaces (:data:`SPACES`):

* ``mbv3-224`` (:data:`MOBILENET_V3_SPACE`) — MobileNetV3-Large's stem and
  head (Table 1: a 3×3 stride-2 conv with 16 channels and one 16-channel
  inverted residual; a 1×1 conv to 6× the last width, pooling, a 1280-wide
  hidden layer) and 5 stages at its strides (output stride 32), widths one
  step of 8/16 around the paper's.
* ``mbv3-32`` (:data:`MBV3_32_SPACE`) — for 32×32 inputs (CIFAR, digits): a
  stride-1 stem, 4 stages with strides 2, 2, 1, 2 (output 4×4), widths near
  MobileNetV3-Small's and a 1024-wide hidden layer.

A user's own space is a JSON file (YAML too when PyYAML is installed; it is
not a dependency of edgecnn), validated by :func:`space_from_dict` with
errors that name the field (``stages[2].kernels: ...``)::

    {"name": "tiny", "input_size": 32, "stem": "conv_k3_c16_hswish",
     "head_mult": 6, "hidden": 512,
     "stages": [{"stride": 2, "widths": [24, 32], "depths": [1, 2],
                 "kernels": [3, 5], "expansions": [3, 6],
                 "se": [false, true], "acts": ["relu", "hswish"]}]}

A space file is read like every other document edgecnn reads back: its size
is bounded (``EDGECNN_MAX_FILE_MB``) before it is read and its nesting before
it is parsed, and every field is bounded (:data:`SPACE_BOUNDS`: kernels odd in
[1, 31], expansions in (0, 32], depths in [1, 64], widths and ``hidden`` in
[1, ``EDGECNN_MAX_CHANNELS``], strides in [1, 8], at most 64 values per choice
and 64 stages). Both the smallest and the **largest** network of the space are
resolved under :mod:`edgecnn.limits` when it is loaded, so a space cannot ask
for a network too large to build (``kernels: [3, 9999]`` is refused here; the
memory its supernet needs is estimated before a search starts,
:func:`edgecnn.search.job_checks.check_job`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from edgecnn.activations import ACTIVATIONS
from edgecnn.arch import ArchSpec, parse
from edgecnn.kinds import BLOCK_KINDS, kind_of
from edgecnn.limits import MAX_CHANNELS, MAX_FILE_MB, MAX_INPUT

SE_TOKENS = "_se0.25_hsgate"
"""SE as MobileNetV3 uses it: a quarter of the expanded width, hard-sigmoid gate."""
STAGE_KIND = "ir"
"""The block kind of a stage unless the space says otherwise (``block``; any kind whose record is ``searchable``)."""


@dataclass(frozen=True)
class StageChoice:
    """One stage's drawn configuration, shared by all its layers."""

    depth: int  # number of layers
    kernel: int  # depthwise kernel size
    expansion: float  # inner width / input width
    se: bool  # squeeze-and-excitation on
    act: str  # activation
    width: int  # output channels

    def block(self, stride: int, kind: str = STAGE_KIND) -> str:
        """The stage as one arch block of ``kind``, e.g. ``ir_r3_k5_s2_e4_c40_se0.25_hsgate_hswish``."""
        se = SE_TOKENS if self.se else ""
        return f"{kind}_r{self.depth}_k{self.kernel}_s{stride}_e{self.expansion:g}_c{self.width}{se}_{self.act}"


Genome = tuple[StageChoice, ...]
"""A candidate network: one choice per stage, input to output."""

GENES: tuple[str, ...] = ("depth", "kernel", "expansion", "se", "act", "width")
_OPTIONS = {"depth": "depths", "kernel": "kernels", "expansion": "expansions", "se": "se", "act": "acts",
            "width": "widths"}  # fmt: skip


# ---- bounds of a space's fields ------------------------------------------------------------------------
SPACE_BOUNDS: dict[str, tuple[float, float]] = {
    "stride": (1, 8), "kernels": (1, 31), "expansions": (0, 32), "depths": (1, 64), "head_mult": (1, 64),
}  # fmt: skip
"""Sane ranges of the fields of a space (``expansions`` excludes 0). Widths, ``hidden`` and ``input_size``
are bounded by the raisable limits instead (``EDGECNN_MAX_CHANNELS``, ``EDGECNN_MAX_INPUT``). These bounds are
fixed: a depthwise kernel above 31 (RepLKNet's largest), an expansion above 32 or 64 layers in one stage is no
search choice but a typo, and the memory estimate before a search refuses what slips under them."""
MAX_CHOICES = 64  # values of one stage choice
MAX_STAGES = 64  # searchable stages
MAX_STEM_CHARS = 1000  # length of the stem's arch string
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")  # the default run folder is runs/search-NAME-DATA

_TOP_KEYS = ("name", "input_size", "stem", "stages", "head_mult", "hidden")
_STAGE_TYPES: dict[str, tuple[type, ...]] = {
    "widths": (int,), "depths": (int,), "kernels": (int,), "expansions": (int, float), "se": (bool,), "acts": (str,),
}  # fmt: skip
_SPACE_FIX = "fix the space file (see docs/search.md for the format)"


def _shown(value: object) -> str:
    """A value for an error message, at most 60 characters (a field may hold a 50 MB string)."""
    text = type(value).__name__ if isinstance(value, (dict, list, tuple)) and len(value) > 8 else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: must be a positive integer, got {_shown(value)}")
    return value


def _upper(key: str) -> tuple[float, str]:
    """The upper bound of a numeric field and, for a raisable one, the variable that raises it."""
    if key in ("widths", "hidden"):
        return MAX_CHANNELS.value(), MAX_CHANNELS.env
    if key == "input_size":
        return MAX_INPUT.value(), MAX_INPUT.env
    return SPACE_BOUNDS[key][1], ""


def _check_range(key: str, value: object, where: str) -> None:
    """ValueError naming ``where`` unless ``value`` is a number within the field's bounds."""
    if key == "expansions":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise ValueError(f"{where}: expansions must be positive numbers, got {_shown(value)}")
    else:
        _positive_int(value, where)
    hi, env = _upper(key)
    if value > hi:  # type: ignore[operator]
        lo = "(0" if key == "expansions" else f"[{SPACE_BOUNDS.get(key, (1, 0))[0]:g}"
        how = f"raise it with {env}=N if that is really meant" if env else "it is not a sane search choice"
        raise ValueError(f"{where}: {_shown(value)} is outside {lo}, {hi:,g}]; {how}")


def _check_block(block: object, where: str) -> str:
    """The name of a searchable block kind (:attr:`edgecnn.kinds.BlockKind.searchable`), else ValueError."""
    valid = [name for name, k in BLOCK_KINDS.items() if k.searchable]
    if not isinstance(block, str) or block not in valid:
        raise ValueError(f"{where}: {_shown(block)} is not a block kind a stage can be; valid: {', '.join(valid)}")
    return block


def _check_values(key: str, values: object, where: str) -> tuple[Any, ...]:
    """The values of one stage choice, checked: a non-empty list of at most MAX_CHOICES distinct sane values."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{where}: must be a non-empty list, got {_shown(values)}")
    if len(values) > MAX_CHOICES:
        raise ValueError(f"{where}: {len(values):,} values, at most {MAX_CHOICES} per choice; {_SPACE_FIX}")
    types = _STAGE_TYPES[key]
    for v in values:
        if not isinstance(v, types) or (key != "se" and isinstance(v, bool)):
            raise ValueError(f"{where}: {_shown(v)} is not a {' or '.join(t.__name__ for t in types)}")
    if key in ("widths", "depths", "kernels", "expansions"):
        for v in values:
            _check_range(key, v, where)
    if key == "kernels" and any(v % 2 == 0 for v in values):
        raise ValueError(f"{where}: kernels must be odd (3, 5, 7), got {_shown(list(values))}")
    if key == "acts":
        bad = [a for a in values if a not in ACTIVATIONS]
        if bad:
            raise ValueError(f"{where}: unknown activation {_shown(bad[0])}; valid: {', '.join(ACTIVATIONS)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: repeats a value: {_shown(list(values))}")
    return tuple(float(v) for v in values) if key == "expansions" else tuple(values)


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage; every layer of the stage shares the drawn configuration."""

    stride: int  # stride of the stage's first layer
    widths: tuple[int, ...]  # output channels
    depths: tuple[int, ...]  # number of layers
    kernels: tuple[int, ...] = (3, 5, 7)  # depthwise kernel sizes
    expansions: tuple[float, ...] = (3.0, 4.0, 6.0)  # inner width / input width
    se: tuple[bool, ...] = (False, True)  # squeeze-and-excitation (ratio 0.25, hard-sigmoid gate)
    acts: tuple[str, ...] = ("relu", "hswish")  # activation
    block: str = STAGE_KIND  # the stage's block kind: ir (MobileNetV2/V3), er (fused-MBConv, EfficientNetV2), ...

    def __post_init__(self) -> None:
        _check_range("stride", self.stride, "stage choice 'stride'")
        _check_block(self.block, "stage choice 'block'")
        for name in ("widths", "depths", "kernels", "expansions", "se", "acts"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"stage choice {name!r} is empty; give at least one value")
            _check_values(name, values, f"stage choice {name!r}")

    @property
    def size(self) -> int:
        """Number of distinct configurations of this stage."""
        return math.prod(len(self.options(g)) for g in GENES)

    def options(self, gene: str) -> tuple[Any, ...]:
        """The values ``gene`` (one of :data:`GENES`) may take."""
        return getattr(self, _OPTIONS[gene])

    def sample_choice(self, rng: random.Random) -> StageChoice:
        """A uniform draw (depth, kernel, expansion, width, SE, activation — the order seeds rely on)."""
        depth, k, e = rng.choice(self.depths), rng.choice(self.kernels), rng.choice(self.expansions)
        width, se, act = rng.choice(self.widths), rng.choice(self.se), rng.choice(self.acts)
        return StageChoice(depth, k, float(e), se, act, width)

    def sample(self, rng: random.Random) -> str:
        """One stage as an arch block, e.g. ``ir_r3_k5_s2_e4_c40_se0.25_hsgate_hswish``."""
        return self.sample_choice(rng).block(self.stride, self.block)

    def extreme(self, largest: bool) -> StageChoice:
        """The largest (or smallest) configuration; SE on (off) where allowed; the last (first) activation."""
        pick = max if largest else min
        return StageChoice(pick(self.depths), pick(self.kernels), float(pick(self.expansions)),
                           (True in self.se) if largest else (False not in self.se),
                           self.acts[-1] if largest else self.acts[0], pick(self.widths))  # fmt: skip


@dataclass(frozen=True)
class SearchSpace:
    """A fixed stem, searchable stages, a head whose 1×1 conv is ``head_mult`` × the last width."""

    stem: str  # arch blocks before the first stage
    stages: tuple[StageSpace, ...]  # the searchable stages, input to output
    head_mult: int = 6  # width of the last 1×1 conv, as a multiple of the last stage's width
    hidden: int = 1280  # width of the hidden fc layer before the classifier
    name: str = "custom"  # how reports name the space
    input_size: int = 224  # the input resolution the space is designed for

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a search space needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise ValueError(f"a search space has at most {MAX_STAGES} stages, got {len(self.stages):,}")
        object.__setattr__(self, "stages", tuple(self.stages))
        for key in ("input_size", "head_mult", "hidden"):
            _check_range(key, getattr(self, key), key)

    def check_limits(self) -> None:
        """ValueError unless the smallest and the largest network resolve at ``input_size`` under
        :mod:`edgecnn.limits` (channels, layers, kernel and input sizes; stages that fit the input)."""
        from edgecnn.plan import resolve

        for largest in (False, True):
            which = "largest" if largest else "smallest"
            try:
                resolve(self.arch(self.extreme(largest)), input_size=self.input_size)
            except ValueError as exc:
                raise ValueError(f"the space's {which} network does not fit input_size {self.input_size}: "
                                 f"{str(exc).splitlines()[0]}") from None  # fmt: skip

    @property
    def size(self) -> int:
        """Number of distinct networks in the space."""
        return math.prod(s.size for s in self.stages)

    @property
    def stem_blocks(self) -> int:
        """Number of blocks the stem expands to (its layers come first in a built network)."""
        return len(parse(self.stem).expand().blocks)

    def head(self, last_width: int) -> str:
        return f"conv_k1_c{self.head_mult * last_width}_hswish gap fc_c{self.hidden}_hswish fc"

    def arch(self, genome: Genome) -> ArchSpec:
        """The network of ``genome`` as an arch spec."""
        self.check(genome)
        stages = [c.block(s.stride, s.block) for c, s in zip(genome, self.stages)]
        return parse(" ".join([self.stem, *stages, self.head(genome[-1].width)]))

    def check(self, genome: Genome) -> None:
        """ValueError naming the first stage choice outside the space."""
        if len(genome) != len(self.stages):
            raise ValueError(f"a genome of space {self.name!r} has {len(self.stages)} stages, got {len(genome)}")
        for i, (c, s) in enumerate(zip(genome, self.stages)):
            for g in GENES:
                if getattr(c, g) not in s.options(g):
                    raise ValueError(f"stage {i}: {g} {getattr(c, g)!r} is not in the space ({list(s.options(g))})")

    def decode(self, arch: str | ArchSpec) -> Genome:
        """The genome of an arch string this space wrote (ValueError for any other network)."""
        spec = parse(arch) if isinstance(arch, str) else arch
        n = len(parse(self.stem).blocks)
        blocks = spec.blocks[n : n + len(self.stages)]
        if len(blocks) != len(self.stages):
            raise ValueError(f"{spec.format()!r} has too few blocks for space {self.name!r}")
        genome = tuple(
            StageChoice(b.r or 1, b.k or 3, float(b.e or 0), bool(b.se), b.act or "", b.c or 0) for b in blocks
        )
        try:
            same = self.arch(genome) == spec
        except ValueError as exc:
            raise ValueError(f"{spec.format()!r} is not a network of search space {self.name!r}: {exc}") from None
        if not same:
            raise ValueError(f"{spec.format()!r} is not a network of search space {self.name!r}")
        return genome

    def sample_genome(self, rng: random.Random) -> Genome:
        """Draw one network uniformly (each stage's choices independently)."""
        return tuple(s.sample_choice(rng) for s in self.stages)

    def sample(self, rng: random.Random) -> ArchSpec:
        """Draw one network uniformly, as an arch spec."""
        return self.arch(self.sample_genome(rng))

    def extreme(self, largest: bool) -> Genome:
        """The largest (or smallest) network: every stage at its widest, deepest, biggest kernel (or least)."""
        return tuple(s.extreme(largest) for s in self.stages)

    def mutate(self, genome: Genome, rng: random.Random) -> Genome:
        """Change one gene of one stage to another of its values (Real et al. 2019, §2: one random edit)."""
        movable = [(i, g) for i, s in enumerate(self.stages) for g in GENES if len(s.options(g)) > 1]
        if not movable:
            raise ValueError(f"search space {self.name!r} has a single network; there is nothing to mutate")
        i, g = rng.choice(movable)
        value = rng.choice([v for v in self.stages[i].options(g) if v != getattr(genome[i], g)])
        return (*genome[:i], replace(genome[i], **{g: float(value) if g == "expansion" else value}), *genome[i + 1 :])

    def to_dict(self) -> dict[str, Any]:
        """The space as the JSON document :func:`space_from_dict` reads."""
        return {
            "name": self.name, "input_size": self.input_size, "stem": self.stem, "head_mult": self.head_mult,
            "hidden": self.hidden,
            "stages": [_stage_doc(s) for s in self.stages],
        }  # fmt: skip


def _stage_doc(s: StageSpace) -> dict[str, Any]:
    """A stage as its JSON object (the default block kind left out, as space files written before it)."""
    doc = {f.name: list(v) if isinstance(v := getattr(s, f.name), tuple) else v for f in fields(s)}
    if doc["block"] == STAGE_KIND:
        del doc["block"]
    return doc


MOBILENET_V3_SPACE = SearchSpace(
    stem="conv_k3_s2_c16_hswish ir_m16_c16_relu",
    stages=(  # MobileNetV3-Large's widths (24, 40, 80, 112, 160) ± one step of 8/16
        StageSpace(2, widths=(16, 24, 32), depths=(1, 2, 3)),
        StageSpace(2, widths=(32, 40, 48), depths=(2, 3, 4)),
        StageSpace(2, widths=(64, 80, 96), depths=(2, 3, 4)),
        StageSpace(1, widths=(96, 112, 128), depths=(1, 2, 3)),
        StageSpace(2, widths=(144, 160, 176), depths=(2, 3, 4)),
    ),
    name="mbv3-224",
    input_size=224,
)
"""``mbv3-224``: 5 stages at MobileNetV3-Large's strides (output stride 32)."""

MBV3_32_SPACE = SearchSpace(
    stem="conv_k3_c16_hswish ir_m16_c16_relu",
    stages=(  # MobileNetV3-Small's widths (24, 40/48, 96) for 32×32 inputs: 32 → 16 → 8 → 8 → 4
        StageSpace(2, widths=(16, 24, 32), depths=(1, 2, 3)),
        StageSpace(2, widths=(32, 40, 48), depths=(1, 2, 3)),
        StageSpace(1, widths=(48, 64, 80), depths=(1, 2, 3)),
        StageSpace(2, widths=(80, 96, 112), depths=(1, 2, 3)),
    ),
    hidden=1024,
    name="mbv3-32",
    input_size=32,
)
"""``mbv3-32``: a stride-1 stem and 4 stages with strides 2, 2, 1, 2 (32×32 in, 4×4 out)."""

SPACES: dict[str, SearchSpace] = {s.name: s for s in (MOBILENET_V3_SPACE, MBV3_32_SPACE)}
"""The built-in spaces by name."""


def sample(rng: random.Random, space: SearchSpace = MOBILENET_V3_SPACE) -> ArchSpec:
    """A random network from ``space`` (default :data:`MOBILENET_V3_SPACE`), reproducible from ``rng``."""
    if not isinstance(rng, random.Random):
        raise ValueError(f"rng must be a random.Random (e.g. random.Random(0)), got {type(rng).__name__}")
    return space.sample(rng)


# ---- a user's own space ------------------------------------------------------------------------------
def _stage_from_dict(d: object, where: str) -> StageSpace:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: a stage is an object with stride, widths, depths, ...; got {type(d).__name__}")
    valid = ("stride", "block", *_STAGE_TYPES)
    unknown = sorted(str(k) for k in set(d) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown field {_shown(unknown[0])}; valid: {', '.join(valid)}")
    for need in ("stride", "widths", "depths"):
        if need not in d:
            example = '"stride": 2, "widths": [24, 32], "depths": [1, 2]'
            raise ValueError(f"{where}: missing field {need!r} (e.g. {example})")
    _check_range("stride", d["stride"], f"{where}.stride")
    kw: dict[str, Any] = {"stride": d["stride"], "block": _check_block(d.get("block", STAGE_KIND), f"{where}.block")}
    for key in _STAGE_TYPES:
        if key in d:
            kw[key] = _check_values(key, d[key], f"{where}.{key}")
    return StageSpace(**kw)


def space_from_dict(d: object, *, source: str = "space") -> SearchSpace:
    """Validate a space document (see the module doc); every error names the field.

    Both extreme networks are resolved under :mod:`edgecnn.limits` (:meth:`SearchSpace.check_limits`).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"{source}: a search space is a JSON object, got {type(d).__name__}")
    unknown = sorted(str(k) for k in set(d) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown field {_shown(unknown[0])}; valid: {', '.join(_TOP_KEYS)}")
    for need in ("stem", "stages"):
        if need not in d:
            raise ValueError(f"{source}: missing field {need!r}")
    stem = d["stem"]
    if not isinstance(stem, str) or len(stem) > MAX_STEM_CHARS:
        raise ValueError(f"{source}.stem: must be an arch string such as 'conv_k3_c16_hswish' of at most "
                         f"{MAX_STEM_CHARS} characters, got {_shown(stem)}")  # fmt: skip
    try:
        spec = parse(stem)
    except ValueError as exc:
        raise ValueError(f"{source}.stem: {str(exc).splitlines()[0]}") from None
    if not all(kind_of(b.kind).spatial for b in spec.blocks):
        flat = "/".join(name for name, k in BLOCK_KINDS.items() if not k.spatial)
        raise ValueError(f"{source}.stem: the stem must be spatial blocks only (no {flat}), got {_shown(stem)}")
    stages = d["stages"]
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{source}.stages: must be a non-empty list of stages")
    if len(stages) > MAX_STAGES:
        raise ValueError(f"{source}.stages: {len(stages):,} stages, at most {MAX_STAGES}; {_SPACE_FIX}")
    # the stem as written (validated above): from_dict(to_dict(s)) == s, so a checkpoint of a built-in space
    # resumes against that space (a reformatted stem, k3 dropped, made them differ)
    kw: dict[str, Any] = {"stem": stem, "stages": tuple(
        _stage_from_dict(s, f"{source}.stages[{i}]") for i, s in enumerate(stages))}  # fmt: skip
    for key in ("input_size", "head_mult", "hidden"):
        if key in d:
            _check_range(key, d[key], f"{source}.{key}")
            kw[key] = d[key]
    if "name" in d:
        name = d["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{source}.name: must be 1 to 64 letters, digits or . _ + - (it names the run folder), "
                             f"got {_shown(name)}")  # fmt: skip
        kw["name"] = name
    space = SearchSpace(**kw)
    try:
        space.check_limits()
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return space


def load_space(path: str | Path) -> SearchSpace:
    """Read a user's space from a ``.json`` file (``.yaml``/``.yml`` when PyYAML is installed).

    The file's size is bounded (``EDGECNN_MAX_FILE_MB``) before it is read, its nesting before it is parsed.
    """
    from edgecnn.schema import load_json

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"search space file {str(p)!r} not found; give a built-in ({', '.join(SPACES)}) "
                                "or a JSON file")  # fmt: skip
    MAX_FILE_MB.check(p.stat().st_size / 2**20, f"search space file {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not UTF-8 text; {_SPACE_FIX}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{p}: reading YAML needs PyYAML (pip install pyyaml); or write the space as JSON"
                             ) from None  # fmt: skip
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
        except RecursionError:
            raise ValueError(f"{p}: YAML nested too deeply; {_SPACE_FIX}") from None
    else:
        data = load_json(text, str(p), fix=_SPACE_FIX)
    return space_from_dict(data, source=p.name)


def get_space(name_or_path: str | Path) -> SearchSpace:
    """A built-in space by name (:data:`SPACES`) or a user's space file."""
    if str(name_or_path) in SPACES:
        return SPACES[str(name_or_path)]
    if Path(name_or_path).suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ValueError(f"unknown search space {str(name_or_path)!r}; valid: {', '.join(SPACES)} or a .json file")
    return load_space(name_or_path)
