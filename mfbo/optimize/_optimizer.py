"""``MultiFidelityOptimizer``: ask/tell multi-fidelity BO over design parameters, data fraction and epochs.

One round of :meth:`MultiFidelityOptimizer.ask`:

1. surrogate: ``SingleTaskMultiFidelityGP`` refitted on completed trials, each contributing a few
   log-spaced points of its learning curve (trace observations);
2. cost model: log-linear regression of observed wall time, refitted on every completed trial;
3. acquisition: cost-aware GIBBON (or qMFKG) projected to target fidelity, with running trials pending;
   Optionally (``cost_cooling``) the design-dependent part of that cost is cooled as the budget is spent;
4. selection from the scored pool: piBO weight ``prior(x)^(beta / n)`` when a prior is given, constraints
   enforced, points already pending (same design) or already run at the same fidelity never proposed.

Before the model has data, the initial design proposes a handful of cheap low-fidelity points
(scrambled Sobol, or, with a prior, its mode first and then ``prior.sample`` when the prior can sample).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.errors import ConfigError, OptimizerError, SearchSpaceError
from mfbo.optimize._acquisition import ACQUISITIONS, acquisition_pool, weighted_values
from mfbo.optimize._cost import LogLinearCostModel
from mfbo.optimize._space import SearchSpace, sobol
from mfbo.optimize._surrogate import Surrogate, fit_surrogate, uses_log_outcome
from mfbo.optimize._trace import FidelityEncoder, training_rows
from mfbo.optimize._types import Candidate, Trial
from mfbo.optimize.baselines._common import check_budget

__all__ = ["MultiFidelityOptimizer"]

_STATE_VERSION = 1


class MultiFidelityOptimizer:
    """Asynchronous ask/tell multi-fidelity Bayesian optimiser (BoTorch model, Ax record).

    Args:
        space: a :class:`SearchSpace` or its plain-dict form; needs at least one fidelity parameter.
        seed: seed for every random choice (initial design, raw samples, Monte-Carlo acquisition).
        prior: optional object with ``log_prob(configs) -> ndarray (n,)`` (natural units) and optionally
            ``sample(n, seed) -> list[dict]``; weights the acquisition by ``prior^(prior_beta / n)``.
        constraints: objects with ``is_satisfied(configs) -> bool ndarray (n,)``; never violated by a proposal.
        n_initial: size of the initial design (default ``min(10, max(4, n_design + 1))``).
        acquisition: "gibbon" (default) or "kg".
        cost_model: a :class:`LogLinearCostModel`-like object (``fit``, ``predict``, ``module``), default
            a fresh one.
        prior_beta: piBO strength (exponent ``beta / n``, ``n`` set by ``prior_decay``).
        prior_decay: what piBO's ``n`` counts: "trials" (default; every completed trial) or "iterations"
            (1 + completed model-based trials, as in piBO, which does not count its prior-drawn initial
            design; the prior then fades more slowly, which on learning_curve made a far-off prior much
            costlier without a clear gain for a good one).
        trace_points: trace observations per trial (log-spaced epochs, incl. the last).
        max_gp_points: soft cap on surrogate training rows.
        raw_samples: raw pool size scored by the acquisition.
        num_restarts: gradient restarts of the acquisition optimiser.
        num_fantasies: fantasies for "kg".
        initial_fidelity: upper end, as a fraction of each target, of the initial design's fidelities.
        cost_overhead: fixed per-trial cost (FFE) added to the cost model inside the acquisition only.
        refit_every: hyperparameters are fitted from scratch every this many new completed trials and
            warm-started (``warm_maxiter`` L-BFGS-B iterations) in between.
        warm_maxiter: iterations of a warm-started fit.
        hyper_every: between fresh fits, hyperparameters are re-optimised (warm-started) every this many
            new completed trials; in between, the model is conditioned on the new data with the previous
            hyperparameters (they move little from one trial to the next, and the fit dominates the cost).
        fresh_maxiter: iterations of a fresh fit.
        refine: GIBBON's pool refinement, "local" (default) or "gradient" (see ``acquisition_pool``).
        prior_anchor: with a prior, the first trial is the prior's most probable feasible configuration
            (the user's best guess; Optuna users enqueue their default configuration for the same reason,
            and PriorBand samples the prior's mode first). "initial" (default): as the first point of the
            cheap initial design, at the top of its fidelity range; the model then decides whether the
            guess deserves more. "target": one run at target fidelity on top of the initial design (the
            former default; on the priors benchmark it cost a near prior 1 FFE it did not earn back,
            docs/priors.md). "none": no anchor. ``True``/``False`` mean "target"/"none".
        boundary_snap: chance that a coordinate of a local-search perturbation is sent to the bound it
            steps towards (default 0). 0.1 cut yahpo_lcbench's median cost-to-target from 12.8 to 8.1 FFE
            (optimum on 6 of 7 bounds) but slowed problems with interior optima; 0.03 gave 9.3 there with
            hartmann6_mf unchanged, learning_curve and oc20_gmp slower (docs/optimize.md).
        target_separation: a model-based proposal at target fidelity must differ from every design
            already run (or running) there by at least this much in some coordinate of the unit cube
            (default 0.01; 0 disables). Re-running a near-identical design at full cost is the most
            expensive way to learn almost nothing.
        mean_optima: maximisers of the posterior mean at target fidelity (L-BFGS-B from the best
            evaluated designs) added to the anchors of the acquisition's candidate pool (default 2; 0: none).
        recommendation: how :meth:`recommend` picks the configuration to take away: "evaluated"
            (default; the evaluated design with the best posterior mean minus one standard deviation at
            target fidelity), "target" (once any trial ran at target fidelity, the target-fidelity run with
            the lowest observed value, changed only when a new target-fidelity result arrives; before that
            as "evaluated"; it also switches on the verification runs, the fidelity floor after missed
            predictions and the no-covered-rerun rule, see docs/optimize.md) or "optimised" (the posterior mean's maximum over evaluated, quasi-random and
            gradient-refined designs; see :mod:`mfbo.optimize._recommend`).
        recommendation_hold: with ``recommendation="evaluated"``, keep the previous recommendation unless
            the rule's new choice beats it at target fidelity by more than this many standard deviations
            of their posterior difference (:func:`mfbo.optimize._recommend.hold_or_switch`); 0 (default)
            follows the rule at every call. On the four problems made of real trainings (10 seeds,
            ``analysis/bench_recommendation_hold.py``) a hold of 1 cut the recommendation's changes per
            run from 16-35 to 6-13 and the rises of its regret without a new target run from 325 to 118,
            but not its regret: the median final regret went 0.014 -> 0.027 on oc20_gmp, 0.050 -> 0.064
            on mlip_mo, 0.029 -> 0.027 on mlip_oc20, unchanged on mlip_si (docs/optimize.md).
        budget: total budget in FFE when known (``mfbo.minimize`` and studies pass it); enables cost-cooling.
        cost_cooling: with a budget, raise the design-dependent factor of the acquisition's cost to
            ``alpha = (budget - spent) / (budget - spent_initial)`` (clipped to [0, 1]; Lee et al. 2020,
            CArBO). Early on, cheap designs are preferred; by the end only the fidelities' cost counts, so
            an optimum that is expensive to train (large networks, small batches) is still reached. Without
            a budget alpha stays 1. Off by default: on yahpo_lcbench, whose optimum costs 4.3 FFE to train,
            it did not help (median cost-to-target 15.5 FFE against 12.8 without, 10 seeds).
        verify_every: after the initial design, once this many FFE (scaled by how informative the model
            finds cheap runs, see :meth:`verify_interval`) went to runs below target fidelity since the last
            target-fidelity run (with ``recommendation="target"`` only), the design with the largest expected improvement at target fidelity
            (posterior at target, over the best target-fidelity run) runs there next (source "verify"). The recommendation is taken among target-fidelity runs
            once any exist, so these runs are what it stands on. 0 disables (default 1.0).
        effort: "auto" (default): when a round of candidate generation takes longer than
            ``effort_share`` of the median trial's cost (seconds), the next rounds score a quarter of the
            raw pool, skip the posterior-mean maximisers and refit hyperparameters half as often, so the
            optimiser's own time stays small against trials that take a second or two. "full": never.
            Because "auto" follows measured time, two runs with the same seed can part ways at the round
            where one of them switches (each model proposal's ``metadata["effort"]`` says which effort made
            it); with "full" the same seed gives the same trials.
        effort_share: the share of a trial's cost above which ``effort="auto"`` economises (default 0.1).
        fidelity_ramp: with a budget, once this share of it is spent, model-based proposals must cost
            at least ``(share - fidelity_ramp) / (1 - fidelity_ramp)`` of a target-fidelity run
            (nominal cost, as ``fidelity_floor``), rising to target fidelity at the end of the budget;
            None (default) switches it off. Cheap runs can rank configurations far apart well and
            those near the optimum badly (among the best 5 % of configurations of the mlip_mo and
            mlip_oc20 replays, rank correlation with the target is at most 0.44 at a quarter of the
            data; mlip_si 0.87), and the ramp spends the end of a search where runs tell close
            candidates apart; it lowered the final regret there by 14-21 % but quadrupled it on
            oc20_gmp (docs/optimize.md, "Fidelity ramp").
        fidelity_discrepancy: add a fidelity-discrepancy term to the surrogate's kernel
            (:func:`mfbo.optimize._kernels.discrepancy_kernel`): a separate GP over the design that only
            cheap runs see, so that the model need not carry their ranking over to the target. Off by
            default. On the four problems made of real trainings it lowered the median regret at 10 FFE
            (oc20_gmp 0.042 -> 0.0076, mlip_si 0.075 -> 0.032, mlip_mo 0.12 -> 0.094, mlip_oc20 0.027 ->
            0.024; oc20_gmp's median cost-to-target 5.5 FFE, 9 of 10 runs); on hartmann6_mf and
            yahpo_lcbench, whose cheap runs are informative, it made the search much slower
            (docs/optimize.md, "Fidelity discrepancy").
        fidelity_amplitude: multiply the surrogate's kernel by a learned fidelity amplitude
            (:class:`mfbo.optimize._kernels.FidelityAmplitudeKernel`), so that configurations may differ
            more at target than in cheap runs (a one-epoch training barely separates them). False
            (default): BoTorch's multi-fidelity kernel alone.
        run_noise: give the observation noise a learned per-run offset, shared by the rows of one trial's
            learning curve (:class:`mfbo.optimize._noise.RunNoiseLikelihood`: a training seed moves the
            whole curve). False (default): independent noise per row (BoTorch's likelihood). Both options
            together, on the four problems made of real trainings (10 seeds each): oc20_gmp's median
            cost-to-target 13.1 -> 7.7 FFE, the final retrain within 2 predicted sd in 36 of 40 runs
            (33 without), final regret on mlip_si 0.011 -> 0.016 and mlip_oc20 0.027 -> 0.029; on the
            synthetic and YAHPO problems (5 seeds) calibration 8 -> 18 of 20 runs, but yahpo_lcbench's
            median cost-to-target 5.9 -> 14.6 FFE, so neither is the default (docs/optimize.md,
            "Fidelity amplitude and per-run noise").
        fidelity_check: with ``recommendation="target"`` only: predict every target-fidelity run also with
            a GP of the target-fidelity runs alone (once two designs ran there) and, while that model
            gave the higher predictive density to most of the scored runs (at least two), propose
            target-fidelity runs by expected improvement per predicted second on it (source
            "model:target-only") and recommend the target-run design with its best posterior mean
            (:mod:`mfbo.optimize._fidelity_check`). That GP's noise is the multi-fidelity surrogate's,
            raised to what its own misses of target runs show. False (default).
    """

    def __init__(self, space: SearchSpace | Mapping, *, seed: int = 0, prior: Any = None,
                 constraints: Sequence[Any] = (), n_initial: int | None = None, acquisition: str = "gibbon",
                 cost_model: Any = None, prior_beta: float = 10.0, trace_points: int = 5,
                 max_gp_points: int = 250, raw_samples: int = 512, num_restarts: int = 2,
                 num_fantasies: int = 16, initial_fidelity: float = 0.3, cost_overhead: float = 0.05,
                 refit_every: int = 10, warm_maxiter: int = 40, hyper_every: int = 3,
                 fresh_maxiter: int = 100, refine: str = "local", prior_anchor: str | bool = "initial",
                 budget: float | None = None, cost_cooling: bool = False, prior_decay: str = "trials",
                 boundary_snap: float = 0.0, recommendation: str = "evaluated",
                 target_separation: float = 0.01, mean_optima: int = 2, verify_every: float = 1.0,
                 effort: str = "auto", effort_share: float = 0.1, fidelity_ramp: float | None = None,
                 fidelity_discrepancy: bool = False, fidelity_amplitude: bool = False, run_noise: bool = False,
                 recommendation_hold: float = 0.0, fidelity_check: bool = False):
        self.space = SearchSpace.from_dict(space)
        if not self.space.fidelity_parameters:
            raise SearchSpaceError("MultiFidelityOptimizer needs a fidelity parameter (data_fraction and/or "
                                   "epochs) in the search space")
        if acquisition not in ACQUISITIONS:
            raise OptimizerError(f"unknown acquisition {acquisition!r}; choose one of {list(ACQUISITIONS)}")
        if prior is not None and not callable(getattr(prior, "log_prob", None)):
            raise OptimizerError("prior must have a log_prob(configs) method")
        for c in constraints:
            if not callable(getattr(c, "is_satisfied", None)):
                raise OptimizerError(f"constraint {c!r} lacks an is_satisfied(configs) method")
        self.encoder = FidelityEncoder(self.space)
        self.seed = int(seed)
        self.prior = prior
        self.constraints = tuple(constraints)
        n_design = len(self.space.design_parameters)
        self.n_initial = int(n_initial) if n_initial is not None else min(10, max(4, n_design + 1))
        self.acquisition = acquisition
        self.cost_model = cost_model or LogLinearCostModel(self.encoder.d, self.encoder.fidelity_cols)
        self.prior_beta = float(prior_beta)
        self.trace_points = int(trace_points)
        self.max_gp_points = int(max_gp_points)
        self.raw_samples = int(raw_samples)
        self.num_restarts = int(num_restarts)
        self.num_fantasies = int(num_fantasies)
        self.initial_fidelity = float(initial_fidelity)
        self.cost_overhead = float(cost_overhead)
        self.refit_every = int(refit_every)
        self.warm_maxiter = int(warm_maxiter)
        self.hyper_every = max(1, int(hyper_every))
        self.fresh_maxiter = int(fresh_maxiter)
        if refine not in ("local", "gradient"):
            raise OptimizerError(f"refine must be 'local' or 'gradient', got {refine!r}")
        self.refine = refine
        # True/False are the older spellings of "target"/"none" (state dicts written before "initial")
        anchor = prior_anchor
        if isinstance(prior_anchor, bool) or prior_anchor is None:
            anchor = "target" if prior_anchor else "none"
        if anchor not in ("initial", "target", "none"):
            raise OptimizerError(f"prior_anchor must be 'initial', 'target' or 'none', got {prior_anchor!r}")
        self.prior_anchor = anchor
        if prior_decay not in ("iterations", "trials"):
            raise OptimizerError(f"prior_decay must be 'iterations' or 'trials', got {prior_decay!r}")
        self.prior_decay = prior_decay
        if isinstance(boundary_snap, bool) or not isinstance(boundary_snap, (int, float)) \
                or not 0.0 <= boundary_snap <= 1.0:
            raise OptimizerError(f"boundary_snap must be a probability in [0, 1], got {boundary_snap!r}")
        self.boundary_snap = float(boundary_snap)
        from mfbo.optimize._recommend import RECOMMENDATIONS

        if recommendation not in RECOMMENDATIONS:
            raise OptimizerError(f"recommendation must be one of {list(RECOMMENDATIONS)}, got {recommendation!r}")
        self.recommendation = recommendation
        if isinstance(recommendation_hold, bool) or not isinstance(recommendation_hold, (int, float)) \
                or not 0.0 <= recommendation_hold < float("inf"):
            raise OptimizerError(f"recommendation_hold must be a number of standard deviations >= 0, "
                                 f"got {recommendation_hold!r}")
        if recommendation_hold > 0 and recommendation != "evaluated":
            raise OptimizerError(f"recommendation_hold applies to recommendation='evaluated' only (got "
                                 f"{recommendation!r}); set it to 0 or use the evaluated rule")
        self.recommendation_hold = float(recommendation_hold)
        if isinstance(target_separation, bool) or not isinstance(target_separation, (int, float)) \
                or not 0.0 <= target_separation < 1.0:
            raise OptimizerError(f"target_separation must be a number in [0, 1), got {target_separation!r}")
        self.target_separation = float(target_separation)
        if isinstance(mean_optima, bool) or not isinstance(mean_optima, (int, np.integer)) or mean_optima < 0:
            raise OptimizerError(f"mean_optima must be an integer >= 0, got {mean_optima!r}")
        self.mean_optima = int(mean_optima)
        try:  # the check minimize() and the baselines use, raised as this class's own error
            self.budget = check_budget(budget) if budget is not None else None
        except ConfigError as exc:
            raise OptimizerError(f"{exc}; pass None when there is no budget") from None
        self.cost_cooling = bool(cost_cooling)
        if isinstance(verify_every, bool) or not isinstance(verify_every, (int, float)) or verify_every < 0:
            raise OptimizerError(f"verify_every must be a number of FFE >= 0, got {verify_every!r}")
        self.verify_every = float(verify_every)
        if effort not in ("auto", "full"):
            raise OptimizerError(f"effort must be 'auto' or 'full', got {effort!r}")
        self.effort = effort
        if fidelity_ramp is not None and (isinstance(fidelity_ramp, bool) or not isinstance(fidelity_ramp, (int, float))
                                          or not 0.0 <= fidelity_ramp < 1.0):
            raise OptimizerError(f"fidelity_ramp must be a budget share in [0, 1) or None (off), got {fidelity_ramp!r}")
        self.fidelity_ramp = None if fidelity_ramp is None else float(fidelity_ramp)
        if isinstance(effort_share, bool) or not isinstance(effort_share, (int, float)) or effort_share <= 0:
            raise OptimizerError(f"effort_share must be a number > 0, got {effort_share!r}")
        self.effort_share = float(effort_share)
        if not isinstance(fidelity_discrepancy, (bool, np.bool_)):
            raise OptimizerError(f"fidelity_discrepancy must be true or false, got {fidelity_discrepancy!r}")
        self.fidelity_discrepancy = bool(fidelity_discrepancy)
        if not isinstance(fidelity_amplitude, (bool, np.bool_)):
            raise OptimizerError(f"fidelity_amplitude must be true or false, got {fidelity_amplitude!r}")
        self.fidelity_amplitude = bool(fidelity_amplitude)
        if not isinstance(run_noise, (bool, np.bool_)):
            raise OptimizerError(f"run_noise must be true or false, got {run_noise!r}")
        self.run_noise = bool(run_noise)
        if not isinstance(fidelity_check, (bool, np.bool_)):
            raise OptimizerError(f"fidelity_check must be true or false, got {fidelity_check!r}")
        if fidelity_check and recommendation != "target":
            raise OptimizerError(f"fidelity_check applies to recommendation='target' only (got {recommendation!r}): "
                                 "it scores target-fidelity runs, which that rule makes")
        self.fidelity_check = bool(fidelity_check)
        self._target_gp: tuple | None = None
        self._target_gp_key: tuple | None = None
        self._target_gp_noise: float | None = None
        self._incumbent: dict | None = None
        self._incumbent_at = 0
        self._round_seconds: list[float] = []
        self._hyper_at = 0
        self._trials: dict[int, Trial] = {}
        self._n_asked = 0
        self._initial_used = 0
        self._fit_key: tuple | None = None
        self._surrogate: Surrogate | None = None
        self._warm_state: dict | None = None
        self._fresh_at = 0
        self.last_timings: dict[str, float] = {}
        from mfbo.optimize._ax_record import AxRecord

        self._ax = AxRecord(self.space)

    # -- records -------------------------------------------------------------------------
    @property
    def experiment(self):
        """The Ax ``Experiment`` holding every trial, arm and observation."""
        return self._ax.experiment

    @property
    def trials(self) -> list[Trial]:
        """Every trial in index order (status "running", "completed", "failed" or "abandoned")."""
        return [self._trials[i] for i in sorted(self._trials)]

    def _completed(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "completed" and t.curve]

    def _running(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "running"]

    def _get(self, trial_index: int, want_running: bool = True) -> Trial:
        t = self._trials.get(int(trial_index))
        if t is None:
            raise OptimizerError(f"unknown trial index {trial_index}")
        if want_running and t.status != "running":
            raise OptimizerError(f"trial {trial_index} is {t.status}, not running; it cannot be told twice")
        return t

    def _new_trial(self, params: Mapping[str, Any], data_fraction: float, epochs: int, source: str) -> int:
        index = len(self._trials)
        self._ax.new_trial(index, params, data_fraction, epochs, source)
        self._trials[index] = Trial(index=index, params=dict(params), data_fraction=float(data_fraction),
                                    epochs=int(epochs), curve=[], cost=0.0, status="running",
                                    metadata={"source": source})
        return index

    # -- ask -----------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Candidate]:
        """Propose ``n`` trials (registered as running, so later asks treat them as pending).

        Returns:
            ``n`` :class:`Candidate` objects (design params plus data_fraction and epochs).
        """
        out = []
        for _ in range(int(n)):
            t0 = time.perf_counter()
            params, frac, ep, source = self._propose_one()
            idx = self._new_trial(params, frac, ep, source)
            if source.startswith("model"):
                # which effort made this proposal: with effort="auto" it follows measured time, so the
                # record says where a rerun with the same seed may part ways
                self._trials[idx].metadata["effort"] = "economy" if self.last_timings.get("cheap_mode") else "full"
            if self.encoder.at_target(frac, ep):
                self._store_prediction(self._trials[idx])
            out.append(Candidate(trial_index=idx, params=dict(params), data_fraction=float(frac), epochs=int(ep)))
            self._n_asked += 1
            dt = time.perf_counter() - t0
            self.last_timings["ask_s"] = dt
            if source.startswith("model") or source == "verify":
                self._round_seconds.append(dt)
        return out

    def _store_prediction(self, trial: Trial) -> None:
        """Record the surrogate's prediction for a target-fidelity trial before it runs (mean and sd of
        a new run's value, observation noise included, in the objective's units), so that :meth:`tell`
        can score the run against it (``metadata["z"]``)."""
        completed = self._completed()
        if len(completed) < 2:
            return
        try:
            mean, sd = self._fit(completed).predict([trial.params], observation_noise=True)
        except Exception:  # noqa: BLE001 - a prediction is a record, never a reason to fail a proposal
            return
        trial.metadata["prediction"] = {"mean": float(mean[0]), "sd": float(sd[0]), "n_completed": len(completed)}
        if self.fidelity_check:
            pred = self._target_only_prediction(trial.params, completed)
            if pred is not None:
                trial.metadata["prediction_target_only"] = pred
                if self.target_only_mode():
                    trial.metadata["prediction_model"] = "target-only"

    def _target_only_prediction(self, params: Mapping[str, Any], completed: list[Trial]) -> dict | None:
        """The target-only GP's prediction of a new target-fidelity run of ``params``: ``{"mean", "sd"}``
        (objective units, observation noise included), ``"log_outcome"`` and the ``"noise_var"`` it held
        (outcome units, when set); None without that model."""
        fitted = self._target_only_model(completed)
        if fitted is None:
            return None
        from mfbo.optimize._fidelity_check import predict_new_run

        m, s = predict_new_run(*fitted, self.space.encode([params]))
        pred = {"mean": float(m[0]), "sd": float(s[0]), "log_outcome": bool(fitted[1])}
        if self._target_gp_noise is not None:
            pred["noise_var"] = float(self._target_gp_noise)
        return pred

    @staticmethod
    def run_prediction(trial: Trial) -> Mapping | None:
        """The prediction ``{"mean", "sd"}`` stored for a target-fidelity trial before it ran, by the model
        that proposed it: the target-only GP's while the fidelity check had handed proposals to it
        (``metadata["prediction_model"] == "target-only"``), else the multi-fidelity surrogate's; None
        without one."""
        md = trial.metadata
        pred = md.get("prediction_target_only") if md.get("prediction_model") == "target-only" else None
        pred = pred if isinstance(pred, Mapping) else md.get("prediction")
        return pred if isinstance(pred, Mapping) else None

    def _target_only_model(self, completed: list[Trial]) -> tuple | None:
        """``(model, log_outcome)`` of the GP of target-fidelity results alone (refitted when one arrives),
        or None while fewer than ``MIN_TARGET_DESIGNS`` distinct designs ran at target fidelity."""
        from mfbo.optimize._fidelity_check import MIN_TARGET_DESIGNS, fit_target_gp, noise_from_misses

        at_target = [t for t in completed if self._is_target(t)]
        if len(self._unique_designs(at_target)) < MIN_TARGET_DESIGNS:
            return None
        key = tuple(t.index for t in at_target)
        if key != self._target_gp_key:
            values = np.array([t.final_value for t in at_target])
            log_outcome = uses_log_outcome(values)
            surrogate = self._fit(completed)
            noise = None
            # the run-to-run scatter, inferred from every run (in the same outcome units when both use log),
            # raised to what the target-only GP's own misses of target runs say
            if surrogate.log_outcome == log_outcome:
                g = np.log(values) if log_outcome else values
                noise = noise_from_misses(
                    ((float(t.final_value), t.metadata["prediction_target_only"]) for t in at_target
                     if isinstance(t.metadata.get("prediction_target_only"), Mapping)
                     and t.metadata["prediction_target_only"].get("log_outcome") == log_outcome),
                    floor=surrogate.noise_sd() ** 2, cap=float(np.var(g)))
            self._target_gp = fit_target_gp(self.space.encode([t.params for t in at_target]), values, noise)
            self._target_gp_noise = noise
            self._target_gp_key = key
        return self._target_gp

    def fidelity_check_scores(self) -> dict:
        """The fidelity check's standing: ``{"n", "multi_fidelity", "target_only", "target_only_better"}``,
        the number of completed target-fidelity runs both models predicted, each model's summed log
        predictive density of them and the number the target-only model predicted better
        (:func:`mfbo.optimize._fidelity_check.check_scores`)."""
        from mfbo.optimize._fidelity_check import check_scores

        return check_scores((float(t.final_value), t.metadata["prediction"], t.metadata["prediction_target_only"])
                            for t in self._completed() if self._is_target(t)
                            and isinstance(t.metadata.get("prediction"), Mapping)
                            and isinstance(t.metadata.get("prediction_target_only"), Mapping))

    def target_only_mode(self) -> bool:
        """Whether the fidelity check now sends proposals to the target-only model: it is on and that
        model gave the higher predictive density to most of the scored target-fidelity runs (at least
        two; :func:`mfbo.optimize._fidelity_check.target_only_wins`)."""
        from mfbo.optimize._fidelity_check import target_only_wins

        return self.fidelity_check and target_only_wins(self.fidelity_check_scores())

    def predict_target(self, params: Mapping[str, Any]) -> dict | None:
        """The prediction of a new target-fidelity run of ``params`` by the model that now proposes and
        recommends: ``{"mean", "sd", "model"}``, mean and sd in the objective's units (sd includes the
        observation noise), ``model`` "multi-fidelity" or, while the fidelity check has handed proposals
        to it, "target-only" (the GP of target-fidelity runs alone); None before the model has data."""
        completed = self._completed()
        if len(completed) < 2:
            return None
        params = self.space.validate(params)
        pred = self._target_only_prediction(params, completed) if self.target_only_mode() else None
        if pred is not None:
            return {"mean": pred["mean"], "sd": pred["sd"], "model": "target-only"}
        mean, sd = self._fit(completed).predict([params], observation_noise=True)
        return {"mean": float(mean[0]), "sd": float(sd[0]), "model": "multi-fidelity"}

    def cheap_mode(self) -> bool:
        """Whether ``effort="auto"`` economises now: the median of the last five rounds of candidate
        generation took longer than ``effort_share`` of the median completed trial's cost (seconds)."""
        if self.effort != "auto" or not self._round_seconds:
            return False
        costs = [t.cost for t in self.trials if t.status == "completed"]
        if not costs:
            return False
        return float(np.median(self._round_seconds[-5:])) > self.effort_share * float(np.median(costs))

    def _step_seed(self) -> int:
        return (self.seed * 1_000_003 + 7919 * (self._n_asked + 1)) % (2 ** 31 - 1)

    def _feasible(self, configs: list[dict]) -> np.ndarray:
        ok = np.ones(len(configs), dtype=bool)
        if configs:
            for c in self.constraints:
                ok &= np.asarray(c.is_satisfied(configs), dtype=bool).reshape(len(configs))
        return ok

    def _design_key(self, params: Mapping[str, Any]) -> tuple:
        return tuple(np.round(self.space.encode([params])[0], 9))

    def _taken(self) -> tuple[set, set]:
        """Design keys of running trials, and (design, fraction, epochs) keys of completed/running trials."""
        pending = {self._design_key(t.params) for t in self._running()}
        done = {(self._design_key(t.params), round(t.data_fraction, 9), int(t.epochs))
                for t in self.trials if t.status in ("completed", "running")}
        return pending, done

    def _prior_mode(self) -> dict | None:
        """The prior's most probable feasible configuration (its ``mode()`` if it has one, else the most
        probable of 1024 of its samples), or None when the prior cannot say."""
        try:
            mode = getattr(self.prior, "mode", None)
            if callable(mode):
                cands = [self.space.validate(mode())]
            else:
                cands = [self.space.validate(c) for c in self.prior.sample(1024, self.seed + 99)]
        except Exception:  # noqa: BLE001 - the anchor is optional; a prior that cannot sample gives none
            return None
        cands = [c for c, ok in zip(cands, self._feasible(cands)) if ok]
        if not cands:
            return None
        return cands[int(np.argmax(self._prior_logp(cands)))]

    def _initial_point(self) -> tuple[dict, float, int]:
        need = self._initial_used + 1
        configs: list[dict] = []
        if self.prior is not None and callable(getattr(self.prior, "sample", None)):
            try:
                drawn = self.prior.sample(max(4 * need, 16), self.seed)
                configs = [self.space.validate(c) for c in drawn]
            except Exception:  # noqa: BLE001 - a prior that cannot sample falls back to Sobol
                configs = []
        configs += self.space.sample(max(64, 8 * need), seed=self.seed)
        feas = self._feasible(configs)
        configs = [c for c, f in zip(configs, feas) if f]
        pending, done = self._taken()
        configs = [c for c in configs if self._design_key(c) not in pending]
        if not configs:
            raise OptimizerError("no configuration of the initial design satisfies the constraints")
        cfg = configs[min(self._initial_used, len(configs) - 1)]
        u = sobol(2, 64, self.seed + 1)[self._initial_used % 64]
        self._initial_used += 1
        frac, ep = self._low_fidelity(u)
        return cfg, frac, ep

    def _low_fidelity(self, u: np.ndarray) -> tuple[float, int]:
        enc = self.encoder
        frac, ep = enc.data_fraction_default(), enc.epochs_default()
        if enc.data is not None:
            p = enc.data
            hi = max(p.low, min(p.high, self.initial_fidelity * p.target))
            frac = float(p.low + u[0] * (hi - p.low))
        if enc.iter is not None:
            p = enc.iter
            hi = max(p.low, min(p.high, self.initial_fidelity * p.target))
            ep = int(np.clip(np.rint(p.low + u[1] * (hi - p.low)), p.low, p.high))
        return frac, ep

    def _propose_one(self) -> tuple[dict, float, int, str]:
        completed = self._completed()
        # a target-fidelity anchor comes on top of the n_initial cheap design; a cheap one is part of it
        n_live = sum(t.status != "failed" and not (self.prior_anchor == "target"
                                                   and t.metadata.get("source") == "prior-anchor")
                     for t in self.trials)
        if self.prior is not None and self.prior_anchor != "none" and not self.trials:
            cfg = self._prior_mode()
            if cfg is not None:
                enc = self.encoder
                if self.prior_anchor == "target":
                    return cfg, enc.data_fraction_default(), enc.epochs_default(), "prior-anchor"
                # the top of the initial design's fidelity range: the best-informed of its cheap looks
                frac, ep = self._low_fidelity(np.ones(2))
                return cfg, frac, ep, "prior-anchor"
        if n_live < self.n_initial or len(completed) < 2:
            cfg, frac, ep = self._initial_point()
            return cfg, frac, ep, "initial"
        enc = self.encoder
        if self.target_only_mode():
            point = self._target_only_point(completed)
            if point is not None:
                return point, enc.data_fraction_default(), enc.epochs_default(), "model:target-only"
        verify = self._verification_point(completed)
        if verify is not None:
            return verify, enc.data_fraction_default(), enc.epochs_default(), "verify"
        return self._model_point(completed)

    def _is_target(self, t: Trial) -> bool:
        return self.encoder.at_target(t.data_fraction, t.epochs)

    def verify_interval(self, surrogate: Surrogate | None = None) -> float:
        """FFE of runs below target fidelity between two verification runs: ``verify_every`` times
        ``rho^2 / (1 - rho^2)`` (clipped to [0.25, 2]), ``rho`` the surrogate's learned correlation between
        the median fidelity of the cheaper runs and the target. Cheap runs that tell little about the
        target (small ``rho``) send budget up sooner; ``rho = 0.71`` gives ``verify_every`` itself. Halved
        while the last target-fidelity run missed its prediction by more than two sd."""
        completed = self._completed()
        cheap = [t for t in completed if not self._is_target(t)]
        if surrogate is None or not cheap:
            return self.verify_every
        frac = float(np.median([t.data_fraction for t in cheap]))
        ep = float(np.median([t.epochs for t in cheap]))
        try:
            rho = surrogate.fidelity_correlation(self._unique_designs(completed)[:32], frac, ep)
        except Exception:  # noqa: BLE001 - a kernel without a usable covariance keeps the plain interval
            return self.verify_every
        r2 = min(max(rho, 0.0) ** 2, 0.999)
        self.last_timings["fidelity_correlation"] = rho
        interval = self.verify_every * float(np.clip(r2 / (1.0 - r2), 0.25, 2.0))
        misses = self._target_misses()
        # the last target-fidelity run missed its prediction: the cheap runs misled; verify sooner
        return interval / 2.0 if misses and misses[-1] else interval

    def _verification_point(self, completed: list[Trial]) -> dict | None:
        """The design to run at target fidelity now, or None (see ``verify_every``)."""
        if self.recommendation != "target" or self.verify_every <= 0 or self.cost_model.n_obs == 0:
            return None
        live = [t for t in self.trials if t.status in ("completed", "running")]
        last_target = max((t.index for t in live if self._is_target(t)), default=-1)
        unit = max(self.full_fidelity_cost(), 1e-12)
        since = 0.0
        for t in live:
            if t.index > last_target and not self._is_target(t):
                if t.status == "completed":
                    since += t.cost / unit
                else:
                    X = self.encoder.encode([t.params], [t.data_fraction], [t.epochs])
                    since += float(self.cost_model.predict(X)[0]) / unit
        surrogate = self._fit(completed)
        if since < self.verify_interval(surrogate):
            return None
        return self._target_ei_point(surrogate, completed)

    def _target_ei_point(self, surrogate: Surrogate, completed: list[Trial]) -> dict | None:
        """The design maximising expected improvement at target fidelity over the best target-fidelity
        run (by posterior mean; before any, the best evaluated design's), among the candidates of
        :meth:`_target_candidates` around the five best designs; None when nothing qualifies."""
        evaluated = self._unique_designs(completed)
        best = self._best_observed_designs(surrogate, completed, k=5)
        configs, ok = self._target_candidates(evaluated, best, self._step_seed() + 31)
        at_target = [t.params for t in completed if self._is_target(t)]
        best_f = float(np.max(self._target_mean(surrogate, self.space.encode(at_target or evaluated))))
        X = self._at_target(self.space.encode(configs))
        return self._ei_argmax(surrogate.model, X, best_f, configs, ok)

    def _target_only_point(self, completed: list[Trial]) -> dict | None:
        """The design maximising expected improvement per predicted second (:meth:`_target_log_cost`) under
        the GP of target-fidelity runs alone, over its best posterior mean among them, from the
        candidates of :meth:`_target_candidates` around its five best target-run designs and then around
        the two best candidates (Gaussian steps of 0.03); None when nothing qualifies or the model is not
        available."""
        ranked = self._target_only_means(completed)
        if ranked is None:
            return None
        model, ran, mean = ranked
        order = np.argsort(-mean)
        best_f = float(mean[order[0]])
        seed = self._step_seed() + 37
        configs, ok = self._target_candidates(self._unique_designs(completed), [ran[i] for i in order[:5]], seed)
        first = self._ei_argmax(model, self.space.encode(configs), best_f, configs, ok, top=2,
                                log_cost=self._target_log_cost(configs))
        if first is None:
            return None
        configs2, ok2 = self._target_candidates(first, first, seed + 1, n_sobol=0, step=0.03)
        second = self._ei_argmax(model, self.space.encode(configs2), best_f, configs2, ok2, top=1,
                                 log_cost=self._target_log_cost(configs2))
        return second[0] if second else first[0]

    def _target_log_cost(self, configs: list[dict]) -> np.ndarray | None:
        """``(n,)`` log predicted cost (s) of a target-fidelity run of each config, its design-dependent
        part raised to :meth:`design_cost_exponent` (1 unless ``cost_cooling``); None before the cost
        model has data. The target-only acquisition subtracts it from log EI (improvement per second):
        a design's network size and fingerprint count set what a target run costs (0.4-2 FFE among the
        target runs of mlip_oc20 replays), and by EI alone one traced run spent its last 20 FFE on ten
        runs of 2 FFE each."""
        if self.cost_model.n_obs == 0 or not configs:
            return None
        return np.log(np.maximum(self._target_run_cost(configs, self.design_cost_exponent()), 1e-12))

    def _target_candidates(self, designs: list[dict], best: list[dict], seed: int, n_sobol: int = 256,
                           step: float = 0.1) -> tuple[list[dict], np.ndarray]:
        """Candidates for a target-fidelity run: ``designs``, ``n_sobol`` Sobol designs and 24 Gaussian
        perturbations (``step`` of each unit range) of each of ``best``; with the ``(n,)`` mask of those
        feasible, not pending and not within ``target_separation`` of a target-fidelity run."""
        enc = self.encoder
        configs = list(designs) + (self.space.sample(n_sobol, seed=seed) if n_sobol else [])
        if best:
            rng = np.random.default_rng(seed)
            A = np.repeat(self.space.encode(best), 24, axis=0)
            configs += self.space.decode(np.clip(A + rng.normal(0, step, A.shape), 0, 1))
        rows = np.round(self.space.encode(configs), 9)
        ok = self._feasible(configs)
        pending, _ = self._taken()
        ones = np.ones(len(configs))
        ok &= ~self._near_target_runs(rows, ones * enc.data_fraction_default(), ones * enc.epochs_default())
        for i in np.flatnonzero(ok):
            ok[i] = tuple(rows[i]) not in pending
        return configs, ok

    @staticmethod
    def _ei_argmax(model, X: np.ndarray, best_f: float, configs: list[dict], ok: np.ndarray,
                   top: int | None = None, log_cost: np.ndarray | None = None):
        """The allowed config (``ok``) with the largest ``LogExpectedImprovement`` of ``model`` at the
        ``(n, dim)`` model inputs ``X`` over ``best_f`` (maximisation convention), less ``log_cost``
        (``(n,)``, when given: EI per unit cost); with ``top``, a list of the ``top`` best. None when
        nothing qualifies."""
        import torch
        from botorch.acquisition import LogExpectedImprovement

        if not ok.any():
            return None
        with torch.no_grad():
            ei = LogExpectedImprovement(model, best_f=best_f)(torch.as_tensor(X).unsqueeze(-2)).numpy()
        if log_cost is not None:
            ei = ei - log_cost
        ei = np.where(ok & np.isfinite(ei), ei, -np.inf)
        if not np.isfinite(ei).any():
            return None
        if top is None:
            return dict(configs[int(np.argmax(ei))])
        return [dict(configs[i]) for i in np.argsort(-ei)[:top] if np.isfinite(ei[i])]

    # -- model ---------------------------------------------------------------------------
    def _fit(self, completed: list[Trial]) -> Surrogate:
        key = tuple(t.index for t in completed)
        if self._surrogate is not None and key == self._fit_key:
            return self._surrogate
        t0 = time.perf_counter()
        X, y, runs = training_rows(self.encoder, completed, self.trace_points, self.max_gp_points, with_runs=True)
        if len(y) < 2:
            raise OptimizerError("fewer than two finite observations; cannot fit the surrogate")
        # Fresh fits every `refit_every` completed trials, warm-started short fits every `hyper_every`, and
        # in between only conditioning on the new rows (maxiter 0 keeps the previous hyperparameters).
        n = len(completed)
        fresh = (self._warm_state is None or n - self._fresh_at >= self.refit_every
                 # the outcome transform changed (log <-> identity): old hyperparameters mean nothing
                 or (self._surrogate is not None and uses_log_outcome(y) != self._surrogate.log_outcome))
        if fresh:
            maxiter = self.fresh_maxiter
        elif n - self._hyper_at >= self.hyper_every * (2 if self.cheap_mode() else 1):
            maxiter = self.warm_maxiter
        else:
            maxiter = 0
        model, log_outcome = fit_surrogate(X, y, self.encoder, warm_state=None if fresh else self._warm_state,
                                           maxiter=maxiter, discrepancy=self.fidelity_discrepancy,
                                           amplitude=self.fidelity_amplitude,
                                           runs=runs if self.run_noise else None)
        if fresh:
            self._fresh_at = n
        if maxiter:
            self._hyper_at = n
        self._warm_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._surrogate = Surrogate(model, log_outcome, self.encoder)
        self._fit_key = key
        self.last_timings["fit_s"] = time.perf_counter() - t0
        self.last_timings["n_gp_points"] = float(len(y))
        return self._surrogate

    def full_fidelity_cost(self, design_exponent: float = 1.0) -> float:
        """Predicted cost (s) of one target-fidelity run, averaged over a fixed Sobol sample of designs
        (``design_exponent``: see :meth:`LogLinearCostModel.predict`)."""
        return float(np.mean(self._target_run_cost(self.space.sample(64, seed=self.seed + 12345), design_exponent)))

    def _target_run_cost(self, configs: list[dict], design_exponent: float = 1.0) -> np.ndarray:
        """``(n,)`` predicted cost (s) of a target-fidelity run of each config (``design_exponent``: see
        :meth:`LogLinearCostModel.predict`; at 1 not passed, which a user's cost model need not take)."""
        enc = self.encoder
        n = len(configs)
        X = enc.encode(configs, [enc.data_fraction_default()] * n, [enc.epochs_default()] * n)
        if design_exponent == 1.0:
            return np.asarray(self.cost_model.predict(X), dtype=float)
        return np.asarray(self.cost_model.predict(X, design_exponent=design_exponent), dtype=float)

    def design_cost_exponent(self) -> float:
        """Cost-cooling exponent alpha in [0, 1] on the design-dependent cost (1 without a budget).

        ``alpha = (budget - spent) / (budget - spent_initial)``, spent counted in FFE of the current cost
        model over every finished trial, ``spent_initial`` over the initial design (and prior anchor).
        """
        if (not self.cost_cooling or self.budget is None or self.cost_model.n_obs == 0
                # a user's cost model need not know the exponent
                or not isinstance(self.cost_model, LogLinearCostModel)):
            return 1.0
        unit = max(self.full_fidelity_cost(), 1e-12)
        finished = [t for t in self.trials if t.status in ("completed", "failed")]
        spent = sum(t.cost for t in finished) / unit
        initial = sum(t.cost for t in finished
                      if t.metadata.get("source") in ("initial", "prior-anchor")) / unit
        span = self.budget - initial
        if span <= 0:
            return 0.0
        return float(np.clip((self.budget - spent) / span, 0.0, 1.0))

    def _raw_pool(self, n: int, seed: int, anchors: list[dict]) -> np.ndarray:
        """Rounded raw rows: Sobol designs, prior samples, and perturbations of the best designs."""
        enc = self.encoder
        configs = self.space.sample(n, seed=seed)
        if self.prior is not None and callable(getattr(self.prior, "sample", None)):
            try:
                configs += [self.space.validate(c) for c in self.prior.sample(n // 4, seed)]
            except Exception:  # noqa: BLE001 - sampling is optional for a prior
                pass
        Xd = self.space.encode(configs)
        rng = np.random.default_rng(seed)
        if anchors:
            A = self.space.encode(anchors)
            local = np.repeat(A, max(1, n // (4 * len(A))), axis=0)
            local = np.clip(local + rng.normal(0, 0.05, local.shape), 0, 1)
            Xd = np.vstack([Xd, A, local])
        X = np.zeros((len(Xd), enc.dim))
        X[:, : enc.d] = Xd
        U = sobol(len(enc.fidelity_cols), len(Xd), seed + 1)
        lo, hi = enc.bounds()
        for k, col in enumerate(enc.fidelity_cols):
            # log-uniform fidelities: cheap levels get as many raw points as expensive ones
            X[:, col] = np.exp(np.log(lo[col]) + U[:, k] * (np.log(hi[col]) - np.log(lo[col])))
        at_target = rng.random(len(X)) < 0.15
        for col in enc.fidelity_cols:
            X[at_target, col] = 1.0
        return enc.round(X)

    def _prior_logp(self, configs: list[dict]) -> np.ndarray:
        logp = np.asarray(self.prior.log_prob(configs), dtype=float).reshape(len(configs))
        return np.where(np.isfinite(logp), logp, -1e6)

    def _prior_count(self, completed: list[Trial]) -> int:
        """piBO's ``n`` in ``prior^(beta / n)``: 1 + completed BO iterations ("iterations", as in piBO,
        whose initial design is drawn from the prior and not counted), or every completed trial ("trials")."""
        if self.prior_decay == "trials":
            return max(1, len(completed))
        return 1 + sum(str(t.metadata.get("source", "")).startswith("model") for t in completed)

    def _model_point(self, completed: list[Trial]) -> tuple[dict, float, int, str]:
        surrogate = self._fit(completed)
        enc = self.encoder
        seed = self._step_seed()
        t0 = time.perf_counter()
        best = self._best_observed_designs(surrogate, completed, k=5)
        cheap = self.cheap_mode()
        self.last_timings["cheap_mode"] = float(cheap)
        if self.mean_optima and not cheap:
            # the posterior mean's maximisers join the anchors of the pool (as BoTorch seeds one-shot KG):
            # where the model's trend points past every evaluated design (an optimum on the bounds),
            # the acquisition gets to weigh a run there
            from mfbo.optimize._recommend import mean_maximisers

            best = best + mean_maximisers(self, surrogate, best, n_refine=self.mean_optima)
        n_raw = max(64, self.raw_samples // 4) if cheap else self.raw_samples
        raw = self._raw_pool(n_raw, seed, best)
        cand_set = self._raw_pool(min(1000, 2 * n_raw), seed + 17, best)
        alpha = self.design_cost_exponent()
        scale = max(self.full_fidelity_cost(design_exponent=alpha), 1e-12)
        cost_module = (self.cost_model.module(scale=scale, overhead=self.cost_overhead) if alpha == 1.0 else
                       self.cost_model.module(scale=scale, overhead=self.cost_overhead, design_exponent=alpha))
        self.last_timings["design_cost_exponent"] = alpha
        running = self._running()
        X_pending = enc.encode([t.params for t in running], [t.data_fraction for t in running],
                               [t.epochs for t in running]) if running else None
        gamma = self.prior_beta / self._prior_count(completed)
        weight_fn = None
        if self.prior is not None:
            # piBO weight prior(x)^gamma, relative to the raw pool's most probable row (only ratios matter)
            lp_ref = float(self._prior_logp(enc.decode(raw)[0]).max())

            def weight_fn(rows: np.ndarray) -> np.ndarray:
                return np.exp(gamma * (self._prior_logp(enc.decode(rows)[0]) - lp_ref))
        current = None
        if self.acquisition == "kg":
            current = float(np.max(self._target_mean(surrogate, raw[:, : enc.d])))
        rows, values = acquisition_pool(
            self.acquisition, surrogate.model, enc, cost_module, raw, cand_set, X_pending,
            num_restarts=self.num_restarts, num_fantasies=self.num_fantasies, current_value=current,
            weight_fn=weight_fn, seed=seed, refine=self.refine, boundary_snap=self.boundary_snap,
        )
        configs, fracs, eps = enc.decode(rows)
        values = weighted_values(rows, np.where(np.isfinite(values), values, -np.inf), weight_fn)
        ok = self._feasible(configs)
        pending, done = self._taken()
        ran = self._runs_by_design()
        design_rows = np.round(self.space.encode(configs), 9)
        for i in np.flatnonzero(ok):
            key = tuple(design_rows[i])
            ok[i] = key not in pending and (key, round(float(fracs[i]), 9), int(eps[i])) not in done
            # a design is not run again at a fidelity that one of its runs already covers: no more epochs
            # and under 25 % more data (its learning curve already holds those epochs)
            if ok[i] and key in ran and self.recommendation == "target":
                ok[i] = not any(f >= fracs[i] / 1.25 and e >= eps[i] for f, e in ran[key])
        ok &= ~self._near_target_runs(design_rows, fracs, eps)
        floor = self.fidelity_floor() if self.recommendation == "target" else 0.0
        floor = max(floor, self.ramp_floor())
        self.last_timings["fidelity_floor"] = floor
        if floor > 0:
            ok &= self._relative_cost(fracs, eps) >= floor - 1e-12
        self.last_timings["acquisition_s"] = time.perf_counter() - t0
        if not ok.any():
            return self._fallback_point()
        i = int(np.argmax(np.where(ok, values, -np.inf)))
        return configs[i], float(fracs[i]), int(eps[i]), f"model:{self.acquisition}"

    def _relative_cost(self, fracs, eps) -> np.ndarray:
        """Nominal cost of runs relative to a target-fidelity run: (fraction / target) x (epochs / target)."""
        enc = self.encoder
        rel = np.ones(len(fracs))
        if enc.data is not None:
            rel = rel * np.asarray(fracs, dtype=float) / enc.data.target
        if enc.iter is not None:
            rel = rel * np.asarray(eps, dtype=float) / enc.iter.target
        return rel

    def _target_misses(self) -> list[bool]:
        """For each completed target-fidelity trial with a stored prediction, in order: whether it lay
        more than two predicted sd from the multi-fidelity surrogate's prediction (the model, built mostly
        on cheaper runs, was wrong)."""
        misses = []
        for t in self.trials:
            pred = t.metadata.get("prediction")
            if (t.status == "completed" and self._is_target(t) and isinstance(pred, Mapping)
                    and pred.get("sd", 0) > 0):
                misses.append(abs(t.final_value - float(pred["mean"])) > 2.0 * float(pred["sd"]))
        return misses

    def fidelity_floor(self) -> float:
        """The smallest nominal cost, relative to a target-fidelity run, that a model-based proposal may
        have. 0 until a target-fidelity run misses its prediction by more than two sd (cheap runs misled
        the model); each miss then doubles it (from 1/16, at most 1/2) and each hit halves it (to 0
        from 1/16): budget moves up to fidelities that tell more about the target."""
        floor = 0.0
        for miss in self._target_misses():
            if miss:
                floor = min(0.5, max(1.0 / 16, 2.0 * floor))
            else:
                floor = floor / 2.0 if floor / 2.0 >= 1.0 / 16 else 0.0
        return floor

    def spent_share(self) -> float | None:
        """Share of the budget spent by finished trials (FFE of the current cost model); None without a
        budget or cost data."""
        if self.budget is None or self.cost_model.n_obs == 0:
            return None
        unit = max(self.full_fidelity_cost(), 1e-12)
        spent = sum(t.cost for t in self.trials if t.status in ("completed", "failed")) / unit
        return float(np.clip(spent / self.budget, 0.0, 1.0))

    def ramp_floor(self) -> float:
        """The smallest nominal cost, relative to a target-fidelity run, of a model-based proposal once
        ``share`` of the budget is spent: ``(share - fidelity_ramp) / (1 - fidelity_ramp)`` clipped to
        [0, 1] (0 when off or without a budget)."""
        share = self.spent_share() if self.fidelity_ramp is not None else None
        if share is None:
            return 0.0
        return float(np.clip((share - self.fidelity_ramp) / (1.0 - self.fidelity_ramp), 0.0, 1.0))

    def _runs_by_design(self) -> dict[tuple, list[tuple[float, int]]]:
        """Design key -> the (data fraction, epochs) of its completed and running trials."""
        out: dict[tuple, list[tuple[float, int]]] = {}
        for t in self.trials:
            if t.status in ("completed", "running"):
                out.setdefault(self._design_key(t.params), []).append((float(t.data_fraction), int(t.epochs)))
        return out

    def _near_target_runs(self, design_rows: np.ndarray, fracs, eps) -> np.ndarray:
        """``(n,)`` mask: rows at target fidelity whose design lies within ``target_separation`` (largest
        coordinate difference in the unit cube) of a completed or running target-fidelity trial's design.

        Measured on yahpo_lcbench: near its incumbent, GIBBON spent 1.5 FFE per run re-running designs
        0.002-0.005 away from one already run at target fidelity (the GP's noise term makes a repeat
        look informative); such a run tells nothing a cheaper or farther one would not.
        """
        near = np.zeros(len(design_rows), dtype=bool)
        at_target = np.array([self.encoder.at_target(f, e) for f, e in zip(fracs, eps)], dtype=bool)
        if self.target_separation <= 0 or not at_target.any():
            return near
        ran = [t.params for t in self.trials if t.status in ("completed", "running")
               and self.encoder.at_target(t.data_fraction, t.epochs)]
        if not ran:
            return near
        R = self.space.encode(ran)
        dist = np.abs(design_rows[at_target][:, None, :] - R[None, :, :]).max(axis=-1).min(axis=1)
        near[at_target] = dist < self.target_separation
        return near

    def _fallback_point(self) -> tuple[dict, float, int, str]:
        """A feasible, not-pending quasi-random point at low fidelity (when the pool has none)."""
        seed = self._step_seed()
        configs = self.space.sample(2048, seed=seed)
        feas = self._feasible(configs)
        pending, done = self._taken()
        u = sobol(2, 1, seed)[0]
        frac, ep = self._low_fidelity(u)
        for c, f in zip(configs, feas):
            if f and self._design_key(c) not in pending:
                return c, frac, ep, "fallback"
        raise OptimizerError("no feasible configuration found: the constraints exclude 2048 quasi-random "
                             "samples of the search space; loosen them or check the bounds")

    def _target_mean(self, surrogate: Surrogate, Xd: np.ndarray) -> np.ndarray:
        """Latent posterior mean (maximisation convention) at target fidelity for encoded designs."""
        return self._target_mean_std(surrogate, Xd, std=False)[0]

    def _at_target(self, Xd: np.ndarray) -> np.ndarray:
        """Model inputs ``(n, dim)`` for ``(n, d)`` encoded designs with every fidelity at its target."""
        X = np.zeros((len(Xd), self.encoder.dim))
        X[:, : self.encoder.d] = Xd
        for col in self.encoder.fidelity_cols:
            X[:, col] = 1.0
        return X

    def _target_mean_std(self, surrogate: Surrogate, Xd: np.ndarray,
                         std: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Latent posterior mean and standard deviation (model units) at target fidelity, ``(n,)`` each,
        for ``(n, d)`` encoded designs (``None`` for the deviation when ``std`` is False)."""
        import torch

        with torch.no_grad():
            post = surrogate.model.posterior(torch.as_tensor(self._at_target(Xd)))
            mean = post.mean.squeeze(-1).numpy()
            return mean, post.variance.clamp_min(0.0).sqrt().squeeze(-1).numpy() if std else None

    def _unique_designs(self, trials: Sequence[Trial]) -> list[dict]:
        """The trials' design parameters, each distinct design once, in trial order."""
        configs, seen = [], set()
        for t in trials:
            key = self._design_key(t.params)
            if key not in seen:
                seen.add(key)
                configs.append(t.params)
        return configs

    def _best_observed_designs(self, surrogate: Surrogate, completed: list[Trial], k: int) -> list[dict]:
        configs = self._unique_designs(completed)
        m = self._target_mean(surrogate, self.space.encode(configs))
        return [configs[i] for i in np.argsort(-m)[:k]]

    # -- tell ----------------------------------------------------------------------------
    def tell(self, trial_index: int, curve: Sequence[float], cost: float, metadata: Mapping | None = None) -> None:
        """Record a finished trial.

        Args:
            trial_index: index returned by :meth:`ask` or :meth:`attach`.
            curve: validation loss after each epoch 1..T (T may be below the asked epochs, e.g. pruned).
            cost: cost in seconds (> 0).
            metadata: anything JSON-able (timings, versions...).
        """
        t = self._get(trial_index)
        curve = [float(v) for v in curve]
        if not curve:
            raise OptimizerError(f"trial {trial_index}: empty curve; use tell_failed for a failed run")
        if not math.isfinite(curve[-1]):
            self.tell_failed(trial_index, f"non-finite final value {curve[-1]!r}")
            return
        cost = float(cost)
        if not (math.isfinite(cost) and cost >= 0):
            raise OptimizerError(f"trial {trial_index}: cost must be a finite number >= 0 seconds, got {cost!r}")
        self._ax.complete(t.index, curve, cost, metadata)
        t.curve = curve
        t.epochs = len(curve) if self.encoder.iter is not None else t.epochs
        t.cost = cost
        t.status = "completed"
        t.metadata.update(dict(metadata or {}))
        pred = self.run_prediction(t)
        if isinstance(pred, Mapping) and self._is_target(t) and pred.get("sd", 0) > 0:
            t.metadata["z"] = (curve[-1] - float(pred["mean"])) / float(pred["sd"])
        self._fit_cost()

    def _fit_cost(self) -> None:
        """Refit the cost model on every completed trial (cheap least squares)."""
        done = [t for t in self.trials if t.status == "completed"]
        if done:
            Xc = self.encoder.encode([t.params for t in done], [t.data_fraction for t in done],
                                     [t.epochs for t in done])
            self.cost_model.fit(Xc, np.array([t.cost for t in done]))

    def tell_failed(self, trial_index: int, reason: str) -> None:
        """Mark a running trial failed (recorded in Ax as a failed trial)."""
        t = self._get(trial_index)
        self._ax.fail(t.index, str(reason))
        t.status, t.error = "failed", str(reason)

    def abandon(self, trial_index: int, reason: str) -> None:
        """Mark a running trial abandoned (it will not be told; e.g. a worker vanished)."""
        t = self._get(trial_index)
        self._ax.abandon(t.index, str(reason))
        t.status, t.error = "abandoned", str(reason)

    def attach(self, params: Mapping[str, Any], data_fraction: float | None = None,
               epochs: int | None = None) -> int:
        """Register an externally chosen trial (then :meth:`tell` it). Returns its index."""
        cfg = self.space.validate(params)
        enc = self.encoder
        frac = enc.data_fraction_default() if data_fraction is None else float(data_fraction)
        ep = enc.epochs_default() if epochs is None else int(epochs)
        for p, v in ((enc.data, frac), (enc.iter, ep)):
            if p is not None and not p.low - 1e-12 <= v <= p.high + 1e-12:
                raise SearchSpaceError(f"parameter {p.name!r}: {v} outside bounds [{p.low}, {p.high}]")
        return self._new_trial(cfg, frac, ep, "attached")

    # -- results -------------------------------------------------------------------------
    def surrogate(self) -> Surrogate:
        """The surrogate fitted on every completed trial (refitted if new data arrived)."""
        completed = self._completed()
        if len(completed) < 2:
            raise OptimizerError("the surrogate needs at least two completed trials")
        return self._fit(completed)

    def recommend(self, refine: bool = True) -> dict:
        """The configuration to take away (feasible, design parameters only), by the rule set with
        ``recommendation`` (see :mod:`mfbo.optimize._recommend`).

        Args:
            refine: "optimised" rule only: also refine the best candidates by gradient steps on the
                posterior mean (slower).
        """
        from mfbo.optimize._recommend import hold_or_switch, recommend, recommend_evaluated

        completed = self._completed()
        if not completed:
            raise OptimizerError("no completed trial yet; nothing to recommend")
        if len(completed) < 2:
            return dict(completed[0].params)
        if self.recommendation == "evaluated":
            surrogate = self._fit(completed)
            rec = recommend_evaluated(self, surrogate, completed)
            if self.recommendation_hold > 0:
                rec = hold_or_switch(self, surrogate, self._incumbent, rec, self.recommendation_hold)
                self._incumbent, self._incumbent_at = dict(rec), len(completed)
            return dict(rec)
        if self.recommendation == "target":
            at_target = [t for t in completed if self._is_target(t)]
            if not at_target:
                return recommend_evaluated(self, self._fit(completed), completed)
            # Once target-fidelity runs exist, the recommendation is one of them, and it changes only when
            # a new one arrives: without new evidence at target it cannot get worse.
            if self._incumbent is not None and self._incumbent_at == len(at_target):
                return dict(self._incumbent)
            best = self._best_at_target_only_model(completed) if self.target_only_mode() else None
            self._incumbent = best if best is not None else self._best_at_target(at_target)
            self._incumbent_at = len(at_target)
            return dict(self._incumbent)
        return recommend(self, self._fit(completed), completed, n_refine=3 if refine else 0)

    def _best_at_target(self, at_target: list[Trial]) -> dict:
        """The feasible design with the lowest observed target-fidelity value (the mean over its repeats).

        Observed, not smoothed by the surrogate: the GP's noise term is shared by every fidelity, and the
        scatter of 1-epoch or small-subset runs would otherwise blur the differences between target runs.
        """
        values: dict[tuple, list[float]] = {}
        params: dict[tuple, dict] = {}
        for t in at_target:
            key = self._design_key(t.params)
            values.setdefault(key, []).append(float(t.final_value))
            params.setdefault(key, t.params)
        keys = list(values)
        feasible = self._feasible([params[k] for k in keys])
        if not feasible.any():
            raise OptimizerError("no target-fidelity run satisfies the constraints; nothing to recommend")
        score = np.where(feasible, [np.mean(values[k]) for k in keys], np.inf)
        return dict(params[keys[int(np.argmin(score))]])

    def _target_only_means(self, completed: list[Trial]) -> tuple | None:
        """``(model, designs, mean)``: the GP of target-fidelity runs alone, the distinct designs run at
        target fidelity and its ``(n,)`` latent posterior mean there (maximisation convention); None
        without that model."""
        import torch

        fitted = self._target_only_model(completed)
        if fitted is None:
            return None
        ran = self._unique_designs([t for t in completed if self._is_target(t)])
        with torch.no_grad():
            mean = fitted[0].posterior(torch.as_tensor(self.space.encode(ran))).mean.squeeze(-1).numpy()
        return fitted[0], ran, mean

    def _best_at_target_only_model(self, completed: list[Trial]) -> dict | None:
        """The feasible target-run design with the best posterior mean under the GP of target-fidelity runs
        alone (it averages the run-to-run scatter of designs close together), or None without that model."""
        ranked = self._target_only_means(completed)
        if ranked is None:
            return None
        _, ran, mean = ranked
        feasible = self._feasible(ran)
        if not feasible.any():
            return None
        return dict(ran[int(np.argmax(np.where(feasible, mean, -np.inf)))])

    def recommendation_info(self) -> dict | None:
        """What :meth:`recommend` returns, with its standing: ``{"params", "at_target"`` (whether it ran at
        target fidelity), ``"value"`` (its best target-fidelity result, or None), ``"trial_index"``,
        ``"prediction": {"mean", "sd"}}`` (a new target-fidelity run's predicted value, objective units),
        or None before any trial completed."""
        completed = self._completed()
        if not completed:
            return None
        params = self.recommend(refine=False)
        key = self._design_key(params)
        runs = [t for t in completed if self._is_target(t) and self._design_key(t.params) == key]
        best = min(runs, key=lambda t: t.final_value) if runs else None
        try:
            pred = self.predict_target(params)
        except Exception:  # noqa: BLE001 - the standing is a report; a failed fit leaves it without
            pred = None
        return {"params": params, "at_target": bool(runs), "value": best.final_value if best else None,
                "trial_index": best.index if best else None, "prediction": pred}

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-able state; :meth:`from_state_dict` rebuilds the optimiser (prior/constraints passed again)."""
        from mfbo.optimize._ax_record import _jsonable

        return {
            "version": _STATE_VERSION,
            "space": _jsonable(self.space.to_dict()),
            "seed": self.seed,
            "settings": {"n_initial": self.n_initial, "acquisition": self.acquisition,
                         "prior_beta": self.prior_beta, "trace_points": self.trace_points,
                         "max_gp_points": self.max_gp_points, "raw_samples": self.raw_samples,
                         "num_restarts": self.num_restarts, "num_fantasies": self.num_fantasies,
                         "initial_fidelity": self.initial_fidelity, "cost_overhead": self.cost_overhead,
                         "refit_every": self.refit_every, "warm_maxiter": self.warm_maxiter,
                         "hyper_every": self.hyper_every, "fresh_maxiter": self.fresh_maxiter,
                         "refine": self.refine, "prior_anchor": self.prior_anchor,
                         "budget": self.budget, "cost_cooling": self.cost_cooling,
                         "prior_decay": self.prior_decay, "boundary_snap": self.boundary_snap,
                         "recommendation": self.recommendation,
                         "target_separation": self.target_separation, "mean_optima": self.mean_optima,
                         "verify_every": self.verify_every, "effort": self.effort,
                         "effort_share": self.effort_share, "fidelity_ramp": self.fidelity_ramp,
                         "fidelity_discrepancy": self.fidelity_discrepancy,
                         "fidelity_amplitude": self.fidelity_amplitude, "run_noise": self.run_noise,
                         "recommendation_hold": self.recommendation_hold,
                         "fidelity_check": self.fidelity_check},
            "n_asked": self._n_asked,
            "incumbent": {"params": self._incumbent, "at": self._incumbent_at} if self._incumbent else None,
            "initial_used": self._initial_used,
            "trials": [_jsonable(t.to_dict()) for t in self.trials],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, prior: Any = None,
                        constraints: Sequence[Any] = ()) -> MultiFidelityOptimizer:
        """Rebuild from :meth:`state_dict` (trials, their Ax record and counters; the model is refitted lazily)."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise OptimizerError(f"not a MultiFidelityOptimizer state (version {_STATE_VERSION} expected)")
        opt = cls(state["space"], seed=state["seed"], prior=prior, constraints=constraints,
                  **state.get("settings", {}))
        for d in state["trials"]:
            idx = opt._new_trial(d["params"], d["data_fraction"], d["epochs"],
                                 d.get("metadata", {}).get("source", "restored"))
            if idx != d["index"]:
                raise OptimizerError(f"trial indices in the state are not contiguous at {d['index']}")
            meta = {k: v for k, v in d.get("metadata", {}).items() if k != "source"}
            # every trial keeps what its proposal recorded (a running target trial's prediction, the effort)
            opt._trials[idx].metadata.update(meta)
            if d["status"] == "completed":
                opt.tell(idx, d["curve"], d["cost"], meta)
                opt._trials[idx].epochs = d["epochs"]
            elif d["status"] == "failed":
                opt.tell_failed(idx, d.get("error") or "failed")
            elif d["status"] == "abandoned":
                opt.abandon(idx, d.get("error") or "abandoned")
        opt._n_asked = int(state.get("n_asked", 0))
        inc = state.get("incumbent")
        if isinstance(inc, Mapping) and inc.get("params") is not None:
            opt._incumbent, opt._incumbent_at = dict(inc["params"]), int(inc.get("at", 0))
        opt._initial_used = int(state.get("initial_used", 0))
        return opt
