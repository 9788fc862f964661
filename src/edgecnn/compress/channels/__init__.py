"""Structured channel pruning on any traced network (docs/design.md §5).

- :mod:`~edgecnn.compress.channels.labels` — the trace run on channel labels;
- :mod:`~edgecnn.compress.channels.components` and :mod:`~edgecnn.compress.channels.groups` —
  the coupled groups (which weights move with a channel) and the reason a group cannot shrink;
- :mod:`~edgecnn.compress.channels.importance` — channel criteria (one record each);
- :mod:`~edgecnn.compress.channels.prune` — plan, then apply (``plan_prune`` / ``prune``);
  :mod:`~edgecnn.compress.channels.prune_alloc` (global or uniform allocation),
  :mod:`~edgecnn.compress.channels.prune_arch` (the result written as an arch string),
  :mod:`~edgecnn.compress.channels.prune_inner` (inner widths of an EdgeNet's blocks).
"""
