"""The one-command tour (``edgecnn demo``): train, analyse, time and explain a network on built-in data.

The pipeline follows the package's data flow — arch spec → model → training →
analysis → latency on this device and its per-block latency table → NetAdapt to half
the baseline's latency → fold BN → ONNX and int8 → evaluation → CAM on a few test
digits of the result → report — on scikit-learn's digits, which
ship with scikit-learn, so it runs on a fresh machine with no download. Its
per-block table puts multiply-adds next to measured milliseconds, which is
the point of the MobileNet design method: MACs do not track latency, and
depthwise and memory-bound layers cost far more per MAC than dense convs
(Howard et al. 2019, §4; Tan et al. 2019, §1).

One function per stage, :func:`~edgecnn.demo.run.run_demo` calling them in order:

- :mod:`edgecnn.demo.config` — :class:`DemoConfig`, :class:`CompressSettings`, :class:`DemoResult` and its rows;
- :mod:`edgecnn.demo.baseline` — data, model and exact costs, training, dynamics (ERF, gradient flow);
- :mod:`edgecnn.demo.latency` — latency per block and on every runtime, the target's choice, the latency table;
- :mod:`edgecnn.demo.compress` — NetAdapt, fold BN, ONNX and int8, evaluation of the result;
- :mod:`edgecnn.demo.cam` — CAM on a few test images;
- :mod:`edgecnn.demo.render` — the console tables and the Markdown report;
- :mod:`edgecnn.demo.run` — :func:`run_demo` and the report stage.

Everything it shows lands in ``out_dir``: ``results.json`` (the results
document, kind ``demo``, see :mod:`edgecnn.run_document`), ``report.html`` rendered
from it by :mod:`edgecnn.report` (tables, plots, CAM overlays), ``report.md``,
the overlays under ``cam/``, the trained checkpoint ``model.pt`` (weights +
arch string), the latency table ``latency_table.json``, the compressed network
``model-netadapt.pt`` with its ``model.onnx`` / ``model-int8.onnx``. Each stage is timed and recorded by
:class:`edgecnn.demo.stage_log.StageLog`.
"""

from edgecnn.demo.baseline import GRADFLOW_BATCH
from edgecnn.demo.compress import compress_stages
from edgecnn.demo.config import BlockRow, CompressSettings, DemoConfig, DemoResult, EpochRow, Network
from edgecnn.demo.latency import TABLE_TIMING, TARGET_NAMES, TIE, fastest
from edgecnn.demo.render import to_markdown
from edgecnn.demo.run import run_demo

_fastest = fastest  # the name before the split into a package (tests import it)

__all__ = ["GRADFLOW_BATCH", "TABLE_TIMING", "TARGET_NAMES", "TIE", "BlockRow", "CompressSettings", "DemoConfig",
           "DemoResult", "EpochRow", "Network", "compress_stages", "fastest", "run_demo", "to_markdown"]
