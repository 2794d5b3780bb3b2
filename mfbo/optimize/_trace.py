"""Surrogate inputs: design encoding plus normalised fidelities, and trace-observation expansion.

A row of the surrogate's input ``X`` is ``[x_design (unit cube, d_enc), s_data, s_epochs]`` where each
fidelity is divided by its target, so the target fidelity is 1 (Wu et al. 2019's kernels expect this).
A space lacking one of the two fidelities simply lacks that column.

A trial trained to epoch ``T`` also observed its validation loss after every earlier epoch; those are
cheap, correlated lower-fidelity observations. :func:`trace_epochs` thins the curve to a few
log-spaced epochs (always including ``T``) so the GP stays small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.optimize._space import SearchSpace

__all__ = ["FidelityEncoder", "trace_epochs", "training_rows"]


class FidelityEncoder:
    """Maps (design config, data_fraction, epochs) to the surrogate's input rows and back.

    Args:
        space: the search space (needs at least one fidelity parameter for a multi-fidelity model).
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        self.d = space.encoded_dim
        self.data = space.data_fidelity
        self.iter = space.iteration_fidelity
        col = self.d
        self.data_col = self.iter_col = None
        if self.data is not None:
            self.data_col, col = col, col + 1
        if self.iter is not None:
            self.iter_col, col = col, col + 1
        self.dim = col

    @property
    def fidelity_cols(self) -> list[int]:
        return [c for c in (self.data_col, self.iter_col) if c is not None]

    @property
    def target_fidelities(self) -> dict[int, float]:
        return {c: 1.0 for c in self.fidelity_cols}

    def bounds(self) -> np.ndarray:
        """``(2, dim)`` lower/upper bounds of X (unit cube for design, [low/target, high/target] for fidelities)."""
        lo = np.zeros(self.dim)
        hi = np.ones(self.dim)
        for p, c in ((self.data, self.data_col), (self.iter, self.iter_col)):
            if p is not None:
                lo[c], hi[c] = p.low / p.target, p.high / p.target
        return np.vstack([lo, hi])

    def data_fraction_default(self) -> float:
        return float(self.data.target) if self.data is not None else 1.0

    def epochs_default(self) -> int:
        return int(self.iter.target) if self.iter is not None else 1

    def at_target(self, data_fraction: float, epochs: int) -> bool:
        """Whether a run at ``(data_fraction, epochs)`` is at target fidelity (both fidelities)."""
        return math.isclose(float(data_fraction), self.data_fraction_default()) and int(epochs) == self.epochs_default()

    def encode(self, configs: Sequence[Mapping[str, Any]], data_fraction: Sequence[float],
               epochs: Sequence[float]) -> np.ndarray:
        """Rows ``(n, dim)`` for design configs at the given (natural-unit) fidelities."""
        X = np.zeros((len(configs), self.dim))
        if len(configs):
            X[:, : self.d] = self.space.encode(configs)
        if self.data_col is not None:
            X[:, self.data_col] = np.asarray(data_fraction, dtype=float) / self.data.target
        if self.iter_col is not None:
            X[:, self.iter_col] = np.asarray(epochs, dtype=float) / self.iter.target
        return X

    def decode(self, X: np.ndarray) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """Rows -> (design configs, data fractions, integer epochs), all rounded to feasible values."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        configs = self.space.decode(X[:, : self.d])
        if self.data_col is not None:
            frac = np.clip(X[:, self.data_col] * self.data.target, self.data.low, self.data.high)
        else:
            frac = np.full(len(X), self.data_fraction_default())
        if self.iter_col is not None:
            ep = np.clip(np.rint(X[:, self.iter_col] * self.iter.target), self.iter.low, self.iter.high)
        else:
            ep = np.full(len(X), self.epochs_default())
        return configs, frac, ep.astype(int)

    def round(self, X: np.ndarray) -> np.ndarray:
        """Project rows onto feasible values (rounded ints/epochs, exact one-hot)."""
        configs, frac, ep = self.decode(X)
        return self.encode(configs, frac, ep)


def trace_epochs(n_epochs: int, k: int, first: int = 1) -> list[int]:
    """Up to ``k`` log-spaced epochs in ``[first, n_epochs]``, always including ``n_epochs``.

    Args:
        n_epochs: last epoch run (>= 1).
        k: maximum number of epochs returned (>= 1).
        first: smallest epoch to consider.
    Returns:
        sorted unique epochs (1-based).
    """
    n_epochs = int(n_epochs)
    if k <= 1 or n_epochs <= first:
        return [n_epochs]
    grid = np.exp(np.linspace(math.log(max(first, 1)), math.log(n_epochs), k))
    return sorted({int(round(g)) for g in grid} | {n_epochs})


def training_rows(encoder: FidelityEncoder, trials: Sequence, max_per_trial: int = 5,
                  max_points: int = 250, with_runs: bool = False) -> tuple[np.ndarray, ...]:
    """Surrogate training data from completed trials, with trace observations.

    Args:
        encoder: the input encoder.
        trials: completed :class:`~mfbo.optimize.Trial` objects with non-empty curves.
        max_per_trial: trace points per trial at most (incl. the final epoch).
        max_points: soft cap on the total number of rows; the per-trial count shrinks to honour it
            (each trial keeps at least its final observation).
        with_runs: also return each row's run label.
    Returns:
        ``X (n, dim)`` and ``y (n,)`` (objective values, natural units, finite only), and with ``with_runs``
        ``runs (n,)``: the position of the row's trial in ``trials`` (rows of one training run share it).
    """
    trials = [t for t in trials if t.curve]
    if not trials:
        empty = (np.zeros((0, encoder.dim)), np.zeros(0))
        return (*empty, np.zeros(0, dtype=int)) if with_runs else empty
    k = max(1, min(max_per_trial, max_points // len(trials)))
    if encoder.iter is None:
        k = 1
    configs, fracs, epochs, ys, runs = [], [], [], [], []
    for i, t in enumerate(trials):
        curve = np.asarray(t.curve, dtype=float)
        n = len(curve)
        if encoder.iter is None:
            eps = [n]
        else:
            eps = trace_epochs(n, k, first=int(encoder.iter.low))
        for e in eps:
            v = curve[e - 1]
            if not np.isfinite(v):
                continue
            configs.append(t.params)
            fracs.append(t.data_fraction)
            # epoch values of a curve are exact; with no iteration fidelity the column is absent anyway.
            epochs.append(e)
            ys.append(v)
            runs.append(i)
    X = encoder.encode(configs, fracs, epochs)
    if with_runs:
        return X, np.asarray(ys, dtype=float), np.asarray(runs, dtype=int)
    return X, np.asarray(ys, dtype=float)
