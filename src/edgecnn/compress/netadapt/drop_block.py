"""Drop whole residual blocks of an EdgeNet, in arch space, with weight transfer (depth pruning).

Channel pruning narrows layers; on a small network at a small input the
latency is mostly what every layer costs to launch (kernel dispatch, memory
traffic of a few thousand activations), not its width, so narrowing stops
paying long before the budget. Removing a layer removes that cost outright.
A block whose skip is the identity computes ``x + F(x)`` (stride 1, as many
channels out as in: Sandler et al. 2018 §3.3, He et al. 2016 §3.2), so
deleting it leaves every shape of the network as it was and the rest of its
weights valid: the network becomes the original with ``F ≡ 0`` in that block
— exactly, for ``ir`` blocks and pre-activation ``basic``/``bottleneck``
blocks, and for post-activation ones wherever their input is already
non-negative (the usual case: it is the previous block's ReLU output),
since such a block applies its activation after the add. Residual networks
degrade gracefully under such deletions (Veit et al. 2016, "Residual
Networks Behave Like Ensembles of Relatively Shallow Networks"; Huang et al.
2016, stochastic depth), which is what makes depth a NetAdapt proposal like
any channel group (:mod:`edgecnn.compress.netadapt.loop`, ``drop_blocks``).

The result is an ordinary EdgeNet: a repeated block loses one repeat
(``ir_r2_k5_c24`` → ``ir_k5_c24``), a single block leaves the arch string,
and the state dict of the remaining blocks moves over (``blocks.<j>`` →
``blocks.<j-1>`` after the dropped position) and loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecnn.arch import ArchSpec
from edgecnn.build import EdgeNet, build
from edgecnn.kinds import kind_of
from edgecnn.plan import LayerPlan, resolve

__all__ = ["BlockDrop", "drop_block", "droppable_blocks", "plan_drop"]


@dataclass(frozen=True)
class BlockDrop:
    """One block to remove: where it is, what it was and the arch string without it."""

    position: int  # module index in EdgeNet.blocks (``blocks.<position>``)
    block: str  # the dropped block's arch string (one repeat)
    width: int  # its channels (in = out, the identity skip)
    arch: str  # the network's canonical arch string without the block

    @property
    def description(self) -> str:
        return f"blocks.{self.position} dropped ({self.block})"


def _identity(p: LayerPlan) -> bool:
    return p.residual and kind_of(p.spec.kind).shortcut(p.spec, p.cin, p.cout) == "identity"


def droppable_blocks(model: EdgeNet) -> tuple[int, ...]:
    """Positions in ``model.blocks`` of the blocks with an identity skip: removing one keeps every shape."""
    plans = resolve(model.spec, num_classes=model.num_classes, in_chans=model.in_chans)
    return tuple(p.position for p in plans if _identity(p))


def plan_drop(model: EdgeNet, position: int) -> BlockDrop:
    """The arch string of ``model`` without block ``position``; ``ValueError`` if that block has no identity skip."""
    plans = resolve(model.spec, num_classes=model.num_classes, in_chans=model.in_chans)
    if not 0 <= position < len(plans):
        raise ValueError(f"block position {position} is out of range: the network has blocks 0..{len(plans) - 1}")
    p = plans[position]
    if not _identity(p):
        raise ValueError(f"blocks.{position} ({p.spec.format()}) has no identity skip, so removing it would change "
                         f"the shapes around it; droppable blocks: {list(droppable_blocks(model)) or 'none'}")  # fmt: skip
    blocks = list(model.spec.blocks)
    b = blocks[p.index]
    # the repeats of one arch block share a spec but the first carries the stride; an identity repeat is at s1,
    # so whichever repeat goes, the others are r-1 copies with the first's stride unchanged
    if (b.r or 1) > 1:
        blocks[p.index] = b.with_(r=b.r - 1)
    else:
        del blocks[p.index]
    arch = ArchSpec(tuple(blocks)).format()
    return BlockDrop(position, p.spec.format(), p.cin, arch)


def drop_block(model: EdgeNet, position: int) -> EdgeNet:
    """A new EdgeNet without block ``position`` (see :func:`plan_drop`), the other blocks' weights copied."""
    plan = plan_drop(model, position)
    out = build(plan.arch, num_classes=model.num_classes, in_chans=model.in_chans)
    state = {}
    for key, value in model.state_dict().items():
        _, index, rest = key.split(".", 2)  # "blocks.<i>.<...>"
        i = int(index)
        if i != position:
            state[f"blocks.{i - (i > position)}.{rest}"] = value
    out.load_state_dict(state)  # strict: the same modules, renumbered
    return out.train(model.training)
