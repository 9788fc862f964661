"""Shrinking to a budget: NetAdapt and one-shot pruning (Yang et al. 2018; docs/compress.md).

- :mod:`~edgecnn.compress.netadapt.loop` — NetAdapt: per iteration one proposal per group (and per droppable
  block), short fine-tunes, the best kept;
- :mod:`~edgecnn.compress.netadapt.state` — its resumable state and the record that rebuilds a result;
- :mod:`~edgecnn.compress.netadapt.drop_block` — removing an identity-residual block (depth);
- :mod:`~edgecnn.compress.netadapt.oneshot` — one plan to the budget, the keep ratio bisected;
- :mod:`~edgecnn.compress.netadapt.variants` — pruned variants at random widths (latency calibration).
"""
