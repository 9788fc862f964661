"""Seeing what a network does (docs/design.md §7): image ↔ map coordinates, CAM / Grad-CAM, overlays, and the plots.

* :mod:`.interp` — pixel ↔ activation-map coordinates under the corner and
  half-pixel conventions, bilinear weights, :func:`upsample` (bilinear and
  nearest-neighbour);
* :mod:`.cam` — :func:`class_activation_map` (CAM, Zhou et al. 2016; Grad-CAM,
  Selvaraju et al. 2017) with the target layer found automatically;
* :mod:`.overlay` — PNG overlays with Pillow; :mod:`.run` — maps, overlays and
  the ``cam`` section of a results document for a batch of stored images;
* :mod:`.plots` — every matplotlib figure (optional ``[plot]`` extra).
"""

from edgecnn.explain.cam import CAM, class_activation_map, find_target_layer
from edgecnn.explain.interp import Grid, upsample

__all__ = ["CAM", "Grid", "class_activation_map", "find_target_layer", "upsample"]
