"""Class activation maps: CAM (Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017) for any classifier.

Both weigh the ``K`` channels of a spatial layer's output ``A`` (``K×h×w``) and
sum them into one ``h×w`` map of where the evidence for class ``c`` lies:

* **CAM** (Zhou et al. 2016, *Learning Deep Features for Discriminative
  Localization*, eq. 2): for a network that ends in global average pooling
  and one linear layer, ``y_c = Σ_k w_ck · mean_ij A_k(i, j) + b_c``, so
  ``M_c(i, j) = Σ_k w_ck A_k(i, j)`` and ``y_c = mean_ij M_c + b_c``. It
  needs exactly that head; :func:`class_activation_map` checks the identity
  on the actual logits and says to use Grad-CAM when it does not hold.
* **Grad-CAM** (Selvaraju et al. 2017, eqs. 1–2): ``α_ck = mean_ij ∂y_c/∂A_k(i, j)``,
  ``L_c = ReLU(Σ_k α_ck A_k)``, for any head. For GAP → linear,
  ``∂y_c/∂A_k(i, j) = w_ck/(h·w)``, so ``L_c = ReLU(M_c)/(h·w)``: Grad-CAM
  generalises CAM (their §3.1), and the tests assert that identity.

The *target layer* is found automatically as the last module whose output
still has spatial extent (``N×C×H×W`` with ``H·W > 1``; children finish
before their parent, so for a network of blocks this is the last spatial
block), or named. It is read from the traced graph (:mod:`edgecnn.graph`:
meta shapes and module scopes, no computation); a model torch.fx cannot
trace is run once on zeros with forward hooks instead. Maps are drawn over
the image by :func:`edgecnn.explain.interp.upsample` with a stated
coordinate convention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from edgecnn.analysis.receptive import eval_mode
from edgecnn.graph import GraphError, trace_graph
from edgecnn.explain.interp import Convention, Mode, upsample

Method = Literal["cam", "gradcam"]
METHODS: tuple[str, ...] = ("cam", "gradcam")

__all__ = ["CAM", "METHODS", "Method", "class_activation_map", "find_target_layer", "spatial_layers"]


@dataclass(frozen=True)
class CAM:
    """Class activation maps of a batch at one layer."""

    maps: torch.Tensor  # N×h×w raw maps at the target layer (CAM: M_c; Grad-CAM: ReLU(Σ α A)), detached
    classes: torch.Tensor  # N, the class each map explains
    logits: torch.Tensor  # N×num_classes, the model's output on the batch
    layer: str  # module path of the target layer
    method: Method  # "cam" or "gradcam"

    def normalized(self) -> torch.Tensor:
        """Maps scaled to [0, 1] per image for display: CAM min–max (as Zhou et al.), Grad-CAM ÷ max (ReLU'd)."""
        flat = self.maps.flatten(1)
        lo = flat.amin(1) if self.method == "cam" else torch.zeros(len(flat), dtype=flat.dtype)
        span = (flat.amax(1) - lo).clamp_min(torch.finfo(flat.dtype).tiny)
        return ((flat - lo[:, None]) / span[:, None]).view_as(self.maps)

    def upsampled(self, size: int | tuple[int, int], *, mode: Mode = "bilinear",
                  convention: Convention = "half_pixel") -> torch.Tensor:  # fmt: skip
        """:meth:`normalized` maps resized to the image (N×H×W) by ``mode`` under ``convention``."""
        return upsample(self.normalized(), size, mode=mode, convention=convention)

    def peaks(self) -> list[tuple[int, int]]:
        """(row, col) of each map's maximum, in map cells."""
        w = self.maps.shape[-1]
        return [(int(i) // w, int(i) % w) for i in self.maps.flatten(1).argmax(1)]


def _record(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """Run ``model`` on ``x`` and return its output and, in the order they finished, each module's tensor output."""
    seen: list[tuple[str, torch.Tensor]] = []

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_m: nn.Module, _in: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                seen.append((name, out))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return y, seen


def _is_spatial(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1


def _probe(model: nn.Module) -> torch.Tensor:
    p = next(model.parameters(), None)
    return torch.empty(0) if p is None else p


def _spatial_by_graph(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """From the fx graph: a module's output is the last node created inside it (its scope or a child's)."""
    g = trace_graph(model, torch.empty(shape, device="meta"))
    finish: dict[str, tuple[int, int, tuple[int, ...] | None]] = {}  # module -> (node index, -depth, shape)
    for i, node in enumerate(g.calls()):
        parts = g.scope(node).split(".") if g.scope(node) else []
        for depth in range(1, len(parts) + 1):
            finish[".".join(parts[:depth])] = (i, -depth, g.shape(node))
    ordered = sorted(finish.items(), key=lambda kv: kv[1][:2])
    return [(name, s) for name, (_, _, s) in ordered if s is not None and len(s) == 4 and s[-1] * s[-2] > 1]


def _spatial_by_hooks(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """One forward pass on zeros with a hook on every module; modules in the order they finish."""
    p = _probe(model)
    x = torch.zeros(shape, device=p.device, dtype=p.dtype if p.is_floating_point() else torch.float32)
    with eval_mode(model), torch.no_grad():
        _, seen = _record(model, x)
    return [(n, tuple(t.shape)) for n, t in seen if _is_spatial(t)]


def spatial_layers(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Modules whose output is ``N×C×H×W`` with ``H·W > 1``, in the order they finish, with their output shapes.

    ``input_shape`` is ``C×H×W`` or ``N×C×H×W``. Read from the traced graph on meta tensors; a model fx
    cannot trace runs once on zeros (no gradients, eval mode) with forward hooks instead.
    """
    shape = tuple(int(s) for s in input_shape)
    shape = (1, *shape) if len(shape) == 3 else shape
    if len(shape) != 4:
        raise ValueError(f"input shape {shape} must be C×H×W or N×C×H×W")
    try:
        return _spatial_by_graph(model, shape)
    except GraphError:
        return _spatial_by_hooks(model, shape)


def find_target_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The last module whose output has spatial extent: the layer CAM and Grad-CAM read by default."""
    layers = spatial_layers(model, input_shape)
    if not layers:
        raise ValueError(f"no module of the model gives a spatial output (N×C×H×W, H·W > 1) at input "
                         f"{tuple(input_shape)}; CAM needs a convolutional layer before pooling — use a larger input")
    return layers[-1][0]


def _classifier(model: nn.Module, channels: int) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].in_features != channels:
        raise ValueError(f"CAM needs global average pooling and one linear layer right after the target layer "
                         f"({channels} channels); this model's head is different — use method 'gradcam'")  # fmt: skip
    return linears[-1]


def _cam_maps(model: nn.Module, acts: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    fc = _classifier(model, acts.shape[1])
    w = fc.weight.detach().to(acts.dtype)
    b = fc.bias.detach().to(acts.dtype) if fc.bias is not None else torch.zeros(w.shape[0], dtype=acts.dtype)
    # the CAM identity must hold on these very logits: y = W·mean(A) + b
    pred = acts.mean(dim=(2, 3)) @ w.T + b.to(acts.device)
    scale = float(logits.abs().max()) + 1.0
    if pred.shape != logits.shape or float((pred - logits).abs().max()) > 1e-4 * scale:
        raise ValueError("CAM needs the target layer to feed global average pooling and one linear layer, but "
                         "the logits are not W·mean(A) + b; use method 'gradcam' (or name the layer before the pooling)")
    return torch.einsum("nk,nkhw->nhw", w[classes], acts)


def class_activation_map(model: nn.Module, x: torch.Tensor, *, method: Method = "cam", layer: str | None = None,
                         target: int | Sequence[int] | torch.Tensor | None = None) -> CAM:  # fmt: skip
    """CAM or Grad-CAM of ``model`` on the batch ``x`` (N×C×H×W, already normalised), in eval mode.

    ``layer`` names the target module (default: :func:`find_target_layer`);
    ``target`` is the class to explain, one per image or one for all (default:
    the predicted class). The model's train/eval flags are restored afterwards.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch N×C×H×W, got shape {tuple(x.shape)}")
    name = layer if layer is not None else find_target_layer(model, x.shape[1:])
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise ValueError(f"no module named {name!r} in the model; name one of "
                         f"{', '.join(n for n, _ in spatial_layers(model, x.shape[1:])[-5:])}")  # fmt: skip
    if method == "gradcam":
        x = x.detach().requires_grad_(True)  # a graph to A even when the weights are frozen
    captured: list[torch.Tensor] = []
    handle = modules[name].register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with eval_mode(model), torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    if not captured or not isinstance(captured[0], torch.Tensor) or captured[0].dim() != 4:
        raise ValueError(f"layer {name!r} gives no N×C×H×W tensor; name a convolutional layer")
    acts = captured[0]
    if logits.dim() != 2:
        raise ValueError(f"the model's output {tuple(logits.shape)} is not N×classes; CAM explains classifiers")
    n = len(x)
    if target is None:
        classes = logits.argmax(1)
    else:
        classes = torch.as_tensor(target, dtype=torch.long, device=logits.device).flatten()
        if classes.numel() not in (1, n):
            raise ValueError(f"give one target class for all {n} images or one per image, got {classes.numel()}")
        classes = classes.expand(n).clone()
        if int(classes.min()) < 0 or int(classes.max()) >= logits.shape[1]:
            raise ValueError(f"target class out of range 0..{logits.shape[1] - 1}: {classes.tolist()}")
    if method == "cam":
        maps = _cam_maps(model, acts.detach(), logits.detach(), classes)
    else:
        score = logits.gather(1, classes[:, None]).sum()  # images are independent in eval mode
        (grads,) = torch.autograd.grad(score, acts)
        alpha = grads.mean(dim=(2, 3), keepdim=True)
        maps = torch.relu((alpha * acts).sum(1)).detach()
    return CAM(maps.float().cpu(), classes.cpu(), logits.detach().float().cpu(), name, method)
