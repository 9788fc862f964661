"""edgecnn: make convolutional networks small and fast for the device they run on.

The package follows one data flow: arch spec (:mod:`edgecnn.arch`) -> model
(:mod:`edgecnn.blocks`, :mod:`edgecnn.build`, :mod:`edgecnn.zoo`) -> analysis
-> compression/search -> report.
"""

from edgecnn.arch import ArchSpec, BlockSpec, parse
from edgecnn.build import EdgeNet, build, count_params
from edgecnn.plan import LayerPlan, resolve
from edgecnn.zoo import create

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "EdgeNet",
    "LayerPlan",
    "build",
    "count_params",
    "create",
    "parse",
    "resolve",
]
