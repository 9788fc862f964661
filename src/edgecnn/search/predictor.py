"""An accuracy predictor over a search space's encoding, in the style of Once-for-All (Cai et al. 2020, §3.3).

OFA trains a small MLP on (subnet encoding, measured accuracy) pairs and then
searches on the predictor instead of the network. Here:

* :func:`encode` turns an arch string of a :class:`~edgecnn.search.space.SearchSpace`
  into a fixed-length vector: per stage, a one-hot of every gene over the
  stage's options (depth, kernel, expansion, SE, activation, width) — OFA's
  one-hot encoding of kernel, expansion and depth, with this space's genes;
* :class:`AccuracyPredictor` fits a regressor to (encoding, accuracy) pairs —
  gradient-boosted trees by default (``model="gbt"``, scikit-learn's
  ``GradientBoostingRegressor``: few pairs, no feature scaling) or OFA's small
  MLP (``model="mlp"``) — and then has the estimator interface of
  :mod:`edgecnn.search.estimate` (arch strings → predicted accuracies);
* :func:`cross_validated` scores every pair by a predictor that did not see it
  (``k``-fold), so its rank agreement with the truth is an honest held-out τ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecnn.search.space import GENES, SearchSpace

__all__ = ["AccuracyPredictor", "cross_validated", "encode"]

MODELS = ("gbt", "mlp")


def encode(space: SearchSpace, arch: str) -> np.ndarray:
    """One-hot of every gene of every stage over that stage's options (ValueError for a network not of ``space``)."""
    genome = space.decode(arch)
    parts: list[float] = []
    for stage, choice in zip(space.stages, genome):
        for gene in GENES:
            options = stage.options(gene)
            value = getattr(choice, gene)
            parts.extend(1.0 if _same(value, o) else 0.0 for o in options)
    return np.asarray(parts, dtype=np.float64)


def _same(a: Any, b: Any) -> bool:
    return float(a) == float(b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else a == b


@dataclass
class AccuracyPredictor:
    """Predicted accuracy of arch strings of ``space`` from a regressor fitted on (arch, accuracy) pairs."""

    space: SearchSpace
    model: str = "gbt"  # "gbt" (gradient-boosted trees) or "mlp" (OFA's small MLP)
    seed: int = 0
    _reg: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown predictor model {self.model!r}; valid: {', '.join(MODELS)}")

    def fit(self, archs: list[str], accuracies: list[float]) -> AccuracyPredictor:
        """Fit on the pairs; ValueError for fewer than 3 pairs or lists of different lengths."""
        if len(archs) != len(accuracies) or len(archs) < 3:
            raise ValueError(f"the predictor needs >= 3 (arch, accuracy) pairs of equal count, got {len(archs)} "
                             f"archs and {len(accuracies)} accuracies")  # fmt: skip
        x = np.stack([encode(self.space, a) for a in archs])
        self._reg = self._regressor(len(archs)).fit(x, np.asarray(accuracies, dtype=np.float64))
        return self

    def __call__(self, archs: list[str]) -> list[float]:
        if self._reg is None:
            raise ValueError("the predictor is not fitted yet; call fit(archs, accuracies) first")
        return [float(v) for v in self._reg.predict(np.stack([encode(self.space, a) for a in archs]))]

    def _regressor(self, n: int) -> Any:
        if self.model == "gbt":
            from sklearn.ensemble import GradientBoostingRegressor

            return GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05, subsample=0.8,
                                             min_samples_leaf=max(1, min(3, n // 5)), random_state=self.seed)  # fmt: skip
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.neural_network import MLPRegressor
        from sklearn.preprocessing import StandardScaler

        # OFA's 3 × 400 MLP; with tens of pairs (not OFA's 16 000) it needs standardised targets and strong
        # weight decay (alpha 1.0) to rank at all
        mlp = MLPRegressor(hidden_layer_sizes=(400, 400, 400), alpha=1.0, max_iter=3000, random_state=self.seed)
        return TransformedTargetRegressor(mlp, transformer=StandardScaler())


def cross_validated(space: SearchSpace, archs: list[str], accuracies: list[float], *, k: int = 5,
                    model: str = "gbt", seed: int = 0) -> list[float]:  # fmt: skip
    """Each pair's prediction by a predictor fitted on the other folds (``k``-fold, folds by position mod ``k``)."""
    n = len(archs)
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= the number of pairs ({n}), got k={k}")
    out = [0.0] * n
    for fold in range(k):
        test = [i for i in range(n) if i % k == fold]
        train = [i for i in range(n) if i % k != fold]
        p = AccuracyPredictor(space, model, seed).fit([archs[i] for i in train], [accuracies[i] for i in train])
        for i, v in zip(test, p([archs[i] for i in test])):
            out[i] = v
    return out
