"""The two-fidelity GP surrogate (BoTorch ``SingleTaskMultiFidelityGP``) and its user-facing wrapper.

Kernel (Wu et al. 2019): an ARD RBF kernel (dimension-scaled lengthscale prior) over the design columns times a
``DownsamplingKernel`` on the data fraction and an ``ExponentialDecayKernel`` on the epochs
(``linear_truncated=False``), optionally times a learned fidelity amplitude
(:class:`mfbo.optimize._kernels.FidelityAmplitudeKernel`), so that configurations may differ more at target
than in cheap runs. The GP models ``-g(loss)`` (BoTorch maximises), where ``g`` is ``log``
when every observed loss is positive (losses span orders of magnitude, and diverging runs would otherwise
dominate the fit) and the identity otherwise; the outcome is then standardised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mfbo.optimize._trace import FidelityEncoder

__all__ = ["fit_surrogate", "Surrogate", "uses_log_outcome"]


def uses_log_outcome(y: np.ndarray) -> bool:
    """Whether the GP models ``log(loss)``: only when every observed loss is positive."""
    return bool(np.all(np.asarray(y) > 0))


def fit_surrogate(X: np.ndarray, y: np.ndarray, encoder: FidelityEncoder, *, warm_state: dict | None = None,
                  maxiter: int = 200, discrepancy: bool = False, amplitude: bool = False,
                  runs: np.ndarray | None = None):
    """Fit a ``SingleTaskMultiFidelityGP`` on ``(X, y)``.

    Args:
        X: ``(n, dim)`` encoded inputs (see :class:`FidelityEncoder`).
        y: ``(n,)`` objective values in natural units (lower is better).
        encoder: the encoder (gives the fidelity columns).
        warm_state: a previous model's ``state_dict`` used as the optimiser's starting point when shapes match
            (hyperparameters move little between rounds, so a warm start needs few iterations).
        maxiter: L-BFGS-B iterations of the marginal-likelihood fit; 0 with a usable ``warm_state`` keeps its
            hyperparameters and only conditions the model on ``(X, y)``.
        discrepancy: add the fidelity-discrepancy term (:func:`mfbo.optimize._kernels.discrepancy_kernel`) to
            the kernel, so that cheap runs may disagree with the target differently in different regions.
        amplitude: multiply the kernel by the fidelity amplitude
            (:class:`mfbo.optimize._kernels.FidelityAmplitudeKernel`); False: BoTorch's kernel.
        runs: ``(n,)`` run label of each row (rows of one training run share it): the observation noise then
            has a learned per-run offset (:class:`mfbo.optimize._noise.RunNoiseLikelihood`); None: independent
            noise per row (BoTorch's default likelihood).
    Returns:
        ``(model, log_outcome)``: the fitted model (on ``-g(y)``) and whether ``g`` is log.
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskMultiFidelityGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    log_outcome = uses_log_outcome(y)
    z = -(np.log(y) if log_outcome else y)
    tX = torch.as_tensor(X, dtype=torch.double)
    tY = torch.as_tensor(z, dtype=torch.double).unsqueeze(-1)
    likelihood = None
    if runs is not None:
        from mfbo.optimize._noise import RunNoiseLikelihood

        likelihood = RunNoiseLikelihood(tX, torch.as_tensor(np.asarray(runs)))
    model = SingleTaskMultiFidelityGP(
        tX, tY, data_fidelities=[encoder.data_col] if encoder.data_col is not None else None,
        iteration_fidelity=encoder.iter_col, linear_truncated=False, likelihood=likelihood,
    )
    if amplitude:
        from mfbo.optimize._kernels import amplitude_kernel

        model.covar_module = (model.covar_module * amplitude_kernel(encoder.fidelity_cols)).to(tX)
    if discrepancy:
        from gpytorch.kernels import AdditiveKernel

        from mfbo.optimize._kernels import discrepancy_kernel

        model.covar_module = AdditiveKernel(model.covar_module,
                                            discrepancy_kernel(range(encoder.d), encoder.fidelity_cols)).to(tX)
    warm = False
    if warm_state is not None:
        try:
            own = model.state_dict()
            hyper = {k: v for k, v in warm_state.items()
                     if k in own and own[k].shape == v.shape and "train" not in k and "outcome_transform" not in k}
            model.load_state_dict(hyper, strict=False)
            warm = bool(hyper)
        except (RuntimeError, KeyError):  # a mismatch only loses the warm start
            pass
    if warm and maxiter <= 0:
        model.eval()
        return model, log_outcome
    maxiter = max(int(maxiter), 1)
    if runs is not None and not warm:
        # The independent-noise model is this one with no per-run variance: start from its fit.
        plain, _ = fit_surrogate(X, y, encoder, maxiter=maxiter, discrepancy=discrepancy, amplitude=amplitude)
        model.load_state_dict({k: v for k, v in plain.state_dict().items()
                               if not k.startswith("likelihood.") and "train" not in k
                               and "outcome_transform" not in k}, strict=False)
        model.likelihood.noise_covar.start(plain.likelihood.noise.detach().reshape(-1)[:1], 0.0)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        # One attempt: BoTorch's default retries from random hyperparameters on any optimisation warning
        # (e.g. a line-search stop), which multiplies the fit time and throws the warm start away.
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": int(maxiter), "maxfun": 3 * int(maxiter)}},
                         warning_handler=lambda w: True)
    except Exception:  # noqa: BLE001 - botorch's retry loop already failed; fall back to a fresh fit
        fit_gpytorch_mll(mll)
    model.eval()
    return model, log_outcome


class Surrogate:
    """User-facing view of a fitted surrogate.

    Attributes:
        model: the fitted BoTorch model (on ``-g(loss)``; see module docstring).
        log_outcome: whether ``g`` is log.
        encoder: maps configurations and fidelities to model inputs.
    """

    def __init__(self, model, log_outcome: bool, encoder: FidelityEncoder):
        self.model = model
        self.log_outcome = log_outcome
        self.encoder = encoder

    def _latent(self, X: np.ndarray, observation_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            post = self.model.posterior(torch.as_tensor(X, dtype=torch.double), observation_noise=observation_noise)
            mu = -post.mean.squeeze(-1).numpy()
            var = post.variance.squeeze(-1).clamp_min(0).numpy()
        return mu, var

    def predict(self, configs: Sequence[Mapping[str, Any]], data_fraction: float | None = None,
                epochs: float | None = None, observation_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the objective (its own units) at the given fidelity.

        Args:
            configs: ``n`` design configurations (natural units).
            data_fraction: data fidelity (default: its target).
            epochs: iteration fidelity (default: its target).
            observation_noise: include the inferred observation noise (run-to-run scatter, e.g. training
                seeds): the spread of a new run's value rather than of the latent mean.
        Returns:
            ``(mean, sd)``, each ``(n,)``. With a log-outcome model these are the log-normal mean and sd.
        """
        enc = self.encoder
        frac = enc.data_fraction_default() if data_fraction is None else float(data_fraction)
        ep = enc.epochs_default() if epochs is None else float(epochs)
        X = enc.encode(list(configs), [frac] * len(configs), [ep] * len(configs))
        mu, var = self._latent(X, observation_noise)
        if self.log_outcome:
            mean = np.exp(mu + var / 2)
            sd = np.sqrt(np.expm1(var)) * mean
            return mean, sd
        return mu, np.sqrt(var)

    def inverse_lengthscales(self) -> dict[str, float]:
        """Inverse ARD lengthscales of the design kernel, per design parameter (max over one-hot columns).

        Larger means the objective varies faster along that parameter (in unit-cube coordinates).
        """
        ls = None
        for module in self.model.covar_module.modules():
            if type(module).__name__ in ("MaternKernel", "RBFKernel") and module.lengthscale is not None:
                ls = module.lengthscale.detach().reshape(-1).numpy()
                break
        out: dict[str, float] = {}
        if ls is None:
            return out
        col = 0
        for p in self.encoder.space.design_parameters:
            cols = ls[col: col + p.encoded_dim]
            out[p.name] = float(np.max(1.0 / cols))
            col += p.encoded_dim
        return out

    def noise_sd(self) -> float:
        """The inferred observation-noise standard deviation in the model's outcome units: of
        ``log(loss)`` for a log-outcome model (about the relative scatter of a run's loss, e.g. 0.05
        for 5 %), of the loss otherwise; with per-run noise, a new run's (independent plus per-run part).
        Fitted with the other hyperparameters, not fixed."""
        noise = float(self.model.likelihood.noise.detach().reshape(-1)[0])
        scale = 1.0
        tf = getattr(self.model, "outcome_transform", None)
        if tf is not None and getattr(tf, "stdvs", None) is not None:
            scale = float(tf.stdvs.detach().reshape(-1)[0])
        return float(np.sqrt(max(noise, 0.0)) * scale)

    def fidelity_correlation(self, configs: Sequence[Mapping[str, Any]], data_fraction: float | None = None,
                             epochs: float | None = None) -> float:
        """The learned correlation between a run at the given (lower) fidelity and one at target
        fidelity, latent values of the same design, averaged over ``configs``: how informative a cheap
        run is about the target, as the fitted fidelity kernels say (1: as good as a target run).
        """
        enc = self.encoder
        configs = list(configs)
        frac = enc.data_fraction_default() if data_fraction is None else float(data_fraction)
        ep = enc.epochs_default() if epochs is None else float(epochs)
        n = len(configs)
        lo = torch.as_tensor(enc.encode(configs, [frac] * n, [ep] * n), dtype=torch.double)
        hi = torch.as_tensor(enc.encode(configs, [enc.data_fraction_default()] * n, [enc.epochs_default()] * n),
                             dtype=torch.double)
        k = self.model.covar_module
        with torch.no_grad():
            kxy = k(lo, hi, diag=True).reshape(-1)
            kxx = k(lo, lo, diag=True).reshape(-1)
            kyy = k(hi, hi, diag=True).reshape(-1)
        rho = (kxy / torch.sqrt(kxx * kyy).clamp_min(1e-300)).numpy()
        return float(np.clip(np.mean(rho), -1.0, 1.0))

    def fidelity_hyperparameters(self) -> dict[str, float]:
        """Learned fidelity-kernel parameters (for reports), e.g. ``{"epochs.power": ..., "data_fraction.offset": ...}``.

        With the fidelity amplitude, also ``amplitude.<fidelity>.power`` (> 0: configurations differ more at
        that fidelity's target than below it). With the fidelity-discrepancy term, also
        ``discrepancy.outputscale`` (its amplitude, in standardised outcome units) and
        ``discrepancy.<fidelity>.power`` (how fast it fades towards that target).
        """
        from mfbo.optimize._kernels import FidelityAmplitudeKernel, TargetVanishingKernel

        enc = self.encoder
        out: dict[str, float] = {}
        fidelities = [p.name for p in (enc.data, enc.iter) if p is not None]
        power_prefix = {FidelityAmplitudeKernel: "amplitude", TargetVanishingKernel: "discrepancy"}
        for module in self.model.covar_module.modules():
            kind = type(module).__name__
            if type(module) in power_prefix:
                for name, power in zip(fidelities, module.power.detach().reshape(-1).tolist()):
                    out[f"{power_prefix[type(module)]}.{name}.power"] = float(power)
                continue
            if kind == "ScaleKernel" and any(isinstance(m, TargetVanishingKernel) for m in module.modules()):
                out["discrepancy.outputscale"] = float(module.outputscale.detach().reshape(-1)[0])
                continue
            if kind == "ExponentialDecayKernel" and enc.iter is not None:
                prefix, names = enc.iter.name, ("lengthscale", "offset", "power")
            elif kind == "DownsamplingKernel" and enc.data is not None:
                prefix, names = enc.data.name, ("offset", "power")
            else:
                continue
            for n in names:
                out[f"{prefix}.{n}"] = float(getattr(module, n).detach().reshape(-1)[0])
        return out
