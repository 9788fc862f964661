"""Platform-aware architecture search (docs/design.md §6): MnasNet/MobileNetV3's search with OFA's cheap accuracy.

* :mod:`~edgecnn.search.space` — the search spaces (``mbv3-224``, ``mbv3-32``, a user's JSON file);
* :mod:`~edgecnn.search.objective` — ``ACC·(LAT/TAR)^w`` or a hard constraint, the Pareto front;
* :mod:`~edgecnn.search.supernet` — the weight-sharing supernet, channel sorting, ``extract``; its training
  (sandwich rule or progressive shrinking, whose phases :mod:`~edgecnn.search.progressive` holds) and
  checkpoints in :mod:`~edgecnn.search.supernet_train`;
* :mod:`~edgecnn.search.estimate` — supernet scores after BN recalibration, short training, Kendall τ;
* :mod:`~edgecnn.search.evolution` — regularized evolution and random search, resumable;
* :mod:`~edgecnn.search.job` — the whole run of ``edgecnn search`` (the job itself in
  :mod:`~edgecnn.search.job_spec`, the checks before any work in :mod:`~edgecnn.search.job_checks`, measured
  corrections of a hard constraint in :mod:`~edgecnn.search.correct`); :mod:`~edgecnn.search.plot` its plot.

The latency of a candidate comes from :mod:`edgecnn.latency` (the lookup table
of the user's own device, through its latency model).
"""

from edgecnn.search.evolution import Candidate, SearchConfig, SearchResult, run_search
from edgecnn.search.objective import Objective, parse_target, pareto_front
from edgecnn.search.space import MBV3_32_SPACE, MOBILENET_V3_SPACE, SPACES, SearchSpace, StageChoice, get_space
from edgecnn.search.supernet import Supernet
from edgecnn.search.supernet_train import SupernetConfig, train_supernet

__all__ = [
    "MBV3_32_SPACE",
    "MOBILENET_V3_SPACE",
    "SPACES",
    "Candidate",
    "Objective",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "StageChoice",
    "Supernet",
    "SupernetConfig",
    "get_space",
    "parse_target",
    "pareto_front",
    "run_search",
    "train_supernet",
]
