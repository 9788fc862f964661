"""The op table: each family of operations declared once, read by costs, receptive fields and pruning (docs/design.md).

Three tools classify the ops of a traced network: the cost model
(:mod:`edgecnn.analysis.handlers`, :mod:`edgecnn.analysis.node_cost`), the
receptive-field walk (:mod:`edgecnn.analysis.rf_rules`) and the channel
labels of pruning (:mod:`edgecnn.compress.channels.labels`). Each reads this table:
one :class:`OpFamily` per family of ops (the activations, the binary
element-wise ops, the max pools, ...) names its module types, functions and
tensor methods once and gives the *role* it plays for each tool; each tool
maps a role to its own implementation. So an op added to a family is known
to all three at once (``tests/test_ops.py`` checks that no tool knows an op
the others do not).

The roles (each tool's implementations are keyed by exactly these names):

* cost (:data:`COST_ROLES`): ``conv`` ``conv_transpose`` ``linear`` ``matmul``
  (the headline MACs); ``act`` (1 per output element), ``softmax`` (3),
  ``batch_norm`` (2), ``norm`` (5), ``elementwise`` (1, broadcast), ``max_pool`` /
  ``avg_pool`` (the window's reads), ``adaptive_pool`` (1 per input element),
  ``interpolate`` (one per tap), ``reduce`` (1 per input element); ``flatten``,
  ``identity``, ``view`` and ``data`` (no arithmetic, no new memory), ``copy``
  (no arithmetic, a new tensor); ``measured`` (run on meta tensors under
  ``FlopCounterMode``).
* receptive field (:data:`FIELD_ROLES`): ``keep`` (pointwise or data
  movement: the inputs' fields merge, a spatial change is noted), ``reduce``
  (a spatial change is a reduction or flatten: whole input), ``whole``,
  ``conv`` ``conv_transpose`` ``max_pool`` ``avg_pool`` ``adaptive_pool``
  ``linear`` ``interpolate`` ``pad`` ``slice``.
* channels (:data:`CHANNEL_ROLES`): ``elementwise`` (channel c in, channel c
  out), ``merge`` (operands unified element by element), ``conv`` /
  ``linear`` (owns its output channels), ``per_channel`` (per-channel
  parameters indexed by the channels passing through: BN, PReLU),
  ``layer_norm``, ``spatial`` (per channel, new spatial layout), ``pad``,
  ``structural`` / ``reshape`` / ``split`` (run on the labels as they are),
  ``reduction``, ``along_dim`` (blocks only along the channel dim: softmax),
  ``blocks`` (mixes channels: not prunable, with ``why``).

A user teaches edgecnn an op of their own with a :class:`CustomOp` (passed as
``custom_ops=`` to :func:`edgecnn.analysis.analyze`, the receptive-field
functions, :func:`edgecnn.compress.channel_groups` and
:func:`edgecnn.compress.plan_prune`): one object carrying its cost, field and
channel behaviour, or ``like=`` a family of this table. This module imports
nothing from edgecnn: every layer may read it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CHANNEL_ROLES", "COST_ROLES", "FAMILIES", "FIELD_ROLES", "OPS", "Channels", "CustomOp", "OpFamily",
           "OpTable", "op_table"]  # fmt: skip

COST_ROLES = ("conv", "conv_transpose", "linear", "matmul", "act", "softmax", "batch_norm", "norm", "elementwise",
              "max_pool", "avg_pool", "adaptive_pool", "interpolate", "reduce", "flatten", "identity", "view", "data",
              "copy", "measured")  # fmt: skip
FIELD_ROLES = ("keep", "reduce", "whole", "conv", "conv_transpose", "max_pool", "avg_pool", "adaptive_pool", "linear",
               "interpolate", "pad", "slice")  # fmt: skip
CHANNEL_ROLES = ("elementwise", "merge", "conv", "linear", "per_channel", "layer_norm", "spatial", "pad",
                 "structural", "reshape", "split", "reduction", "along_dim", "blocks")  # fmt: skip
CHANNEL_KINDS = ("elementwise", "spatial", "owns", "blocks")
"""What a :class:`Channels` of a custom op may say."""


@dataclass(frozen=True)
class Channels:
    """How a custom module's channels (axis 1 of its first input and of its output) relate, for pruning.

    ``kind``: ``"elementwise"`` (output channel c is input channel c; ``per_channel`` parameters, e.g. a learned
    scale, are indexed by it), ``"spatial"`` (the same, with a new spatial layout: a pool or resize of your own),
    ``"owns"`` (a layer that makes new channels: ``reads`` are the ``(parameter, dim)`` indexed by the input
    channels, ``writes`` those indexed by the output channels and must include ``"weight"`` — the filter whose
    norm ranks the channels; the output has ``weight.shape[dim]`` channels), or ``"blocks"`` (it mixes
    channels: what it reads is not prunable). The module's ``forward`` must take its sizes from its parameters,
    since pruning slices them and changes no other attribute.
    """

    kind: str
    reads: tuple[tuple[str, int], ...] = ()
    writes: tuple[tuple[str, int], ...] = ()
    per_channel: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CHANNEL_KINDS:
            raise ValueError(f"Channels kind must be one of {', '.join(CHANNEL_KINDS)}, got {self.kind!r}")
        for name in ("reads", "writes", "per_channel"):
            pairs = tuple(tuple(p) for p in getattr(self, name))
            if not all(len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int) for p in pairs):
                raise ValueError(f"Channels.{name}: give (parameter name, dim) pairs, got {getattr(self, name)!r}")
            object.__setattr__(self, name, pairs)
        if self.kind == "owns" and not any(p == "weight" for p, _ in self.writes):
            raise ValueError("Channels('owns'): writes must include ('weight', dim), the filter that makes a channel")
        if self.kind != "owns" and (self.reads or self.writes):
            raise ValueError(f"Channels({self.kind!r}) takes no reads / writes (those are for 'owns')")


@dataclass(frozen=True)
class OpFamily:
    """One family of ops and its role for each tool (see the module docstring for the role names).

    ``cost``, ``field``, ``channels``: a role name, or — for a :class:`CustomOp` — a handler / rule /
    :class:`Channels` of the user's. ``why``: why a family whose channel role is ``blocks`` is not prunable.
    """

    name: str
    cost: str | Callable[..., Any]
    field: str | Callable[..., Any]
    channels: str | Channels
    modules: tuple[type, ...] = ()
    functions: tuple[Any, ...] = ()
    methods: tuple[str, ...] = ()
    why: str = ""


def _family(name: str, cost: str, field_: str, channels: str, *, modules: Sequence[type] = (),
            functions: Sequence[Any] = (), methods: Sequence[str] = (), why: str = "") -> OpFamily:  # fmt: skip
    return OpFamily(name, cost, field_, channels, tuple(modules), tuple(dict.fromkeys(functions)), tuple(methods), why)


_BN = nn.modules.batchnorm._BatchNorm
_IN = nn.modules.instancenorm._InstanceNorm
_DROPOUT = nn.modules.dropout._DropoutNd

FAMILIES: tuple[OpFamily, ...] = (
    _family("conv", "conv", "conv", "conv", modules=(nn.Conv1d, nn.Conv2d, nn.Conv3d),
            functions=(F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d)),
    _family("conv_transpose", "conv_transpose", "conv_transpose", "conv",
            modules=(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
            functions=(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)),
    _family("linear", "linear", "linear", "linear", modules=(nn.Linear,), functions=(F.linear,)),
    _family("matmul", "matmul", "keep", "blocks", functions=(torch.matmul, operator.matmul, torch.mm, torch.bmm),
            methods=("matmul",), why="a matrix product mixes channels"),
    _family("activation", "act", "keep", "elementwise",
            modules=(nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU,
                     nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Softplus, nn.SELU, nn.CELU),
            functions=(F.relu, torch.relu, F.relu6, F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh,
                       F.tanh, F.silu, F.gelu, F.leaky_relu, F.elu, F.hardtanh, F.mish, F.softplus, F.selu, F.celu,
                       torch.clamp, torch.clip),
            methods=("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish", "clamp", "clamp_",
                     "clip")),
    _family("prelu", "act", "keep", "per_channel", modules=(nn.PReLU,), functions=(F.prelu,)),
    _family("softmax", "softmax", "keep", "along_dim", modules=(nn.Softmax,), functions=(F.softmax, torch.softmax),
            methods=("softmax",)),
    _family("batch_norm", "batch_norm", "keep", "per_channel", modules=(_BN,), functions=(F.batch_norm,)),
    _family("instance_norm", "norm", "keep", "per_channel", modules=(_IN,), functions=(F.instance_norm,)),
    _family("layer_norm", "norm", "keep", "layer_norm", modules=(nn.LayerNorm,), functions=(F.layer_norm,)),
    _family("group_norm", "norm", "keep", "blocks", modules=(nn.GroupNorm,), functions=(F.group_norm,),
            why="a group norm shares its statistics across the channels of a group"),
    _family("dropout", "identity", "keep", "elementwise", modules=(nn.Identity, _DROPOUT),
            functions=(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)),
    _family("elementwise", "elementwise", "keep", "merge",
            functions=(operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                       operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
                       torch.minimum),
            methods=("add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_", "maximum", "minimum")),
    _family("max_pool", "max_pool", "max_pool", "spatial", modules=(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d),
            functions=(F.max_pool1d, F.max_pool2d, F.max_pool3d)),
    _family("avg_pool", "avg_pool", "avg_pool", "spatial", modules=(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d),
            functions=(F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)),
    _family("adaptive_pool", "adaptive_pool", "adaptive_pool", "spatial",
            modules=(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                     nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
            functions=(F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                       F.adaptive_max_pool2d, F.adaptive_max_pool3d)),
    _family("interpolate", "interpolate", "interpolate", "spatial", modules=(nn.Upsample,),
            functions=(F.interpolate,)),
    _family("pad", "copy", "pad", "pad",
            modules=(nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d,
                     nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d),
            functions=(F.pad,)),
    _family("flatten", "flatten", "reduce", "reshape", modules=(nn.Flatten,), functions=(torch.flatten,),
            methods=("flatten",)),
    _family("reshape", "view", "reduce", "reshape", modules=(nn.Unflatten,), functions=(torch.reshape,),
            methods=("view", "reshape", "unflatten", "view_as")),
    _family("move", "view", "keep", "structural",
            functions=(torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, torch.narrow),
            methods=("permute", "transpose", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "narrow", "t")),
    _family("split", "view", "keep", "split", functions=(torch.chunk, torch.split), methods=("chunk", "split")),
    _family("concat", "copy", "keep", "structural", functions=(torch.cat, torch.concat, torch.stack)),
    _family("getitem", "data", "slice", "structural", functions=(operator.getitem,)),
    _family("shape", "data", "keep", "structural", functions=(getattr,), methods=("size", "dim")),
    _family("cast", "view", "keep", "elementwise",
            methods=("contiguous", "clone", "detach", "float", "to", "type_as")),
    _family("reduction", "reduce", "reduce", "reduction",
            functions=(torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var, torch.logsumexp),
            methods=("mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp")),
)  # fmt: skip
"""Every family edgecnn knows. Adding an op: add it to its family here (or a new family with its three roles)."""

_BY_NAME: dict[str, OpFamily] = {f.name: f for f in FAMILIES}


def _label(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", None) or repr(target)


@dataclass(frozen=True)
class CustomOp:
    """An op of your own, taught to edgecnn without editing it: its cost, receptive field and channels at once.

    ``target``: a module type (kept whole in the trace, a leaf), a function fx records as one call (e.g.
    ``torch.fx.wrap``-ed), or a tensor method name. ``like``: a family of :data:`FAMILIES` (``"activation"``,
    ``"conv"``, ...) whose three roles it takes; the ones given override them:

    * ``cost``: a cost role name, or a function ``(call) -> Cost`` (:class:`edgecnn.analysis.handlers.Call`:
      ``call.module``, ``call.args`` / ``call.kwargs`` as meta tensors, ``call.out`` the output);
    * ``field``: a field role name (``"keep"``, ``"whole"``, ``"conv"`` reads the module's ``kernel_size``,
      ``stride``, ``padding``, ``dilation``) or a rule ``(op, fields) -> RF`` (:mod:`edgecnn.analysis.rf_rules`);
    * ``channels``: a channel role name (``"elementwise"``, ``"spatial"``, ``"blocks"``, ...) or a
      :class:`Channels` (``"owns"`` for a layer that makes new channels).

    Without ``like`` the unset ones are: measured (``FlopCounterMode``), ``"keep"``, ``"blocks"``. A custom op
    overrides a built-in rule for the same target.
    """

    target: type | Callable[..., Any] | str
    like: str | None = None
    cost: str | Callable[..., Any] | None = None
    field: str | Callable[..., Any] | None = None
    channels: str | Channels | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.target, (type, str)) or callable(self.target)):
            raise ValueError(f"CustomOp target must be a module type, a function or a method name, got {self.target!r}")
        if self.like is not None and self.like not in _BY_NAME:
            raise ValueError(f"CustomOp like={self.like!r} is not a family; known: {', '.join(_BY_NAME)}")
        for what, value, roles in (("cost", self.cost, COST_ROLES), ("field", self.field, FIELD_ROLES),
                                   ("channels", self.channels, CHANNEL_ROLES)):  # fmt: skip
            if isinstance(value, str) and value not in roles:
                raise ValueError(f"CustomOp {what}={value!r} is not a {what} role; known: {', '.join(roles)}")
        if self.channels is not None and not isinstance(self.channels, (str, Channels)):
            raise ValueError(f"CustomOp channels must be a role name or a Channels, got {self.channels!r}")

    def family(self) -> OpFamily:
        """The :class:`OpFamily` this op adds: ``like``'s roles, overridden by the given ones."""
        base = _BY_NAME[self.like] if self.like else OpFamily("", "measured", "keep", "blocks")
        t = self.target
        return replace(base, name=f"custom {_label(t)}", why=base.why or f"custom op {_label(t)} mixes channels",
                       cost=self.cost if self.cost is not None else base.cost,
                       field=self.field if self.field is not None else base.field,
                       channels=self.channels if self.channels is not None else base.channels,
                       modules=(t,) if isinstance(t, type) else (), methods=(t,) if isinstance(t, str) else (),
                       functions=(t,) if not isinstance(t, (type, str)) else ())  # fmt: skip


@dataclass(eq=False)
class OpTable:
    """The families by module type (along the MRO), function and method name; the user's :class:`CustomOp` s first.

    A module type takes the family of its nearest registered base class, unless it rewrites ``forward`` (outside
    ``torch.nn``): timm's ``Conv2dSame`` pads first, so it is not costed, fielded or pruned as a plain conv.
    """

    families: tuple[OpFamily, ...] = FAMILIES
    custom: tuple[CustomOp, ...] = ()
    _modules: dict[type, OpFamily] = field(default_factory=dict, init=False, repr=False)
    _functions: dict[Any, OpFamily] = field(default_factory=dict, init=False, repr=False)
    _methods: dict[str, OpFamily] = field(default_factory=dict, init=False, repr=False)
    _of_type: dict[type, OpFamily | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.families, self.custom = tuple(self.families), tuple(self.custom)
        for fam in self.families:
            self._register(fam, None)
        mine: set[Any] = set()  # targets of the custom ops: they override built-ins, never each other
        for op in self.custom:
            self._register(op.family(), mine)

    def _register(self, fam: OpFamily, mine: set[Any] | None) -> None:
        """Register ``fam``'s targets (``mine``: the custom ops' targets so far, ``None`` for a built-in family);
        a target in two built-in families, or in two custom ops, is an error."""
        for table, keys in ((self._modules, fam.modules), (self._functions, fam.functions),
                            (self._methods, fam.methods)):  # fmt: skip
            for key in keys:
                old = table.get(key)
                if old is not None and (mine is None or key in mine):
                    raise ValueError(f"{_label(key)} is declared twice: in {old.name} and in {fam.name}")
                table[key] = fam
                if mine is not None:
                    mine.add(key)

    @property
    def leaf_types(self) -> tuple[type, ...]:
        """The module types of the custom ops: kept whole (leaves) when a model is traced."""
        return tuple(op.target for op in self.custom if isinstance(op.target, type))

    def module_family(self, module_type: type) -> OpFamily | None:
        """The family of ``module_type``: its nearest registered base class's, if it runs that class's forward."""
        try:
            return self._of_type[module_type]
        except KeyError:
            pass
        fam = None
        base = next((c for c in module_type.__mro__ if c in self._modules), None)
        if base is not None:
            fwd: Any = getattr(module_type, "forward", None)
            if fwd is getattr(base, "forward", None) or getattr(fwd, "__module__", "").startswith("torch.nn."):
                fam = self._modules[base]
        if len(self._of_type) < 4096:
            self._of_type[module_type] = fam
        return fam

    def call_family(self, op: str, target: Any) -> OpFamily | None:
        """The family of a ``call_function`` (by the function) or ``call_method`` (by name) node's target."""
        if op == "call_method":
            return self._methods.get(target)
        try:
            return self._functions.get(target)
        except TypeError:  # an unhashable target
            return None

    def family(self, op: str, target: Any, module: nn.Module | None) -> OpFamily | None:
        """The family of one fx node: by its module's type for ``call_module``, else by its target."""
        if module is not None:
            return self.module_family(type(module))
        return self.call_family(op, target)


OPS = OpTable()
"""The built-in table (no custom ops): what every tool reads by default."""


def op_table(custom_ops: Iterable[CustomOp] | OpTable | CustomOp | None = None) -> OpTable:
    """The table for ``custom_ops``: :data:`OPS` when there are none, else the built-ins with these first."""
    if custom_ops is None:
        return OPS
    if isinstance(custom_ops, OpTable):
        return custom_ops
    ops = (custom_ops,) if isinstance(custom_ops, CustomOp) else tuple(custom_ops)
    if not all(isinstance(op, CustomOp) for op in ops):
        raise ValueError("custom_ops must be CustomOp objects (edgecnn.ops.CustomOp)")
    return OpTable(FAMILIES, ops) if ops else OPS
