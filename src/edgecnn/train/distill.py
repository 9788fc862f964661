"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network").

A compressed student learns from the softened outputs of its uncompressed
teacher as well as from the labels::

    L = (1 − α) · CE(z_s, y)  +  α · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) )

The ``T²`` keeps the soft term's gradient on the scale of the hard term's as
the temperature ``T`` changes (§2 of the paper). The hard term may use label
smoothing (Szegedy et al. 2016).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s loss: ``(1−α)·CE + α·T²·KL(teacher ‖ student)`` at temperature ``T`` (batch mean)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be positive, got {temperature}")
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * hard + alpha * (t * t) * soft


def load_teacher(teacher: nn.Module | str | os.PathLike[str], *, num_classes: int,
                 device: torch.device | str = "cpu") -> nn.Module:  # fmt: skip
    """The teacher in eval mode with frozen weights; a path is loaded as an edgecnn checkpoint."""
    if not isinstance(teacher, nn.Module):
        from edgecnn.checkpoint import load_model

        teacher, _ = load_model(teacher)
    out = getattr(teacher, "num_classes", num_classes)
    if out != num_classes:
        raise ValueError(f"the teacher has {out} classes, the data {num_classes}; use a teacher trained on this data")
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
