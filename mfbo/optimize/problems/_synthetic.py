"""Synthetic multi-fidelity problems with known optima: Hartmann-6 and a learning-curve model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mfbo.optimize._space import SearchSpace
from mfbo.optimize.problems._base import Problem

__all__ = ["Hartmann6MF", "LearningCurveProblem"]

# Hartmann-6 constants (Dixon & Szegoe 1978; the standard global-optimisation test function).
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array([
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
])
_H6_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
])
H6_ARGMIN = (0.20168952, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054)


def hartmann6(x: np.ndarray, alpha: np.ndarray = _H6_ALPHA) -> np.ndarray:
    """Hartmann-6 at points ``x`` of shape ``(..., 6)`` with mixing weights ``alpha (..., 4)``; returns ``(...)``."""
    x = np.asarray(x, dtype=float)
    inner = np.sum(_H6_A * (x[..., None, :] - _H6_P) ** 2, axis=-1)  # (..., 4)
    return -np.sum(alpha * np.exp(-inner), axis=-1)


class Hartmann6MF(Problem):
    """Two-fidelity Hartmann-6 (minimise; optimum -3.32237 at target fidelity).

    At data fraction ``s`` and epoch ``t`` (of ``T``) the first two mixing weights are lowered::

        alpha_1 = 1.0 - delta * (1 - s),    alpha_2 = 1.2 - delta * (1 - log(t) / log(T))

    which biases both the value and the location of the minimum; the bias vanishes at ``s = 1, t = T``.
    A configuration-independent decaying term ``c * (t^-1/2 - T^-1/2)`` makes each curve a
    learning curve, and Gaussian noise (sd ``noise_sd``) is added to every epoch. Cost is
    proportional to ``s * t``: ``full_fidelity_cost * s * t / T`` simulated seconds.

    Args:
        seed: noise seed.
        max_epochs: ``T`` (target of the iteration fidelity).
        min_fraction: lower bound of the data fraction.
        delta: strength of the fidelity bias.
        noise_sd: observation-noise standard deviation per epoch.
        full_fidelity_cost: simulated seconds of one target-fidelity run.
    """

    name = "hartmann6_mf"

    def __init__(self, seed: int = 0, max_epochs: int = 27, min_fraction: float = 0.05, delta: float = 0.4,
                 noise_sd: float = 0.01, full_fidelity_cost: float = 600.0):
        super().__init__(seed)
        self.max_epochs = int(max_epochs)
        self.delta = float(delta)
        self.noise_sd = float(noise_sd)
        self.full_fidelity_cost = float(full_fidelity_cost)
        spec: dict[str, Any] = {f"x{i}": {"type": "float", "bounds": [0.0, 1.0]} for i in range(1, 7)}
        spec["data_fraction"] = {"type": "fidelity", "bounds": [float(min_fraction), 1.0], "target": 1.0}
        spec["epochs"] = {"type": "fidelity", "bounds": [1, self.max_epochs], "target": self.max_epochs}
        self.space = SearchSpace.from_dict(spec)
        self.optimizer_location = {f"x{i + 1}": v for i, v in enumerate(H6_ARGMIN)}
        self.optimum_value = float(hartmann6(np.array(H6_ARGMIN)))

    def _evaluate(self, params: Mapping[str, Any], data_fraction: float, epochs: int,
                  rng: np.random.Generator | None) -> tuple[np.ndarray, float]:
        x = np.array([params[f"x{i}"] for i in range(1, 7)], dtype=float)
        t = np.arange(1, epochs + 1, dtype=float)
        T = float(self.max_epochs)
        alpha = np.tile(_H6_ALPHA, (epochs, 1))
        alpha[:, 0] -= self.delta * (1.0 - data_fraction)
        alpha[:, 1] -= self.delta * (1.0 - np.log(t) / math.log(T))
        curve = hartmann6(np.broadcast_to(x, (epochs, 6)), alpha)
        curve = curve + 0.5 * (t ** -0.5 - T ** -0.5)
        if rng is not None and self.noise_sd > 0:
            curve = curve + self.noise_sd * rng.standard_normal(epochs)
        return curve, self.full_fidelity_cost * data_fraction * epochs / T


_ACTIVATION_OFFSET = {"silu": 0.0, "gelu": 0.01, "softplus": 0.03, "tanh": 0.05}


class LearningCurveProblem(Problem):
    """A neural-network-training-like learning-curve problem with a known optimum.

    Seven hyperparameters: ``lr`` (log float), ``batch_size`` (log int), ``num_layers`` (int),
    ``num_nodes`` (log int), ``dropout`` (float), ``weight_decay`` (log float), ``activation``
    (categorical). The loss after epoch ``t`` at data fraction ``s`` is::

        L(t) = V(x) + D(x) * (s^-1/2 - 1) + B * (t_eff^-a(x) - T^-a(x)),    t_eff = t * s^0.3

    - ``V(x) = 0.1 + sum of non-negative penalties``, each zero at ``lr = 2e-3 * sqrt(bs / 32)``,
      ``batch_size = 32``, ``num_layers = 3``, ``num_nodes = 128 * 2^(0.4 (3 - layers))``,
      ``dropout = 0.1``, ``weight_decay = 1e-5``, ``activation = silu``: the target-fidelity optimum
      is exactly 0.1 at ``lr=2e-3, batch_size=32, num_layers=3, num_nodes=128, dropout=0.1,
      weight_decay=1e-5, activation=silu`` (interactions make the landscape non-separable);
    - ``D(x)`` grows with network capacity and shrinks with regularisation, so small data fractions
      favour small networks (the asymptote worsens as the fraction shrinks);
    - the power-law rate ``a(x)`` grows with the learning rate, so short runs favour large rates.

    Noise: multiplicative (sd ``noise_rel`` per epoch) plus a per-run offset (sd ``noise_run``).
    Cost: ``full_fidelity_cost * s * t / T`` simulated seconds.

    Args:
        seed: noise seed.
        max_epochs: ``T``.
        min_fraction: lower bound of the data fraction.
        noise_rel, noise_run: noise levels (see above).
        full_fidelity_cost: simulated seconds of one target-fidelity run.
    """

    name = "learning_curve"

    def __init__(self, seed: int = 0, max_epochs: int = 81, min_fraction: float = 0.05, noise_rel: float = 0.02,
                 noise_run: float = 0.003, full_fidelity_cost: float = 810.0):
        super().__init__(seed)
        self.max_epochs = int(max_epochs)
        self.noise_rel = float(noise_rel)
        self.noise_run = float(noise_run)
        self.full_fidelity_cost = float(full_fidelity_cost)
        self.space = SearchSpace.from_dict({
            "lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
            "batch_size": {"type": "int", "bounds": [8, 256], "scale": "log"},
            "num_layers": {"type": "int", "bounds": [1, 6]},
            "num_nodes": {"type": "int", "bounds": [8, 512], "scale": "log"},
            "dropout": {"type": "float", "bounds": [0.0, 0.5]},
            "weight_decay": {"type": "float", "bounds": [1e-7, 1e-2], "scale": "log"},
            "activation": {"type": "categorical", "choices": ["tanh", "silu", "gelu", "softplus"]},
            "data_fraction": {"type": "fidelity", "bounds": [float(min_fraction), 1.0], "target": 1.0},
            "epochs": {"type": "fidelity", "bounds": [1, self.max_epochs], "target": self.max_epochs},
        })
        self.optimizer_location = {"lr": 2e-3, "batch_size": 32, "num_layers": 3, "num_nodes": 128,
                                   "dropout": 0.1, "weight_decay": 1e-5, "activation": "silu"}
        self.optimum_value = 0.1

    @staticmethod
    def target_value(p: Mapping[str, Any]) -> float:
        """``V(x)``: the noise-free loss at target fidelity."""
        log_lr_opt = math.log10(2e-3 * math.sqrt(p["batch_size"] / 32.0))
        layers = p["num_layers"]
        v = 0.1
        v += 0.08 * (math.log10(p["lr"]) - log_lr_opt) ** 2
        v += 0.02 * (math.log2(p["batch_size"]) - 5.0) ** 2
        v += 0.015 * (layers - 3) ** 2
        v += 0.012 * (math.log2(p["num_nodes"]) - 7.0 - 0.4 * (3 - layers)) ** 2
        v += 0.5 * (p["dropout"] - 0.1) ** 2
        v += 0.01 * (math.log10(p["weight_decay"]) + 5.0) ** 2
        v += _ACTIVATION_OFFSET[p["activation"]]
        return v

    def _evaluate(self, params: Mapping[str, Any], data_fraction: float, epochs: int,
                  rng: np.random.Generator | None) -> tuple[np.ndarray, float]:
        p = params
        T = float(self.max_epochs)
        capacity = p["num_layers"] * math.log2(p["num_nodes"]) / 9.0  # ~0.3 .. 6
        regular = (1.0 - 1.2 * p["dropout"]) * (1.0 - 0.08 * (math.log10(p["weight_decay"]) + 7.0))
        d = 0.02 * (0.3 + capacity) * regular
        rate = 0.3 + 0.5 * min(max((math.log10(p["lr"]) + 4.0) / 3.0, 0.0), 1.0)
        t = np.arange(1, epochs + 1, dtype=float)
        t_eff = t * data_fraction ** 0.3
        curve = (self.target_value(p) + d * (data_fraction ** -0.5 - 1.0)
                 + 0.8 * (t_eff ** -rate - T ** -rate))
        if rng is not None:
            curve = curve * (1.0 + self.noise_rel * rng.standard_normal(epochs))
            curve = curve + self.noise_run * rng.standard_normal()
        return curve, self.full_fidelity_cost * data_fraction * epochs / T
