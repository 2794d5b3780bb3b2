"""A small synthetic record in the format of analysis/benchmarks/mlip/record.py (for the replay tests)."""

from __future__ import annotations

import numpy as np

SPACE = {
    "lr": {"type": "float", "bounds": [1e-4, 3e-2], "scale": "log"},
    "num_nodes": {"type": "int", "bounds": [8, 64], "scale": "log"},
    "activation": {"type": "categorical", "choices": ["tanh", "silu"]},
}
METRICS = ["val_energy_mae_per_atom", "val_force_mae_free"]


def true_curve(config: dict, fraction: float, epochs: int) -> np.ndarray:
    """A smooth learning curve: best at lr = 3e-3, wide networks and silu, more data helps."""
    x = np.log10(config["lr"]) + 2.5
    base = 0.05 + 0.1 * x ** 2 + 0.02 * (np.log2(64 / config["num_nodes"])) / 3
    base += 0.01 * (config["activation"] == "tanh")
    base *= 1 + 0.5 * (1 - fraction)
    t = np.arange(1, epochs + 1)
    return base * (1 + 2.0 / t)


def make_records(n_configs: int = 24, seeds=(1, 2, 3), fractions=(0.25, 1.0), epochs: int = 6,
                 noise: float = 0.05, seed: int = 0) -> dict:
    from mfbo.optimize._space import SearchSpace

    rng = np.random.default_rng(seed)
    space = SearchSpace.from_dict(SPACE)
    configs = []
    for i, c in enumerate(space.sample(n_configs, seed=seed)):
        runs = []
        for s in seeds:
            for f in fractions:
                curve = true_curve(c, f, epochs) * np.exp(noise * rng.standard_normal())
                runs.append({"seed": s, "fraction": f, "n_train": int(100 * f),
                             "curves": {"val_energy_mae_per_atom": (0.3 * curve).tolist(),
                                        "val_force_mae_free": (0.7 * curve).tolist()},
                             "epoch_cpu_s": [0.1 * f * (1 + c["num_nodes"] / 64)] * epochs,
                             "epoch_wall_s": [0.2 * f] * epochs, "setup_cpu_s": 0.01, "setup_wall_s": 0.02,
                             "total_cpu_s": 1.0, "total_wall_s": 1.0})
        configs.append({"index": i, "config": c,
                        "featurize": {"n_features": 10, "test_cpu_s": 0.1, "test_wall_s": 0.1,
                                      "pool_cpu_s": 1.0, "pool_wall_s": 1.0},
                        "runs": runs})
    return {"format": "mfbo-mlip-records-1", "name": "mlip_toy", "space": SPACE, "fractions": list(fractions),
            "seeds": list(seeds), "max_epochs": epochs, "metrics": METRICS,
            "default_metric": {"val_energy_mae_per_atom": 1.0, "val_force_mae_free": 1.0},
            "default_clock": "cpu", "configs": configs}
