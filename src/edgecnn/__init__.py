"""edgecnn: make convolutional networks small and fast for the device they run on.

The package follows one data flow: arch spec (:mod:`edgecnn.arch`) -> model
(:mod:`edgecnn.blocks`, :mod:`edgecnn.zoo`) -> analysis -> compression/search -> report.
"""

__version__ = "0.1.0"
