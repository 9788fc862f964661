"""Latency on the user's device (SPEC §3): measurement, a per-block lookup table, and a predictor with its error.

MACs do not track latency — depthwise and memory-bound layers cost far more
per multiply-add than dense convs, and the runtime matters as much as the
network (MobileNetV3-Large: ~17 ms in PyTorch eager, ~4 ms in ONNX Runtime on
the same 2-core CPU). So we measure, on the device and backend at hand:

* :mod:`~edgecnn.latency.measure` — end-to-end timing, warm-up and repeats until the median settles;
* :mod:`~edgecnn.latency.per_layer` — the same split by block;
* :mod:`~edgecnn.latency.onnx_backend` — ONNX Runtime sessions and profiles;
* :mod:`~edgecnn.latency.fingerprint` — which device/backend/versions a number belongs to;
* :mod:`~edgecnn.latency.table` — the lookup table of block latencies (versioned JSON);
* :mod:`~edgecnn.latency.predict` — a network's latency from its arch spec without building it;
* :mod:`~edgecnn.latency.validate` — the predictor's error on networks sampled from the search space.
"""

from edgecnn.latency.fingerprint import BACKENDS, DeviceFingerprint, fingerprint
from edgecnn.latency.measure import LatencyStats, Measurement, TimingConfig, measure, time_fn
from edgecnn.latency.per_layer import LayerBreakdown, LayerLatency, per_layer
from edgecnn.latency.predict import Prediction, predict
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, new_table
from edgecnn.latency.validate import ValidationReport, sample_archs, validate

__all__ = [
    "BACKENDS",
    "DeviceFingerprint",
    "LatencyStats",
    "LatencyTable",
    "LayerBreakdown",
    "LayerLatency",
    "Measurement",
    "Prediction",
    "TableEntry",
    "TimingConfig",
    "ValidationReport",
    "block_key",
    "fingerprint",
    "measure",
    "new_table",
    "per_layer",
    "predict",
    "sample_archs",
    "time_fn",
    "validate",
]
