"""Before any work of a search (:func:`edgecnn.search.job.run_job`): the folder, the bounds, a resumed run, the time.

* **the folder is claimed** (:func:`claim_search_dir`): one that holds a
  previous search is refused unless ``resume`` (continue it; it must hold one)
  or ``overwrite`` (its results are removed once every check has passed, so the
  folder never mixes two runs). The device's ``latency_table.json`` is no
  result: it is kept and reused;
* **the run is bounded** (:func:`check_job`): the space's smallest and largest
  networks resolve under :mod:`edgecnn.limits`, and the memory of the supernet's
  training (its weights, gradients and optimiser state — the largest network's
  plus whatever the shared weights add — and the largest network's activations
  at the supernet batch), of the short trainings, of the final training and of
  the references is estimated (:mod:`edgecnn.analysis.memory`) and refused above
  ``EDGECNN_MAX_MEMORY_GB``;
* **a resumed run is checked**: its ``search_state.json`` field by field and
  against this job's settings and space, its ``supernet.pt`` against the
  space, the data and the supernet recipe;
* **the time it implies is estimated** (:func:`estimate_time`) and reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.atomic import clean_stale
from edgecnn.latency.compare import COMPARE_TIMING
from edgecnn.limits import MAX_MEMORY_GB
from edgecnn.analysis.memory import check_memory, estimate_memory
from edgecnn.run_folder import RUN_FILES, check_writable
from edgecnn.search.choice import CHOICE_FILE
from edgecnn.search.correct import CORRECT_FILE, load_corrections
from edgecnn.search.evolution import load_resumable
from edgecnn.search.proxies import PROXY_BATCH
from edgecnn.search.references import reference_arch
from edgecnn.search.rerank import RERANK_FILE, load_trained
from edgecnn.search.supernet import supernet_params
from edgecnn.search.supernet_train import load_supernet, same_recipe
from edgecnn.train import TrainConfig
from edgecnn.search.job_spec import FINALIST_PAUSE_S, FINALIST_ROUNDS, SearchJob, rerank_recipe


# ---- before any work: the folder, the bounds, a resumed run, the time ----------------------------------
SEARCH_FILES: tuple[str, ...] = ("results.json", "search_state.json", "supernet.pt", RERANK_FILE, CHOICE_FILE,
                                  CORRECT_FILE, "pareto.png")  # fmt: skip
"""The files of a previous search at the top of its folder (besides the correction rounds' states
``search_state.correct<k>.json``, ``final/`` and ``references/<name>/``)."""
STATE_FILE = "search_state.json"
SUPERNET_FILE = "supernet.pt"


def previous_search(out: str | Path) -> list[str]:
    """The files of a previous search in ``out``, relative to it (empty for a new or foreign folder)."""
    p = Path(out)
    if not p.is_dir():
        return []
    found = [name for name in SEARCH_FILES if (p / name).is_file()]
    found += sorted(x.name for x in p.glob(f"{Path(STATE_FILE).stem}.correct*.json") if x.is_file())
    subs = [p / "final"] + (sorted(x for x in (p / "references").iterdir() if x.is_dir())
                            if (p / "references").is_dir() else [])  # fmt: skip
    for sub in subs:
        found += [str((sub / name).relative_to(p)) for name in RUN_FILES if (sub / name).is_file()]
    return found


def claim_search_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check that ``out`` may hold this search (:func:`edgecnn.run_folder.claim_run_dir` for a search's files).

    A folder with a previous search is refused unless ``resume`` or ``overwrite``; ``resume`` needs a search
    to continue (its ``search_state.json`` or ``supernet.pt``). Nothing is changed here but the removal of
    temporaries of a killed write; ``overwrite`` removes the previous results later
    (:func:`clear_previous_search`), once every check has passed.
    """
    p = check_writable(out, what="run folder (--out)", is_dir=True)
    if resume and overwrite:
        raise ValueError("--resume continues the search in the folder, --overwrite replaces it: pass one of them")
    found = previous_search(p)
    if found and not resume and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise FileExistsError(f"{p} already holds a previous search ({shown}); pass --resume to continue it, "
                              "--overwrite to replace it, or another --out")  # fmt: skip
    if resume and not any(name in found for name in (STATE_FILE, SUPERNET_FILE)):
        raise FileNotFoundError(f"nothing to resume: {p} holds no search ({STATE_FILE} or {SUPERNET_FILE}); "
                                "drop --resume to start one there")  # fmt: skip
    if p.is_dir():
        clean_stale(p)
    return p


def clear_previous_search(out: Path) -> list[str]:
    """Remove the files of a previous search from ``out`` (what ``overwrite`` replaces); returns them.

    The device's latency table is kept: it is this device's measurements, which the new search reuses.
    """
    gone = previous_search(out)
    for name in gone:
        (out / name).unlink(missing_ok=True)
    return gone


def check_job(job: SearchJob, *, num_classes: int = 2, in_chans: int = 1) -> dict[str, float]:
    """Refuse up front a search that cannot fit: ``ValueError`` naming the limit (and its variable).

    The space's smallest and largest networks resolve under :mod:`edgecnn.limits`; then the memory of each
    stage is estimated from the specs alone (:mod:`edgecnn.analysis.memory`) and refused above ``EDGECNN_MAX_MEMORY_GB``:

    * supernet training: the largest network's training estimate at the supernet batch, plus 16 bytes
      (weight, gradient, two momenta) for every shared weight the largest network does not use (the
      supernet's weights are counted on the meta device), plus the frozen teacher of progressive shrinking;
    * ``--estimator train``: the largest network trained at the short-training batch;
    * the final training (the chosen network may be the largest) and the references' trainings, or their
      inference when they are only measured.

    The defaults (2 classes, 1 channel) are a lower bound before the data is read; :func:`run_job` checks again
    with the data's. Returns the estimates in GB by stage.
    """
    space, size = job.space, job.space.input_size
    space.check_limits()
    largest = space.arch(space.extreme(True))
    kw = {"input_size": size, "num_classes": num_classes, "in_chans": in_chans}
    out: dict[str, float] = {}
    if job.estimator == "supernet":
        progressive = job.supernet.schedule == "progressive"
        est = estimate_memory(largest, batch=job.supernet.batch_size, training=True, **kw)
        params = supernet_params(space, num_classes=num_classes, in_chans=in_chans, kernel_transform=progressive)
        total = est.total_bytes + 16 * max(0, params - est.params) + (4 * est.params if progressive else 0)
        gb, limit = total / 1e9, MAX_MEMORY_GB.value()
        if gb > limit:
            raise ValueError(
                f"search space {space.name!r}: training its supernet would need about {gb:,.3g} GB ({params:,} "
                f"shared weights, the largest network's activations at batch {job.supernet.batch_size}, "
                f"{size}px), above the limit of {limit:g} GB{_origin()}; use a smaller space "
                f"(widths, expansions, kernels, depths), or raise {MAX_MEMORY_GB.env}=N"
            )  # fmt: skip
        out["supernet"] = gb
    else:
        batch = PROXY_BATCH if job.estimator.startswith("proxy-") else job.estimate.train_batch_size
        what = f"the largest network of space {space.name!r} (--estimator {job.estimator})"
        out[job.estimator] = check_memory(largest, batch=batch, training=True, what=what, **kw).gb
    if job.rerank:
        what = f"the largest network of space {space.name!r} (--rerank: short training)"
        out["rerank"] = check_memory(largest, batch=job.estimate.train_batch_size, training=True, what=what,
                                     **kw).gb  # fmt: skip
    if job.final_epochs:
        cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
        what = f"the largest network of space {space.name!r} (the final training, --final-batch-size)"
        out["final"] = check_memory(largest, batch=cfg.batch_size, training=True, what=what, **kw).gb
    for ref in job.references:
        train = bool(job.final_epochs and job.train_references)
        cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
        try:
            est = check_memory(reference_arch(ref), batch=cfg.batch_size if train else 1, training=train,
                               what=f"reference {ref}", **kw)  # fmt: skip
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith("reference ") else f"reference {ref}: {exc}") from None
        out[f"reference {ref}"] = est.gb
    return out


def _origin() -> str:
    """Where the memory limit in force comes from (`` (80% of … RAM)``), where edgecnn.limits says."""
    origin = getattr(MAX_MEMORY_GB, "origin", None)
    return origin() if callable(origin) else ""


def check_resume_state(job: SearchJob, out: Path) -> None:
    """Before any work, that ``job`` can continue the search state in ``out`` (if it holds one): the file is
    checked field by field and against the job's settings and space (``ValueError`` naming the file and field)."""
    state = out / STATE_FILE
    if state.is_file():
        load_resumable(state, job.space, job.search, job.objective, job.estimate_kind)
    if job.rerank:
        load_trained(out / RERANK_FILE, rerank_recipe(job))  # its short trainings are of this job's recipe
    load_corrections(out / CORRECT_FILE, job.objective.target_ms)  # its rounds, replayed, are of this target


def check_resume_supernet(job: SearchJob, out: Path, *, num_classes: int, in_chans: int) -> None:
    """Before any work, that the ``supernet.pt`` in ``out`` (if any) is of the job's space, data and recipe."""
    path = out / SUPERNET_FILE
    if job.estimator == "supernet" and path.is_file():
        _, doc = load_supernet(path, space=job.space, num_classes=num_classes, in_chans=in_chans)
        if not same_recipe(doc.get("config"), job.supernet):
            raise ValueError(f"{path} was trained with another supernet recipe ({doc.get('config')}); resume with "
                             "the same --supernet-steps/--supernet-schedule/--seed, or pass --overwrite")  # fmt: skip


@dataclass(frozen=True)
class TimeEstimate:
    """A rough estimate of a search's wall time, by stage (see :func:`estimate_time`)."""

    seconds: dict[str, float]  # by stage
    mac_rate: float  # multiply-adds per second of this machine's probe
    threads: int  # torch threads the probe ran with

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def describe(self) -> str:
        """One line: the total, each stage, and how it was derived."""
        parts = ", ".join(f"{k} {_duration(v)}" for k, v in self.seconds.items() if v >= 0.5)
        return (f"estimated time: about {_duration(self.total_s)} ({parts or 'every stage under a second'}); "
                f"rough, within a few times: each stage's multiply-adds at {self.mac_rate / 1e9:.3g} GMAC/s (a dense "
                f"conv probed on {self.threads} thread(s) here) derated {1 / _EFFICIENCY:g}x "
                f"({1 / _SUPERNET_EFFICIENCY:g}x for the supernet), plus a fixed cost per step and candidate; "
                "latency measurements at their --max-seconds cap; new table entries not counted")  # fmt: skip


# How far below a dense 3×3 conv's rate a search runs (measured on mbv3-32 and a tiny space on one CPU thread):
_EFFICIENCY = 1 / 8  # small and depthwise layers, BN, activations, data loading: scoring and plain training
_SUPERNET_EFFICIENCY = 1 / 16  # the supernet's weight slicing and in-place distillation on top
_STEP_S = 0.01  # fixed cost of one optimiser step (Python, the loader)
_SUPERNET_STEP_S = 0.05  # of a supernet step (2 + num_random subnets)
_CANDIDATE_S = 0.05  # of scoring one candidate (extracting it, building it, a task)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


def measure_mac_rate(repeats: int = 3) -> float:
    """Multiply-adds per second of a small dense 3×3 conv on this machine (a probe of ~10 ms)."""
    x, w = torch.randn(8, 32, 16, 16), torch.randn(32, 32, 3, 3)
    macs = 8 * 32 * 32 * 9 * 16 * 16
    best = math.inf
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
        for _ in range(repeats):
            t = time.perf_counter()
            F.conv2d(x, w, padding=1)
            best = min(best, time.perf_counter() - t)
    return macs / max(best, 1e-9)


def estimate_time(job: SearchJob, *, train_images: int, val_images: int, num_classes: int, in_chans: int,
                  mac_rate: float | None = None) -> TimeEstimate:  # fmt: skip
    """The wall time the job implies, by stage — rough (within a few times), from multiply-adds.

    A forward pass costs the network's multiply-adds per image, a training step about 3× (forward and
    backward); a typical candidate costs the mean of the space's smallest and largest networks, a supernet step
    the largest, the smallest and ``num_random`` typical ones. Each stage's multiply-adds are divided by
    ``mac_rate`` (default: :func:`measure_mac_rate`, a dense conv on this machine) derated 8× (16× for the
    supernet) for what a small network spends besides dense convs, plus a fixed cost per step and candidate
    (both measured once on one CPU thread). Latency measurements count at their cap (``job.timing.max_seconds``
    for the calibration, the comparisons' cap per round for the finalists and references); the blocks the table
    lacks, measured as the search meets them, are not counted.
    """
    space, size = job.space, job.space.input_size

    def macs(arch: Any) -> float:
        return float(cost_from_spec(arch, input_size=size, num_classes=num_classes, in_chans=in_chans).macs)

    small, large = macs(space.arch(space.extreme(False))), macs(space.arch(space.extreme(True)))
    mid = (small + large) / 2
    probe = mac_rate or measure_mac_rate()
    rate, sn_rate = probe * _EFFICIENCY, probe * _SUPERNET_EFFICIENCY
    cap, b, e = job.timing.max_seconds, job.search.budget, job.estimate
    s: dict[str, float] = {}
    if job.calibrate:
        s["calibration"] = job.calibrate * cap
    if job.estimator == "supernet":
        sn = job.supernet
        step = sn.batch_size * 3 * (large + small + sn.num_random * mid) / sn_rate + _SUPERNET_STEP_S
        s["supernet"] = sn.steps * step
        s["search"] = b * ((e.recal_batches * e.recal_batch_size + val_images) * mid / rate + _CANDIDATE_S)
    elif job.estimator.startswith("proxy-"):  # one forward and backward of a batch per candidate
        s["search"] = b * (PROXY_BATCH * 3 * mid / rate + _CANDIDATE_S)
    train = e.train_steps * (e.train_batch_size * 3 * mid / rate + _STEP_S) + val_images * mid / rate + _CANDIDATE_S
    if job.estimator == "train":
        s["search"] = b * train
    if job.rerank:
        s["rerank"] = job.rerank * train
    sitting = (FINALIST_ROUNDS - 1) * FINALIST_PAUSE_S  # the pauses between a sitting's rounds
    s["measurements"] = ((job.finalists + len(job.references)) * FINALIST_ROUNDS * COMPARE_TIMING.max_seconds
                         + sitting * (1 + bool(job.references)))  # fmt: skip
    if job.correct:  # at most: each round searches on, re-ranks (new candidates only, in practice) and measures
        per = s.get("search", 0.0) / max(1, b) * job.correct_extra + s.get("rerank", 0.0)
        s["corrections (at most)"] = job.correct * (per + job.finalists * FINALIST_ROUNDS * COMPARE_TIMING.max_seconds
                                                    + sitting)
    if job.final_epochs:
        cfg = job.final_config or TrainConfig(epochs=job.final_epochs)
        steps = math.ceil(train_images / cfg.batch_size)
        s["final training"] = job.final_epochs * (train_images * 3 * mid / rate + steps * _STEP_S)
        if job.train_references and job.references:
            refs = sum(macs(reference_arch(r)) for r in job.references)
            n = len(job.references)
            s["references"] = job.final_epochs * (train_images * 3 * refs / rate + n * steps * _STEP_S)
    return TimeEstimate(s, probe, torch.get_num_threads())
