"""Latency on the user's device (docs/design.md §3): measurement, a per-block lookup table, and a predictor with its error.

MACs do not track latency — depthwise and memory-bound layers cost far more
per multiply-add than dense convs, and the runtime matters as much as the
network (MobileNetV3-Large: ~17 ms in PyTorch eager, ~4 ms in ONNX Runtime on
the same 2-core CPU). So we measure, on the device and backend at hand:

* :mod:`~edgecnn.latency.targets` — the deployment targets (PyTorch eager, ONNX Runtime, ExecuTorch + XNNPACK):
  one module per runtime behind one interface, and their registry;
* :mod:`~edgecnn.latency.timing` — warm-up and repeats until the median settles, optionally normalised by a
  reference workload run around every sample (drift);
* :mod:`~edgecnn.latency.measure` — end-to-end measurement on a target, here or on a device through its agent
  (:mod:`~edgecnn.latency.remote`), as a :class:`~edgecnn.latency.measurement.Measurement`;
* :mod:`~edgecnn.latency.isa` — the CPU's int8 instructions (VNNI, AVX2 only, ARM dot product);
* :mod:`~edgecnn.latency.reference` — that reference workload;
* :mod:`~edgecnn.latency.per_layer` — the same split by block;
* :mod:`~edgecnn.latency.onnx_backend` — ONNX Runtime sessions and profiles;
* :mod:`~edgecnn.latency.fingerprint` — which device/backend/versions a number belongs to;
* :mod:`~edgecnn.latency.table` — the lookup table of block latencies (versioned JSON);
* :mod:`~edgecnn.latency.calibrate` — per-group scales of the table sum fitted on measured networks;
* :mod:`~edgecnn.latency.predict` — a network's latency from its arch spec without building it;
* :mod:`~edgecnn.latency.model` — blocks the table lacks: interpolated across widths (slices and
  interpolation in :mod:`~edgecnn.latency.widths`), else measured;
* :mod:`~edgecnn.latency.validate` — the predictor's error on networks sampled from the search space.
"""

from edgecnn.latency.calibrate import Calibration
from edgecnn.latency.fingerprint import BACKENDS, DeviceFingerprint, fingerprint
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.widths import interpolate
from edgecnn.latency.measure import LatencyStats, Measurement, Reference, TimingConfig, measure, time_fn
from edgecnn.latency.per_layer import LayerBreakdown, LayerLatency, per_layer
from edgecnn.latency.predict import Prediction, predict
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, new_table
from edgecnn.latency.reference import make_reference
from edgecnn.latency.validate import ValidationReport, calibrate, sample_archs, validate

__all__ = [
    "BACKENDS",
    "Calibration",
    "DeviceFingerprint",
    "LatencyStats",
    "LatencyModel",
    "LatencyTable",
    "LayerBreakdown",
    "LayerLatency",
    "Measurement",
    "Prediction",
    "Reference",
    "TableEntry",
    "TimingConfig",
    "ValidationReport",
    "block_key",
    "calibrate",
    "fingerprint",
    "interpolate",
    "make_reference",
    "measure",
    "new_table",
    "per_layer",
    "predict",
    "sample_archs",
    "time_fn",
    "validate",
]
