"""Access to the fitted BoTorch model behind a surrogate: inputs, lengthscales, joint samples, LOO.

The inspect engine needs only ``surrogate.predict(configs, data_fraction, epochs)``;
everything here is optional and degrades to ``None`` (with a reason) when the
surrogate exposes no fitted BoTorch GP. The model's input layout is not assumed:
:func:`find_encoding` tries the plausible layouts (design columns from
``SearchSpace.encode`` followed by the fidelity columns, raw / bounds-normalised /
target-normalised) and keeps the one whose posterior mean reproduces
``surrogate.predict``, so a layout the optimiser changes cannot silently mislabel
a figure.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfbo.optimize import SearchSpace

__all__ = ["ModelAccess", "find_model", "find_encoding"]

# Attribute names under which a surrogate may hold its fitted BoTorch model.
_MODEL_ATTRS = ("model", "botorch_model", "gp", "_model", "_gp")
# Methods a surrogate may offer to map (configs, data_fraction, epochs) to model inputs.
_ENCODE_ATTRS = ("encode", "model_inputs", "to_model_inputs", "encode_inputs")


def find_model(surrogate: Any):
    """The fitted BoTorch ``Model`` behind ``surrogate`` (or the surrogate itself), else None."""
    try:
        from botorch.models.model import Model
    except ImportError:  # pragma: no cover - botorch is a dependency
        return None
    if isinstance(surrogate, Model):
        return surrogate
    for name in _MODEL_ATTRS:
        m = getattr(surrogate, name, None)
        if callable(m) and not isinstance(m, Model):
            try:
                m = m()
            except TypeError:
                continue
        if isinstance(m, Model):
            return m
    return None


@dataclass
class _FidelityMap:
    """Affine map value -> model column: ``col = (value - shift) / scale``."""

    name: str
    column: int
    shift: float
    scale: float

    def to_column(self, v: np.ndarray) -> np.ndarray:
        return (np.asarray(v, dtype=float) - self.shift) / self.scale

    def from_column(self, c: np.ndarray) -> np.ndarray:
        return np.asarray(c, dtype=float) * self.scale + self.shift


def _fidelity_values(space: SearchSpace, data_fraction: float, epochs: float) -> dict[str, float]:
    out = {}
    if space.data_fidelity is not None:
        out[space.data_fidelity.name] = float(data_fraction)
    if space.iteration_fidelity is not None:
        out[space.iteration_fidelity.name] = float(epochs)
    return out


# Links from the GP's latent outcome z ~ N(mu, var) to the objective the surrogate predicts.
# "neglog": the GP models -log(loss) and predict() returns the log-normal mean (mfbo.optimize's choice).
_LINKS = {
    "identity": (lambda mu, var: mu, lambda z: z),
    "neg": (lambda mu, var: -mu, lambda z: -z),
    "neglog": (lambda mu, var: np.exp(-mu + var / 2), lambda z: np.exp(-z)),
    "log": (lambda mu, var: np.exp(mu + var / 2), lambda z: np.exp(z)),
}


def _generic_encoders(space: SearchSpace, d_model: int):
    """Candidate layouts: ``SearchSpace.encode`` columns, then fidelities (raw / bounds- / target-scaled)."""
    fids = list(space.fidelity_parameters)
    n_design = space.encoded_dim
    if d_model != n_design + len(fids):
        return
    maps_per_fid = [[(p, 0.0, 1.0), (p, p.low, p.high - p.low), (p, 0.0, p.target or 1.0)] for p in fids]
    for order in itertools.permutations(range(len(fids))):
        for combo in itertools.product(*maps_per_fid):
            fmaps = [_FidelityMap(name=p.name, column=n_design + order.index(k), shift=s, scale=sc)
                     for k, (p, s, sc) in enumerate(combo)]

            def enc(configs_, df_, ep_, fmaps=fmaps):
                X = np.zeros((len(configs_), d_model))
                X[:, :n_design] = space.encode(configs_)
                vals = _fidelity_values(space, df_, ep_)
                for fm in fmaps:
                    X[:, fm.column] = fm.to_column(vals[fm.name])
                return X

            enc.fidelity_maps = fmaps
            yield enc


def _own_encoders(space: SearchSpace, surrogate: Any):
    """The surrogate's own encoder, when it has one (``surrogate.encoder.encode`` or ``surrogate.encode``)."""
    encoder = getattr(surrogate, "encoder", None)
    if encoder is not None and callable(getattr(encoder, "encode", None)):
        def enc(configs_, df_, ep_, encoder=encoder):
            n = len(configs_)
            return np.asarray(encoder.encode(list(configs_), [df_] * n, [ep_] * n), dtype=float)
        fmaps = []
        for p, attr in ((space.data_fidelity, "data_col"), (space.iteration_fidelity, "iter_col")):
            col = getattr(encoder, attr, None)
            if p is not None and col is not None:
                fmaps.append(_FidelityMap(name=p.name, column=int(col), shift=0.0, scale=float(p.target)))
        enc.fidelity_maps = fmaps
        yield enc
    for name in _ENCODE_ATTRS:
        fn = getattr(surrogate, name, None)
        if callable(fn):
            def own(configs_, df_, ep_, fn=fn):
                out = fn(configs_, df_, ep_)
                return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out, dtype=float)
            own.fidelity_maps = []  # unknown layout: fidelity values cannot be read back
            yield own


def find_encoding(space: SearchSpace, surrogate: Any, model):
    """Find how ``(configs, data_fraction, epochs)`` become model inputs and latent outputs objectives.

    Returns:
        ``(encode, link)`` where ``encode(configs, data_fraction, epochs) -> ndarray (n, d_model)``
        carries ``fidelity_maps`` and ``link`` is a key of ``_LINKS``; or ``(None, None)`` when no
        candidate reproduces ``surrogate.predict`` to 1e-5 relative.
    """
    import torch

    d_model = _train_X(model).shape[-1]
    fids = list(space.fidelity_parameters)
    configs = space.sample(4, seed=123)
    probes = [[p.low + 0.3 * (p.high - p.low), p.target] for p in fids]
    ref = []
    for fs in (itertools.product(*probes) if probes else [()]):
        vals = dict(zip([p.name for p in fids], fs))
        df = vals.get(space.data_fidelity.name) if space.data_fidelity is not None else 1.0
        ep = int(round(vals[space.iteration_fidelity.name])) if space.iteration_fidelity is not None else 1
        mean, _ = surrogate.predict(configs, df, ep)
        ref.append((df, ep, np.asarray(mean, dtype=float).ravel()))

    def check(encode) -> str | None:
        links = set(_LINKS)
        try:
            for df, ep, m_ref in ref:
                X = torch.as_tensor(encode(configs, df, ep), dtype=torch.double)
                with torch.no_grad():
                    post = model.posterior(X)
                    mu = post.mean.detach().cpu().numpy().ravel()
                    var = post.variance.detach().cpu().numpy().ravel()
                tol = 1e-5 * (1e-3 + np.abs(m_ref).max())
                for name in list(links):
                    with np.errstate(over="ignore", invalid="ignore"):
                        m = _LINKS[name][0](mu, var)
                    if m.shape != m_ref.shape or not np.allclose(m, m_ref, rtol=1e-5, atol=tol):
                        links.discard(name)
        except Exception:
            return None
        return next((n for n in _LINKS if n in links), None)

    for enc in itertools.chain(_own_encoders(space, surrogate), _generic_encoders(space, d_model)):
        link = check(enc)
        if link is not None:
            return enc, link
    return None, None


def _train_X(model):
    X = model.train_inputs[0]
    return X


class ModelAccess:
    """What the report can read from a fitted BoTorch GP.

    Args:
        space: the search space.
        surrogate: object with ``predict``; its BoTorch model is found by :func:`find_model`.
    """

    def __init__(self, space: SearchSpace, surrogate: Any):
        self.space = space
        self.model = find_model(surrogate)
        self.encode = None
        self.link = None
        self.reason = None
        if self.model is None:
            self.reason = "the surrogate exposes no fitted BoTorch model"
            return
        self.model.eval()
        try:
            self.encode, self.link = find_encoding(space, surrogate, self.model)
        except Exception as exc:  # a model we cannot read must not break the report
            self.encode = None
            self.reason = f"could not read the model's input layout ({type(exc).__name__}: {exc})"
            return
        if self.encode is None:
            self.reason = "no input layout of the BoTorch model reproduces surrogate.predict"

    @property
    def available(self) -> bool:
        return self.model is not None and self.encode is not None

    # -- fidelity columns ---------------------------------------------------------
    def _fidelity_columns(self) -> list[int]:
        args = getattr(self.model, "_init_args", {}) or {}
        cols = list(args.get("data_fidelities") or [])
        if args.get("iteration_fidelity") is not None:
            cols.append(int(args["iteration_fidelity"]))
        if not cols and self.encode is not None:
            cols = [fm.column for fm in getattr(self.encode, "fidelity_maps", [])]
        d = _train_X(self.model).shape[-1]
        return [c % d for c in cols]

    # -- inverse lengthscales -----------------------------------------------------
    def inverse_lengthscales(self) -> dict[str, float] | None:
        """Inverse ARD lengthscale per design hyperparameter (unit-cube inputs; max over one-hot columns).

        Returns:
            name -> 1/lengthscale, or None when the kernel has no ARD lengthscale over the design columns.
        """
        if self.model is None:
            return None
        d = _train_X(self.model).shape[-1]
        per_col = np.full(d, np.nan)
        for module in self.model.covar_module.modules():
            ls = getattr(module, "lengthscale", None)
            if ls is None or not hasattr(module, "active_dims"):
                continue
            ls = ls.detach().cpu().numpy().reshape(-1)
            dims = module.active_dims
            dims = np.arange(d) if dims is None else dims.cpu().numpy()
            if ls.size == dims.size and ls.size > 1 or (ls.size == 1 and dims.size == 1):
                for c, v in zip(dims, ls):
                    if np.isnan(per_col[c]):
                        per_col[c] = 1.0 / float(v)
        # Input normalisation rescales the lengthscales back to the unit-cube encoding.
        tf = getattr(self.model, "input_transform", None)
        rng = getattr(tf, "ranges", None)
        if rng is not None:
            r = rng.detach().cpu().numpy().reshape(-1)
            if r.size == d:
                per_col = per_col / np.where(r > 0, r, 1.0)
        out = {}
        col = 0
        for p in self.space.design_parameters:
            vals = per_col[col: col + p.encoded_dim]
            col += p.encoded_dim
            if np.all(np.isnan(vals)):
                return None
            out[p.name] = float(np.nanmax(vals))
        return out

    # -- joint posterior samples --------------------------------------------------
    def sample(self, configs: Sequence[dict], data_fraction: float, epochs: float, n_samples: int,
               seed: int = 0) -> np.ndarray | None:
        """Joint posterior samples of the objective, shape ``(n_samples, len(configs))``, or None."""
        if not self.available:
            return None
        import torch

        X = torch.as_tensor(self.encode(configs, data_fraction, epochs), dtype=torch.double)
        # posterior() is already in outcome units (outcome transforms are undone by BoTorch).
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            post = self.model.posterior(X)
            draws = post.rsample(torch.Size([n_samples]))
        z = draws.reshape(n_samples, -1).cpu().numpy()
        with np.errstate(over="ignore"):
            return _LINKS[self.link][1](z)

    # -- leave-one-configuration-out ---------------------------------------------
    def loo(self) -> dict | None:
        """Closed-form leave-one-configuration-out predictions at the fitted hyperparameters.

        All observations of one design configuration (its trace points at every fidelity)
        are held out together, so a trial's own learning curve cannot leak into its
        prediction. For the held-out block ``I``: ``mean_I = y_I - (C^-1)_II^-1 (C^-1 y)_I``,
        ``cov_I = (C^-1)_II^-1`` with ``C`` the noisy training covariance (Rasmussen &
        Williams 2006, sec. 5.4.2, in block form). Reported per configuration at its
        highest-fidelity observation.

        Returns:
            dict with arrays (one entry per configuration) ``observed``, ``predicted`` (the link of
            the latent mean: the median for a log outcome), ``lower``/``upper`` (95% predictive
            interval incl. observation noise, objective units), ``z`` (standardised residual in the
            GP's latent units), ``covered`` (bool), ``data_fraction``, ``epochs`` (NaN where
            unknown); or None when unavailable.
        """
        if self.model is None:
            return None
        import torch

        model = self.model
        with torch.no_grad():
            X = _train_X(model)
            if X.ndim != 2:
                return None
            y = model.train_targets.reshape(-1)
            prior = model.forward(X)
            try:
                marg = model.likelihood(prior, X)
            except Exception:
                marg = model.likelihood(prior)
            C = marg.covariance_matrix.double()
            m = prior.mean.double().reshape(-1)
            n = C.shape[0]
            C = C + 1e-10 * C.diagonal().mean() * torch.eye(n, dtype=C.dtype)
            Cinv = torch.cholesky_inverse(torch.linalg.cholesky(C))
            alpha = Cinv @ (y.double() - m)
            Xn = X.double().cpu().numpy()
            fcols = self._fidelity_columns()
            dcols = [c for c in range(Xn.shape[1]) if c not in fcols]
            keys = [tuple(np.round(r[dcols], 9)) for r in Xn]
            groups: dict[tuple, list[int]] = {}
            for i, k in enumerate(keys):
                groups.setdefault(k, []).append(i)
            if len(groups) < 2:
                return None
            rows, means, variances = [], [], []
            for idx in groups.values():
                ii = torch.as_tensor(idx)
                block = Cinv[ii][:, ii]
                cov = torch.linalg.inv(block)
                mu = y.double()[ii] - cov @ alpha[ii]
                # The configuration's highest-fidelity observation (largest sum of fidelity columns).
                fid_score = Xn[idx][:, fcols].sum(axis=1) if fcols else np.zeros(len(idx))
                j = int(np.argmax(fid_score))
                rows.append(idx[j])
                means.append(float(mu[j]))
                variances.append(float(cov[j, j]))
            rows_t = torch.as_tensor(rows)
            mean_t = torch.as_tensor(means, dtype=torch.double).reshape(-1, 1)
            var_t = torch.as_tensor(variances, dtype=torch.double).reshape(-1, 1)
            obs_t = y.double()[rows_t].reshape(-1, 1)
            mean_u, sd_u, obs_u = self._untransform_with_var(mean_t, var_t, obs_t)
        g = _LINKS[self.link or "identity"][1]
        with np.errstate(over="ignore"):
            a, b = g(mean_u - 1.959964 * sd_u), g(mean_u + 1.959964 * sd_u)
            out = {
                "observed": g(obs_u), "predicted": g(mean_u),
                "lower": np.minimum(a, b), "upper": np.maximum(a, b),
                "z": (obs_u - mean_u) / np.where(sd_u > 0, sd_u, np.inf),
                "covered": np.abs(obs_u - mean_u) <= 1.959964 * sd_u,
                "data_fraction": np.full(len(rows), np.nan), "epochs": np.full(len(rows), np.nan),
            }
        Xraw = Xn[rows]
        tf = getattr(model, "input_transform", None)
        if tf is not None and hasattr(tf, "untransform"):
            try:
                Xraw = tf.untransform(torch.as_tensor(Xraw)).numpy()
            except Exception:
                pass
        for fm in getattr(self.encode, "fidelity_maps", []) if self.encode is not None else []:
            vals = fm.from_column(Xraw[:, fm.column])
            p = self.space[fm.name]
            key = "epochs" if p.fidelity_kind == "iteration" else "data_fraction"
            out[key] = vals
        return out

    def noise_sd(self) -> float | None:
        """Homoscedastic observation-noise sd in the GP's latent outcome units (None if heteroscedastic)."""
        if self.model is None:
            return None
        noise = getattr(self.model.likelihood, "noise", None)
        if noise is None or noise.numel() != 1:
            return None
        sd = float(noise.detach().sqrt())
        stdvs = getattr(getattr(self.model, "outcome_transform", None), "stdvs", None)
        return sd * float(stdvs.reshape(-1)[0]) if stdvs is not None else sd

    def latent(self, configs: Sequence[dict], data_fraction: float, epochs: float):
        """Latent posterior mean and sd (GP outcome units, noise-free), or None."""
        if not self.available:
            return None
        import torch

        X = torch.as_tensor(self.encode(configs, data_fraction, epochs), dtype=torch.double)
        with torch.no_grad():
            post = self.model.posterior(X)
        return post.mean.cpu().numpy().ravel(), post.variance.clamp_min(0).sqrt().cpu().numpy().ravel()

    def to_latent(self, values: np.ndarray) -> np.ndarray:
        """Objective values -> the GP's latent outcome (inverse of the link)."""
        v = np.asarray(values, dtype=float)
        return {"identity": v, "neg": -v, "neglog": -np.log(v), "log": np.log(v)}[self.link or "identity"]

    def _untransform_with_var(self, mean, var, obs):
        tf = getattr(self.model, "outcome_transform", None)
        if tf is None:
            return mean.numpy().ravel(), np.sqrt(var.numpy().ravel()), obs.numpy().ravel()
        means = getattr(tf, "means", None)
        stdvs = getattr(tf, "stdvs", None)
        if means is not None and stdvs is not None:
            mu, s = float(means.reshape(-1)[0]), float(stdvs.reshape(-1)[0])
            return ((mean * s + mu).numpy().ravel(), (var.sqrt() * s).numpy().ravel(),
                    (obs * s + mu).numpy().ravel())
        m_u, v_u = tf.untransform(mean, var)
        o_u, _ = tf.untransform(obs)
        return m_u.numpy().ravel(), v_u.clamp_min(0).sqrt().numpy().ravel(), o_u.numpy().ravel()
