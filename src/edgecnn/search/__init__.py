"""Platform-aware architecture search (SPEC §6): the search space, and later the objective and the search.

``space`` holds the MobileNetV3/MnasNet-style space; the latency of a
candidate comes from :mod:`edgecnn.latency` (a lookup table of the user's own
device).
"""
