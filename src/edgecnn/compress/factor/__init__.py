"""Factorisation: layers replaced by cheaper ones, chosen against measured per-layer latency (docs/compress.md).

- :mod:`~edgecnn.compress.factor.lowrank`, :mod:`~edgecnn.compress.factor.lowrank_plan`,
  :mod:`~edgecnn.compress.factor.lowrank_method` — truncated SVD of convs and linears (Jaderberg et al. 2014;
  Zhang et al. 2015), ranks chosen per layer;
- :mod:`~edgecnn.compress.factor.separable` — standard convs → depthwise separable, fitted by least squares;
- :mod:`~edgecnn.compress.factor.layer_timing` — the layers' measured latency, shapes and verdicts;
- :mod:`~edgecnn.compress.factor.by_layer` — the layer methods of ``edgecnn compress`` (``LAYER_METHODS``).
"""
