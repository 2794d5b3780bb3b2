"""TrainConfig: every knob of one SingleNN training run, presets, and the hyperparameter mapping.

The defaults are chosen for the potential they give, measured on the mlearn Si/Mo and OC20 data
(``analysis/bench_potential_quality.py``): GMP fingerprints with MCSH orders 0-4 at 8 widths
(gmpordernorm, 40 features; AMPTorch's seed of orders 0-2 at 5 widths leaves Mo underfitted), no
batch norm (batch statistics of bulk cells whose atoms are all equivalent are degenerate), a 2 x 64
tanh network, small batches (8 images), a force term weighted 0.1 (forces carry 3N labels per image
against one energy), Adam at 5e-3 with a cosine schedule and warm-up, and the weights of the best
validation epoch kept. On the mlearn Si test set, 100 epochs of these give 9.0 meV/atom and
0.100 eV/Å (the released NNP: 5.6 and 0.11).
AMPTorch's exact seed configuration is the preset ``"amptorch"`` (:func:`preset`), used to transfer
a configuration to AMPTorch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfbo.errors import ConfigError

__all__ = [
    "TrainConfig",
    "config_from_hyperparameters",
    "default_fp_params",
    "amptorch_seed_fp_params",
    "make_sigmas",
    "preset",
    "PRESETS",
    "GMP_HYPERPARAMETERS",
    "NETWORK_HYPERPARAMETERS",
]

# AMPTorch's seed probe widths (Å), the fingerprints of the "amptorch" preset.
SEED_SIGMAS = (0.2, 0.69, 1.1, 1.66, 2.66)
# mfbo's default probe widths (Å): 8 linearly spaced from 0.3 to 3.0, with MCSH orders 0-4
# order-normalised (40 features). On the mlearn Mo test set they cut the errors of 100 default
# epochs from 44.6 meV/atom and 0.255 eV/Å to 16.6 and 0.173 against AMPTorch's seed (orders 0-2,
# the 5 widths above); see docs/training.md for Si and OC20.
# (Rounded as make_sigmas rounds, so a study proposing the same widths hits the same cache entries.)
DEFAULT_SIGMAS = tuple(round(0.3 + 2.7 * k / 7, 10) for k in range(8))

ACTIVATIONS = ("tanh", "silu", "gelu", "softplus")
LOSSES = ("mse", "mae", "huber")
SCHEDULERS = ("none", "step", "cosine", "plateau")
TARGET_SCALINGS = ("per_element", "amptorch", "none")
FEATURE_SCALINGS = ("normalize", "standardize", "none")
DTYPES = ("float64", "float32")
FP_SCHEMES = ("gmp", "gmpordernorm")
FORCE_LOSS_ATOMS = ("free", "all")
BATCHNORM_STATS = ("auto", "standard", "detached")

GMP_HYPERPARAMETERS = (
    "fp_scheme",
    "sigma_min",
    "sigma_max",
    "n_sigmas",
    "sigma_spacing",
    "mcsh_order",
    "cutoff",
    "solid_harmonics",
)
NETWORK_HYPERPARAMETERS = (
    "num_layers",
    "num_nodes",
    "activation",
    "batchnorm",
    "dropout",
    "element_outputs",
    "lr",
    "weight_decay",
    "force_coefficient",
    "batch_size",
    "scheduler",
    "scheduler_gamma",
    "scheduler_step_size",
    "warmup_epochs",
    "loss",
)


def _gmp_mcshs(max_order: int, sigmas: list[float]) -> dict:
    # AMPTorch's gmp layout: order n carries groups 1..n (orders 0 and 1 have one group).
    return {str(o): {"groups": list(range(1, max(1, o) + 1)), "sigmas": list(sigmas)} for o in range(max_order + 1)}


def default_fp_params() -> dict:
    """mfbo's default GMP parameters (``gmpordernorm``): MCSH orders 0-4 at :data:`DEFAULT_SIGMAS`,
    cutoff 8 Å, 40 features per atom.

    ``atom_gaussians`` is omitted: the engine then uses the bundled valence densities.
    """
    return {"MCSHs": {"orders": list(range(5)), "sigmas": list(DEFAULT_SIGMAS)}, "cutoff": 8.0}


def amptorch_seed_fp_params() -> dict:
    """AMPTorch's seed GMP parameters (``gmp``, reference set ``a_gmp_seed_c8``, 20 features):
    every group of MCSH orders 0-2 at :data:`SEED_SIGMAS`, cutoff 8 Å."""
    return {"MCSHs": _gmp_mcshs(2, list(SEED_SIGMAS)), "cutoff": 8.0}


@dataclass
class TrainConfig:
    """One SingleNN training run (defaults: the measured best general settings; see module doc).

    Fingerprints:
        fp_scheme: "gmp" or "gmpordernorm"; None (default) reads it off ``fp_params``' layout.
        fp_params: AMPTorch ``fp_params`` layout (``MCSHs``, ``cutoff`` in Å, optional
            ``atom_gaussians`` element -> .g path, ``solid_harmonics``).
    Network (AMPTorch SingleNN: one MLP shared by all elements):
        num_layers, num_nodes: hidden layers x width.
        activation: "tanh", "silu", "gelu" or "softplus".
        batchnorm: BatchNorm1d after every hidden linear layer (AMPTorch's default; off by default
            here: in a bulk cell whose atoms are all equivalent every feature column of a batch is
            constant, its variance 0, and the normalised outputs and their force derivatives blow up).
        dropout: dropout probability after every hidden activation (0 = off).
        element_outputs: one output unit per training element on the shared hidden layers (Liu &
            Kitchin's SingleNN) instead of AMPTorch's single output; ``mfbo export`` names it among the
            settings AMPTorch does not honour.
        batchnorm_stats: "auto" (batch statistics treated as constants in the gradient when forces
            are in the loss, so training forces match the eval-mode model's; standard otherwise),
            "standard" (AMPTorch: gradients through the batch statistics) or "detached".
    Optimisation:
        lr, weight_decay: Adam's (peak learning rate with a warm-up).
        scheduler: "none", "step" (StepLR(scheduler_step_size, scheduler_gamma)), "cosine" (cosine
            annealing from ``lr`` to ``lr * min_lr_ratio`` over ``epochs``, so a shorter run is a prefix
            of a longer one) or "plateau" (lr times ``scheduler_gamma`` after ``scheduler_patience``
            epochs without a better validation score).
        warmup_epochs: linear warm-up of the learning rate over the first epochs (0 = none).
        batch_size: images per batch.
        epochs: epochs of a full run (the epoch fidelity truncates it).
        force_coefficient: weight of the force term: loss = 0.5 * (L_E + force_coefficient * L_F),
            both terms in units of the energy scale (per-atom energies, per-component forces).
        loss: "mse", "mae" or "huber" (quadratic within ``huber_delta`` scaled units, linear beyond:
            robust to the few large-force outliers of high-temperature snapshots).
        get_forces: compute forces at all (needs fingerprint Jacobians); False trains on energies
            only and reports force metrics as None.
        force_loss_atoms: "free" (default; atoms fixed by FixAtoms are excluded) or "all".
        keep_best: at the end, restore the weights of the epoch with the best validation score
            (``val_score`` in the learning curve); False keeps the last epoch's (AMPTorch).
        early_stopping_patience: stop after this many epochs without a better validation score
            (0 = never); the remaining epochs of the curve repeat the best epoch's validation errors.
    Scaling:
        target_scaling: "per_element" (default: per-element reference energies by least squares on
            the training subset, then per-atom scaling), "amptorch" ((E - mean)/std over total
            energies, as AMPTorch) or "none".
        feature_scaling: "normalize" (min-max to ``feature_range``), "standardize" or "none";
            fitted on the training subset only.
        feature_range: target range of "normalize".
        feature_scaling_per_element: fit the feature scaler per element (AMPTorch does).
    Run:
        dtype: "float64" (default) or "float32".
        device: torch device string ("cpu", "cuda", "cuda:1").
        seed: seeds initialisation, shuffling and dropout.
        val_fraction: fraction of the pool held out by :func:`split_train_val`.
        divergence_factor: an epoch whose mean training loss exceeds this multiple of the lowest
            loss so far (the untrained model's first batch, or a finished epoch) counts as a
            blow-up (TrainingDiverged); a NaN/inf batch loss always does.
        num_threads: torch intra-op threads during training (None = leave torch's setting).
        eval_batch_size: images per batch when evaluating validation/test sets.
    """

    fp_scheme: str | None = None
    fp_params: dict = field(default_factory=default_fp_params)
    num_layers: int = 2
    num_nodes: int = 64
    activation: str = "tanh"
    batchnorm: bool = False
    dropout: float = 0.0
    element_outputs: bool = False
    batchnorm_stats: str = "auto"
    lr: float = 5e-3
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    scheduler_gamma: float = 0.5
    scheduler_step_size: int = 10
    scheduler_patience: int = 10
    min_lr_ratio: float = 0.01
    warmup_epochs: int = 3
    batch_size: int = 8
    epochs: int = 100
    force_coefficient: float = 0.1
    loss: str = "mse"
    huber_delta: float = 1.0
    get_forces: bool = True
    force_loss_atoms: str = "free"
    keep_best: bool = True
    early_stopping_patience: int = 0
    target_scaling: str = "per_element"
    feature_scaling: str = "normalize"
    feature_range: tuple = (0.0, 1.0)
    feature_scaling_per_element: bool = True
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 1
    val_fraction: float = 0.1
    divergence_factor: float = 1e4
    num_threads: int | None = None
    eval_batch_size: int = 64

    def __post_init__(self):
        if self.fp_scheme is None and isinstance(self.fp_params, Mapping):
            # Read off the layout, so AMPTorch-style gmp fp_params work without naming the scheme.
            self.fp_scheme = _scheme_of_layout(self.fp_params)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""

        def choice(name, options):
            value = getattr(self, name)
            if value not in options:
                raise ConfigError(f"TrainConfig.{name}={value!r} is not one of {list(options)}")

        choice("fp_scheme", FP_SCHEMES)
        choice("activation", ACTIVATIONS)
        choice("loss", LOSSES)
        choice("scheduler", SCHEDULERS)
        choice("target_scaling", TARGET_SCALINGS)
        choice("feature_scaling", FEATURE_SCALINGS)
        choice("dtype", DTYPES)
        choice("force_loss_atoms", FORCE_LOSS_ATOMS)
        choice("batchnorm_stats", BATCHNORM_STATS)
        if not isinstance(self.fp_params, Mapping) or "MCSHs" not in self.fp_params:
            raise ConfigError("TrainConfig.fp_params must be AMPTorch's fp_params dict with an 'MCSHs' entry")
        if _scheme_of_layout(self.fp_params) != self.fp_scheme:
            raise ConfigError(
                f"TrainConfig.fp_scheme={self.fp_scheme!r} does not match fp_params['MCSHs']: gmpordernorm takes "
                "{'orders': [...], 'sigmas': [...]}, gmp {'0': {'groups': [...], 'sigmas': [...]}, ...}; "
                "change one, or leave fp_scheme out to read it off the layout"
            )
        for name in (
            "num_layers",
            "num_nodes",
            "batch_size",
            "epochs",
            "scheduler_step_size",
            "scheduler_patience",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"TrainConfig.{name}={value!r} must be a positive integer")
        for name in ("warmup_epochs", "early_stopping_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"TrainConfig.{name}={value!r} must be a non-negative integer (0 = off)")
        for name in ("lr", "divergence_factor", "huber_delta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"TrainConfig.{name}={value!r} must be a positive number")
        for name in ("weight_decay", "force_coefficient"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"TrainConfig.{name}={value!r} must be a non-negative number")
        if not 0.0 < float(self.min_lr_ratio) <= 1.0:
            raise ConfigError(f"TrainConfig.min_lr_ratio={self.min_lr_ratio!r} must lie in (0, 1]")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"TrainConfig.dropout={self.dropout!r} must lie in [0, 1)")
        if not 0.0 < float(self.scheduler_gamma) <= 1.0:
            raise ConfigError(f"TrainConfig.scheduler_gamma={self.scheduler_gamma!r} must lie in (0, 1]")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ConfigError(f"TrainConfig.val_fraction={self.val_fraction!r} must lie in (0, 1)")
        lo, hi = (float(x) for x in self.feature_range)
        if not lo < hi:
            raise ConfigError(f"TrainConfig.feature_range={self.feature_range!r} must be (low, high) with low < high")
        if self.num_threads is not None and int(self.num_threads) < 1:
            raise ConfigError(f"TrainConfig.num_threads={self.num_threads!r} must be None or >= 1")
        if not str(self.device).startswith(("cpu", "cuda", "mps")):
            raise ConfigError(f"TrainConfig.device={self.device!r} must be a torch device such as 'cpu' or 'cuda'")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain JSON/TOML-able dict of every field."""
        d = dataclasses.asdict(self)
        d["feature_range"] = [float(x) for x in self.feature_range]
        d["fp_params"] = copy.deepcopy(dict(self.fp_params))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ConfigError naming them.

        A key ``preset`` (a name of :data:`PRESETS`) starts from that preset; the other keys override it.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a TrainConfig must be given as a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        if "preset" in d:
            d = {**_preset_fields(d["preset"]), **{k: v for k, v in d.items() if k != "preset"}}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
        kwargs = {k: _plain(v) for k, v in d.items()}
        if "feature_range" in kwargs:
            kwargs["feature_range"] = tuple(float(x) for x in kwargs["feature_range"])
        if "fp_params" in kwargs:
            kwargs["fp_params"] = copy.deepcopy(dict(kwargs["fp_params"]))
        return cls(**kwargs)

    def replace(self, **changes) -> TrainConfig:
        """A validated copy with some fields changed."""
        d = self.to_dict()
        d.update(changes)
        return TrainConfig.from_dict(d)


# AMPTorch's seed configuration exactly (as far as a TrainConfig can say it): 3 x 10 tanh with batch
# norm whose statistics enter the force gradient, Adam 1e-3 without a schedule, batch 16, MSE with
# force coefficient 0.01 over all atoms, total-energy (E - mean)/std target scaling, last epoch kept.
# Configurations meant for AMPTorch start from it (``mfbo export --format amptorch`` maps the rest).
PRESETS: dict[str, dict[str, Any]] = {
    "amptorch": {
        "fp_scheme": "gmp",
        "fp_params": amptorch_seed_fp_params(),
        "num_layers": 3,
        "num_nodes": 10,
        "activation": "tanh",
        "batchnorm": True,
        "batchnorm_stats": "standard",
        "lr": 1e-3,
        "scheduler": "none",
        "warmup_epochs": 0,
        "batch_size": 16,
        "epochs": 10,
        "force_coefficient": 0.01,
        "loss": "mse",
        "force_loss_atoms": "all",
        "keep_best": False,
        "early_stopping_patience": 0,
        "target_scaling": "amptorch",
        "feature_scaling": "normalize",
        "feature_range": (0.0, 1.0),
        "feature_scaling_per_element": True,
        "element_outputs": False,
    },
}


def _preset_fields(name) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def preset(name: str, **changes) -> TrainConfig:
    """The TrainConfig of a named preset (:data:`PRESETS`), with some fields changed.

    Raises:
        ConfigError: an unknown preset or field (named).
    """
    return TrainConfig.from_dict({**_preset_fields(name), **changes})


def _plain(value):
    """numpy scalars -> Python scalars (hyperparameters often arrive as numpy types)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------- hyperparameters
def _sigmas_of(fp_params: Mapping, fp_scheme: str) -> list[float]:
    mcshs = fp_params["MCSHs"]
    if fp_scheme == "gmpordernorm" or "sigmas" in mcshs:
        return [float(s) for s in mcshs["sigmas"]]
    orders = sorted(mcshs, key=int)
    return [float(s) for s in mcshs[orders[0]]["sigmas"]]


def _max_order_of(fp_params: Mapping, fp_scheme: str) -> int:
    mcshs = fp_params["MCSHs"]
    if fp_scheme == "gmpordernorm" or "orders" in mcshs:
        return int(max(mcshs["orders"]))
    return int(max(int(o) for o in mcshs))


def _scheme_of_layout(fp_params: Mapping) -> str:
    """"gmpordernorm" for ``MCSHs = {"orders": ..., "sigmas": ...}``, else "gmp"."""
    mcshs = fp_params.get("MCSHs") if isinstance(fp_params, Mapping) else None
    return "gmpordernorm" if isinstance(mcshs, Mapping) and "orders" in mcshs else "gmp"


def _spacing_of(sigmas: list[float]) -> str:
    """"linear" when the widths are evenly spaced, else "log" (the spacing a partial change keeps)."""
    steps = np.diff(np.asarray(sigmas, dtype=float))
    return "linear" if len(steps) > 1 and np.allclose(steps, steps[0], rtol=1e-6) else "log"


def make_sigmas(sigma_min: float, sigma_max: float, n_sigmas: int, spacing: str) -> list[float]:
    """``n_sigmas`` probe widths (A) from sigma_min to sigma_max, log- or linearly spaced."""
    if not (sigma_min > 0 and sigma_max > 0):
        raise ConfigError(f"sigma_min={sigma_min!r} and sigma_max={sigma_max!r} must be positive (Angstrom)")
    if sigma_min > sigma_max:
        raise ConfigError(f"sigma_min={sigma_min!r} must not exceed sigma_max={sigma_max!r}")
    if n_sigmas < 1:
        raise ConfigError(f"n_sigmas={n_sigmas!r} must be >= 1")
    if n_sigmas == 1:
        return [round(float(sigma_min), 10)]
    if spacing == "log":
        values = np.geomspace(sigma_min, sigma_max, n_sigmas)
    elif spacing == "linear":
        values = np.linspace(sigma_min, sigma_max, n_sigmas)
    else:
        raise ConfigError(f"sigma_spacing={spacing!r} must be 'log' or 'linear'")
    return [round(float(v), 10) for v in values]


def config_from_hyperparameters(base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """Apply a trial's hyperparameters to a base configuration.

    Args:
        base: the configuration every field not named in ``params`` keeps.
        params: hyperparameter name -> value. GMP names: ``fp_scheme``, ``sigma_min``,
            ``sigma_max`` (A), ``n_sigmas``, ``sigma_spacing`` ("log"/"linear"), ``mcsh_order``
            (0-4, max order; gmp takes every group of orders 0..max), ``cutoff`` (A),
            ``solid_harmonics``. Network names: ``num_layers``, ``num_nodes``, ``activation``,
            ``batchnorm``, ``dropout``, ``lr``, ``weight_decay``, ``force_coefficient``,
            ``batch_size``, ``scheduler``, ``scheduler_gamma``, ``scheduler_step_size``,
            ``warmup_epochs``, ``loss``; ``preset`` (a :data:`PRESETS` name) replaces ``base``. Any other
            TrainConfig field name is accepted as well. GMP names left out keep the base's values
            (sigma range and count are read off the base's sigmas; ``sigma_spacing`` defaults to the
            base's: "linear" when its widths are evenly spaced, else "log").

    Returns:
        A new, validated TrainConfig.

    Raises:
        ConfigError: an unknown name or an invalid value (named).
    """
    params = {k: _plain(v) for k, v in dict(params).items()}
    if "preset" in params:
        # A preset replaces the base; the other names then modify the preset.
        base = preset(params.pop("preset"))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(params) - fields - set(GMP_HYPERPARAMETERS))
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {unknown}; known: {sorted(set(GMP_HYPERPARAMETERS) | fields)}"
        )
    d = base.to_dict()
    for name in ("num_layers", "num_nodes", "batch_size", "scheduler_step_size", "epochs", "warmup_epochs"):
        if name in params:
            value = params[name]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            params[name] = value
    if "batchnorm" in params:
        params["batchnorm"] = bool(params["batchnorm"])
    if "element_outputs" in params:
        params["element_outputs"] = bool(params["element_outputs"])
    for name, value in params.items():
        if name in fields and name not in ("fp_scheme", "fp_params"):
            d[name] = value

    gmp_given = {k: params[k] for k in GMP_HYPERPARAMETERS if k in params}
    if "fp_params" in params:
        d["fp_params"] = copy.deepcopy(dict(params["fp_params"]))
        d["fp_scheme"] = None  # read off the given layout (TrainConfig.__post_init__)
    if gmp_given:
        old = dict(d["fp_params"])
        old_scheme = _scheme_of_layout(old)
        scheme = str(gmp_given.get("fp_scheme", old_scheme))
        if scheme not in FP_SCHEMES:
            raise ConfigError(f"fp_scheme={scheme!r} is not one of {list(FP_SCHEMES)}")
        sigmas = _sigmas_of(old, old_scheme)
        if {"sigma_min", "sigma_max", "n_sigmas", "sigma_spacing"} & set(gmp_given):
            n_raw = gmp_given.get("n_sigmas", len(sigmas))
            if isinstance(n_raw, float) and not n_raw.is_integer():
                raise ConfigError(f"n_sigmas={n_raw!r} must be an integer")
            sigmas = make_sigmas(
                float(gmp_given.get("sigma_min", min(sigmas))),
                float(gmp_given.get("sigma_max", max(sigmas))),
                int(n_raw),
                str(gmp_given.get("sigma_spacing", _spacing_of(sigmas))),
            )
        max_order = int(gmp_given.get("mcsh_order", _max_order_of(old, old_scheme)))
        if not 0 <= max_order <= 4:
            raise ConfigError(f"mcsh_order={max_order!r} must be an integer in 0..4")
        if scheme == "gmp":
            mcshs = _gmp_mcshs(max_order, sigmas)
        else:
            mcshs = {"orders": list(range(max_order + 1)), "sigmas": list(sigmas)}
        new = {k: v for k, v in old.items() if k != "MCSHs"}
        new["MCSHs"] = mcshs
        if "cutoff" in gmp_given:
            cutoff = float(gmp_given["cutoff"])
            if not cutoff > 0:
                raise ConfigError(f"cutoff={cutoff!r} must be positive (Angstrom)")
            new["cutoff"] = cutoff
        if "solid_harmonics" in gmp_given:
            new["solid_harmonics"] = bool(gmp_given["solid_harmonics"])
        d["fp_params"] = new
        d["fp_scheme"] = scheme
    return TrainConfig.from_dict(d)
