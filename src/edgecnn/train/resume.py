"""What a run's checkpoint holds beyond the weights, and what a resume must match.

:class:`edgecnn.train.loop._Run` saves ``last.pt`` after every epoch and on
Ctrl-C; these helpers turn its position, history and data statistics into
plain values and back, and refuse a resume with a different recipe.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edgecnn.data import DataSet
from edgecnn.train.config import EpochStats, EvalResult, TrainConfig

LAST = "last.pt"  # the checkpoint file in a run's folder


def _data_meta(data: DataSet, image_size: int) -> dict[str, Any]:
    return {"name": data.name, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
            "image_size": image_size, "in_chans": data.in_chans}  # fmt: skip


def _stats_from_dict(d: dict[str, Any]) -> EpochStats:
    try:
        test = d.get("test")
        test_result = EvalResult(**{**test, "per_class": tuple(test["per_class"])}) if test else None
        return EpochStats(**{**d, "test": test_result})
    except (TypeError, KeyError, AttributeError) as exc:  # a damaged checkpoint's history
        raise ValueError(f"the checkpoint's history is damaged ({exc}); start afresh with --overwrite") from None


def _fresh() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "n": 0.0, "seconds": 0.0}  # running sums of the current epoch


# options that may change between a run and its resume: how the steps run, not what they compute. `precision` is
# one of them: "auto" already changes it with the device (fp32 on a CPU, bf16 on a GPU), and each epoch records
# the arithmetic it ran in (`EpochStats.precision`)
_RESUMABLE = frozenset({"epochs", "steps", "eval_every", "device", "threads", "progress", "log_epochs", "compile",
                        "precision"})


def _check_same_recipe(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = asdict(cfg)
    changed = [k for k in now if k in saved and k not in _RESUMABLE and saved[k] != now[k]]
    diff = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed]
    if diff:
        raise ValueError(f"cannot resume with a different recipe ({'; '.join(diff)}); "
                         "use the original options or a new --out folder")  # fmt: skip
