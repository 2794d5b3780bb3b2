"""train(): one SingleNN run at a (data_fraction, epochs) fidelity, returning its learning curve."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mfbo.errors import ConfigError, DataError, TrainingDiverged
from mfbo.training._baselines import baseline_metrics, is_error_scale
from mfbo.training._config import TrainConfig
from mfbo.training._core import ScaledPack, error_metrics, predict_pack, run_batch
from mfbo.training._data import load_images
from mfbo.training._distributed import DistributedContext, distributed_from_env
from mfbo.training._featurize import featurize_images, gmp_params_of
from mfbo.training._model import SingleNN
from mfbo.training._packed import PackedImages, pack_images
from mfbo.training._record_keys import RECORD_KEYS
from mfbo.training._scaling import TargetScaler
from mfbo.training._source import prepare_data
from mfbo.training._trained import TrainedModel

__all__ = ["train", "TrainResult", "CURVE_KEYS"]

# The shared record plus what only the built-in trainer measures: loss, the validation score (errors
# relative to the trivial baselines, see _val_score), per-epoch wall and CPU seconds.
CURVE_KEYS = (*RECORD_KEYS, "train_loss", "val_score", "epoch_time", "epoch_cpu_time")


@dataclass
class TrainResult:
    """What one training run returns.

    Attributes:
        curve: one dict per epoch (keys ``CURVE_KEYS``): ``epoch`` (1-based); ``train_*`` MAEs
            accumulated over the epoch's batches as they were trained (as AMPTorch/skorch report
            them); ``val_*`` MAEs of the model after the epoch (eval mode); energies in eV/image
            and eV/atom, forces in eV/A per component over all atoms and over free atoms (None
            when forces are off); ``train_loss`` (scaled units), ``lr`` used in the epoch,
            ``epoch_time`` (s), ``epoch_cpu_time`` (process CPU s; on a shared machine wall time
            overstates the work) and ``wall_time`` (s since ``train`` was called, set-up included;
            torch's one-time per-process import of its optimiser stack is excluded); ``val_score``
            (validation errors over the trivial baselines', see ``_val_score``; dimensionless). Epochs
            after an early stop repeat the best epoch's record with ``early_stopped: True``.
        model: the TrainedModel with the best validation epoch's weights (``keep_best``, default)
            or the last epoch's.
        timings: seconds: ``featurize``, ``setup`` (featurise + pack + fit scalers), ``train``,
            ``epoch_mean``, ``test``, ``total``; ``setup_cpu``, ``featurize_cpu`` and ``total_cpu``
            are process CPU seconds.
        test_metrics: ``energy_mae``, ``energy_mae_per_atom``, ``force_mae``, ``force_mae_free``,
            ``n_images`` on the test set, or None when no test set was given.
        n_train, n_val: images used.
        extra: ``data_fraction``, ``epochs``, ``best_epoch`` (the epoch whose weights the model has),
            ``val_baselines`` (:func:`mfbo.training.baseline_metrics` on the validation set).
    """

    curve: list[dict]
    model: TrainedModel
    timings: dict
    test_metrics: dict | None = None
    n_train: int = 0
    n_val: int = 0
    config: TrainConfig | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able summary (no model weights)."""
        return {
            "config": None if self.config is None else self.config.to_dict(),
            "curve": self.curve,
            "timings": self.timings,
            "test_metrics": self.test_metrics,
            "n_train": self.n_train,
            "n_val": self.n_val,
            **self.extra,
        }


def _dtype(config: TrainConfig) -> torch.dtype:
    return torch.float64 if config.dtype == "float64" else torch.float32


def _device(config: TrainConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"TrainConfig.device={config.device!r} but CUDA is not available here")
    return device


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _make_scheduler(config: TrainConfig, optimizer):
    """The epoch-level learning-rate schedule (stepped once per epoch; "plateau" with the val score)."""
    warmup = int(config.warmup_epochs)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.scheduler_gamma, patience=config.scheduler_patience
        )
    if config.scheduler == "step":
        after = lambda e: config.scheduler_gamma ** (e // config.scheduler_step_size)  # noqa: E731
    elif config.scheduler == "cosine":
        # Over the configuration's full epoch count, not the fidelity's, so a run truncated at t epochs
        # is exactly the prefix of the full run (the optimiser's trace observations rely on it).
        span = max(config.epochs - warmup, 1)
        floor = config.min_lr_ratio

        def after(e):
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(e, span) / span))
    else:
        after = None
    if after is None and warmup == 0:
        return None

    def factor(epoch: int) -> float:  # epoch: 0-based index of the epoch about to run
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        return 1.0 if after is None else after(epoch - warmup)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _loss_term(err: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    if err.numel() == 0:
        return err.sum()
    if config.loss == "mse":
        return (err * err).mean()
    if config.loss == "huber":
        return torch.nn.functional.huber_loss(err, torch.zeros_like(err), delta=config.huber_delta)
    return err.abs().mean()


def _val_score(metrics: dict, baselines: dict) -> float | None:
    """Validation errors relative to the trivial baselines on the validation set, averaged.

    ``mean(E_MAE/atom / linear-fit E_MAE/atom, F_MAE(free) / zero-force F_MAE(free))`` over the terms
    that exist (a baseline without error, such as zero forces on perfectly symmetric cells, gives no
    term): dimensionless, 1 = no better than the baselines, 0 = exact. It weighs energies and
    forces by how hard each is on this data, so it ranks epochs without a unit-dependent weight.
    """
    terms = []
    e_base = baselines["linear_fit"]["energy_mae_per_atom"]
    if metrics.get("val_energy_mae_per_atom") is not None and is_error_scale(e_base):
        terms.append(metrics["val_energy_mae_per_atom"] / e_base)
    f_base = baselines["zero_forces"]["force_mae_free"]
    if metrics.get("val_force_mae_free") is not None and is_error_scale(f_base):
        terms.append(metrics["val_force_mae_free"] / f_base)
    return float(np.mean(terms)) if terms else None


def _images(source, what: str, require_forces: bool) -> list:
    try:
        return load_images(source, require_forces=require_forces)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None


_WARM = False


def _warm_up() -> None:
    """Pay torch's one-time import cost (torch.optim pulls in torch._dynamo, several seconds) once per
    process, outside the timed region, so trial costs do not depend on which trial a worker ran first."""
    global _WARM
    if not _WARM:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], foreach=True)
        _WARM = True


def train(
    config: TrainConfig,
    train_images,
    val_images,
    *,
    data_fraction: float = 1.0,
    epochs: int | None = None,
    test_images=None,
    cache=None,
    progress: bool = False,
    data=None,
    on_epoch: Callable[[dict], None] | None = None,
    distributed: DistributedContext | bool | None = None,
) -> TrainResult:
    """Train a SingleNN potential at one fidelity.

    Args:
        config: the run's TrainConfig.
        train_images: training pool (path, :func:`open_images` view or list of Atoms);
            ``data_fraction`` selects the nested subset of it (:func:`nested_subset` with
            ``config.seed``).
        val_images: fixed validation set (path, view or list of Atoms), the same at every fidelity.
        data_fraction: fidelity in (0, 1].
        epochs: fidelity; defaults to ``config.epochs`` (with a cosine schedule the run is the
            prefix of a ``config.epochs`` run).
        test_images: optional test set, evaluated once after training (never used for training).
        cache: None (featurise directly), a FingerprintCache, or a cache directory.
        progress: tqdm progress bars on stderr.
        data: how the data are held: None/"auto", "memory", "stream", or a dict of
            :class:`~mfbo.training._source.DataOptions` fields (shard directory, featurisation
            processes, shard size, the auto mode's memory limit).
        on_epoch: called after every trained epoch with that epoch's curve record (the dict
            ``TrainResult.curve`` holds; not for the repeated records after an early stop). An
            exception it raises (``optuna.TrialPruned``, a deadline) ends training at once and
            propagates out of ``train`` unchanged; nothing is returned for that run.
        distributed: data-parallel training over processes (see :mod:`mfbo.training._distributed`):
            None (default) reads torchrun's environment (``WORLD_SIZE`` > 1 trains data-parallel),
            False never, or a :class:`DistributedContext`. Every process returns the same model and
            curve; rank 0 featurises first (the others then read its cache or shards), shows the
            progress bars and evaluates the test set (``test_metrics`` is None on the other ranks).

    Returns:
        TrainResult.

    Raises:
        DataError: a dataset lacks energies (or forces when ``config.get_forces``).
        TrainingDiverged: NaN/inf loss or a loss blow-up (carries ``epoch`` and ``last_metrics``).
    """
    _warm_up()
    t_start = time.perf_counter()
    c_start = time.process_time()
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"train() needs a TrainConfig, got {type(config).__name__}")
    n_epochs = config.epochs if epochs is None else epochs
    if isinstance(n_epochs, float) and n_epochs.is_integer():
        n_epochs = int(n_epochs)
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1:
        raise ConfigError(f"epochs={epochs!r} must be a positive integer")
    forces_on = bool(config.get_forces)
    ddp = distributed_from_env() if distributed is None else (distributed or None)
    if ddp is True:
        raise ConfigError("distributed=True: pass a DistributedContext, or None to read torchrun's environment")
    main = ddp is None or ddp.is_main
    progress = progress and main
    test = None if test_images is None or not main else _images(test_images, "test set", False)
    device = _device(config)
    if ddp is not None:
        device = ddp.device(device)
    # A process group this call creates is closed when it returns or raises (a process that exits with
    # one open aborts in its destructor), so the next call, or the interpreter's exit, starts clean.
    with contextlib.ExitStack() as stack:
        if ddp is not None and ddp.init(device):
            # after an error, no barrier: a process that is not failing too would wait there for ever
            stack.push(lambda exc_type, exc, tb: ddp.close(barrier=exc_type is None))
        return _train_run(config, train_images, val_images, data_fraction, n_epochs, test, cache, progress, data,
                          on_epoch, ddp, device, t_start, c_start, forces_on)


def _train_run(config, train_images, val_images, data_fraction, n_epochs, test, cache, progress, data, on_epoch,
               ddp, device, t_start, c_start, forces_on) -> TrainResult:
    """The body of :func:`train` once its arguments are checked and the process group (if any) joined."""
    main = ddp is None or ddp.is_main
    dtype = _dtype(config)
    with _threads(config.num_threads), torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(config.seed)
        params = gmp_params_of(config)
        if not main:  # rank 0 featurises first; the others find its cache entries and shards
            ddp.barrier()
        prepared = prepare_data(
            config, params, train_images, val_images, data_fraction=data_fraction, cache=cache,
            progress=progress, device=device, dtype=dtype, options=data,
        )
        if ddp is not None and main:
            ddp.barrier()
        train_sp, val_sp, fscaler, tscaler = prepared.train, prepared.val, prepared.fscaler, prepared.tscaler
        t_featurize, c_featurize = prepared.featurize_s, prepared.featurize_cpu_s
        n_features = prepared.n_features
        network = SingleNN(
            n_features, config.num_layers, config.num_nodes, config.activation, config.batchnorm, config.dropout,
            elements=prepared.elements if config.element_outputs else None,
        ).to(device=device, dtype=dtype)
        if ddp is not None:
            ddp.broadcast_parameters(network)
        t_setup, c_setup = time.perf_counter() - t_start, time.process_time() - c_start

        val_baselines = baseline_metrics(prepared.train_labels, prepared.val_labels)
        curve, epoch_times, best_epoch = _fit(
            config, network, train_sp, val_sp, tscaler, n_epochs, forces_on, progress, t_start, val_baselines,
            on_epoch, ddp,
        )
        t_train = time.perf_counter() - t_start - t_setup

        metadata = {
            "n_features": int(n_features),
            "elements": prepared.elements,
            "n_train": prepared.n_train,
            "data_fraction": float(data_fraction),
            "epochs": int(n_epochs),
            "best_epoch": best_epoch,
        }
        model = TrainedModel(config, network.cpu().eval(), fscaler, tscaler, metadata)
        test_metrics = None
        t_test = 0.0
        if test is not None:
            t0 = time.perf_counter()
            test_metrics = evaluate_model(model, test, forces=forces_on, cache=cache, progress=progress)
            t_test = time.perf_counter() - t0
    timings = {
        "featurize": t_featurize,
        "setup": t_setup,
        "train": t_train,
        "epoch_mean": float(np.mean(epoch_times)),
        "test": t_test,
        "total": time.perf_counter() - t_start,
        "featurize_cpu": c_featurize,
        "setup_cpu": c_setup,
        "total_cpu": time.process_time() - c_start,
    }
    return TrainResult(
        curve=curve,
        model=model,
        timings=timings,
        test_metrics=test_metrics,
        n_train=prepared.n_train,
        n_val=prepared.n_val,
        config=config,
        extra={
            "data_fraction": float(data_fraction),
            "epochs": int(n_epochs),
            "best_epoch": best_epoch,
            "val_baselines": val_baselines,
            "data_mode": prepared.mode,
            "jacobians": prepared.jacobians,
        },
    )


def evaluate_model(model: TrainedModel, images, *, forces: bool = True, cache=None, progress: bool = False) -> dict:
    """Energy and force MAEs of a trained model on labelled images.

    Returns:
        ``energy_mae`` (eV/image), ``energy_mae_per_atom`` (eV/atom), ``force_mae``,
        ``force_mae_free`` (eV/A, None without forces), ``n_images``.
    """
    images = load_images(images, require_forces=False)
    fps = featurize_images(images, model.gmp_params, derivatives=forces, cache=cache, progress=progress)
    packed = pack_images(images, fps, jacobian=forces)
    del fps
    if packed.forces is None:
        forces_pred = False
    else:
        forces_pred = forces
    sp = model.scaled_pack(packed)
    energies, force = predict_pack(model.network, sp, model.target_scaler.scale, forces=forces_pred)
    metrics = error_metrics(sp, energies, force, prefix="")
    metrics["n_images"] = len(images)
    return metrics


def _fit(
    config: TrainConfig,
    network: SingleNN,
    train_sp: ScaledPack,
    val_sp: ScaledPack,
    tscaler: TargetScaler,
    n_epochs: int,
    forces_on: bool,
    progress: bool,
    t_start: float,
    val_baselines: dict,
    on_epoch: Callable[[dict], None] | None = None,
    ddp: DistributedContext | None = None,
) -> tuple[list[dict], list[float], int]:
    """The epoch loop. Returns (curve, epoch wall times, the epoch whose weights the network ends with).

    With ``ddp`` this process trains its share of every epoch's batches and the gradients are averaged
    over the processes before each step; the curve's training sums cover all processes.
    """
    packed: PackedImages = train_sp.packed
    n = packed.n_images
    scale = tscaler.scale
    use_force_loss = forces_on and config.force_coefficient > 0
    # foreach: one fused update over all parameter tensors (torch uses it by default only on CUDA).
    optimizer = torch.optim.Adam(
        network.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    scheduler = _make_scheduler(config, optimizer)
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and config.warmup_epochs:
        for group in optimizer.param_groups:
            group["lr"] = config.lr / (config.warmup_epochs + 1)
    generator = torch.Generator().manual_seed(int(config.seed))
    free_only = config.force_loss_atoms == "free"
    network.set_detached_batch_stats(
        config.batchnorm_stats == "detached" or (config.batchnorm_stats == "auto" and use_force_loss)
    )
    curve: list[dict] = []
    epoch_times: list[float] = []
    best_val = (math.inf, 0, None)  # (val score, epoch, weights) of the best validation epoch so far
    best_loss = math.inf  # best epoch loss so far, or the untrained model's first batch loss

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_epochs, desc="training", unit="epoch", leave=False)

    def diverged(epoch: int, why: str):
        last = dict(curve[-1]) if curve else None
        if bar is not None:
            bar.close()
        return TrainingDiverged(
            f"training diverged at epoch {epoch}: {why} (lr={config.lr:g}); lower the learning rate "
            "or the force coefficient",
            epoch=epoch,
            last_metrics=last,
        )

    for epoch in range(1, n_epochs + 1):
        t_epoch, c_epoch = time.perf_counter(), time.process_time()
        lr = optimizer.param_groups[0]["lr"]
        network.train()
        order = torch.randperm(n, generator=generator).tolist()  # the same order on every process
        batches = [order[start : start + config.batch_size] for start in range(0, n, config.batch_size)]
        if ddp is not None:
            batches = ddp.my_batches(batches)
        sums = dict(e=0.0, e_atom=0.0, f=0.0, f_free=0.0, loss=0.0)
        counts = dict(f=0, f_free=0, batches=0, images=0)
        first_loss = None
        for images in batches:
            bsp, images = train_sp.batch(images)  # a streamed pack reads the batch from disk
            out = run_batch(network, bsp, images, forces=use_force_loss, create_graph=True)
            image_index = torch.as_tensor(images, device=out.energy.device)
            e_err = out.energy - bsp.energy_target[image_index]
            if tscaler.per_atom_loss:
                loss_e = _loss_term(e_err / out.n_atoms, config)
            else:
                loss_e = _loss_term(e_err, config)
            loss = loss_e
            if use_force_loss:
                f_err = out.forces - bsp.force_target[out.atoms]
                free = bsp.packed.free[out.atoms]
                loss_f = _loss_term(f_err[free] if free_only else f_err, config)
                loss = 0.5 * (loss_e + config.force_coefficient * loss_f)
            else:
                loss = 0.5 * loss_e
            if not torch.isfinite(loss) and ddp is None:
                # data-parallel: the NaN reaches every process through the averaged gradients, and all of
                # them stop together at the end of the epoch (one process raising alone would leave the
                # others waiting in a collective)
                raise diverged(epoch, "the loss became NaN/inf")
            if first_loss is None:
                first_loss = float(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ddp is not None:
                ddp.average_gradients(network)
            optimizer.step()
            with torch.no_grad():
                abs_e = e_err.detach().abs() * scale
                sums["e"] += float(abs_e.sum())
                sums["e_atom"] += float((abs_e / out.n_atoms).sum())
                sums["loss"] += float(loss.detach())
                counts["batches"] += 1
                counts["images"] += len(images)
                if use_force_loss:
                    abs_f = f_err.detach().abs() * scale
                    sums["f"] += float(abs_f.sum())
                    counts["f"] += abs_f.numel()
                    free_f = abs_f[bsp.packed.free[out.atoms]]
                    sums["f_free"] += float(free_f.sum())
                    counts["f_free"] += free_f.numel()
        if ddp is not None:  # the curve's training numbers cover every process's batches
            keys = [("s", k) for k in sums] + [("c", k) for k in counts]
            total = ddp.sum_values([sums[k] if w == "s" else counts[k] for w, k in keys] + [first_loss or 0.0],
                                   next(network.parameters()).device)
            for (w, k), v in zip(keys, total):
                (sums if w == "s" else counts)[k] = v
            first_loss = total[-1] / ddp.world_size
        if epoch == 1:
            best_loss = first_loss if first_loss is not None else math.inf
        epoch_loss = sums["loss"] / max(counts["batches"], 1)
        if not math.isfinite(epoch_loss):
            raise diverged(epoch, "the loss became NaN/inf")
        if epoch_loss > config.divergence_factor * best_loss:
            raise diverged(
                epoch, f"the training loss blew up to {epoch_loss:.3g} (best so far {best_loss:.3g})"
            )
        best_loss = min(best_loss, epoch_loss)
        energies, forces = predict_pack(
            network, val_sp, scale, forces=forces_on and val_sp.packed.has_jacobian, batch_size=config.eval_batch_size,
            share=None if ddp is None else (ddp.rank, ddp.world_size),
        )
        if ddp is not None:  # each process predicted a share of the batches; the sum is every prediction
            energies = ddp.sum_tensor(energies)
            forces = None if forces is None else ddp.sum_tensor(forces)
        val_metrics = error_metrics(val_sp, energies, forces, prefix="val_")
        if not all(v is None or math.isfinite(v) for v in val_metrics.values()):
            raise diverged(epoch, "validation predictions became NaN/inf")
        score = _val_score(val_metrics, val_baselines)
        ranking = score if score is not None else val_metrics["val_energy_mae_per_atom"]
        if ranking < best_val[0]:
            weights = copy.deepcopy(network.state_dict()) if config.keep_best else None
            best_val = (ranking, epoch, weights)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if epoch > config.warmup_epochs:
                scheduler.step(ranking)
            else:  # the warm-up of a plateau schedule: linear ramp to lr
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * (epoch + 1) / (config.warmup_epochs + 1)
        elif scheduler is not None:
            scheduler.step()
        now = time.perf_counter()
        epoch_times.append(now - t_epoch)
        record = {
            "epoch": epoch,
            "train_energy_mae": sums["e"] / max(counts["images"], 1),
            "train_energy_mae_per_atom": sums["e_atom"] / max(counts["images"], 1),
            "val_energy_mae": val_metrics["val_energy_mae"],
            "val_energy_mae_per_atom": val_metrics["val_energy_mae_per_atom"],
            "train_force_mae": sums["f"] / counts["f"] if counts["f"] else None,
            "train_force_mae_free": sums["f_free"] / counts["f_free"] if counts["f_free"] else None,
            "val_force_mae": val_metrics["val_force_mae"],
            "val_force_mae_free": val_metrics["val_force_mae_free"],
            "train_loss": epoch_loss,
            "val_score": score,
            "lr": lr,
            "epoch_time": now - t_epoch,
            "epoch_cpu_time": time.process_time() - c_epoch,
            "wall_time": now - t_start,
        }
        curve.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(val_E=f"{record['val_energy_mae']:.3g} eV")
        if on_epoch is not None:
            try:
                on_epoch(dict(record))
            except BaseException:
                if bar is not None:
                    bar.close()
                raise
        patience = config.early_stopping_patience
        if patience and epoch - best_val[1] >= patience and epoch < n_epochs:
            # The potential a stopped run hands over is the best epoch's, so the rest of the curve
            # (its length is the epoch fidelity) repeats that epoch's validation errors.
            best_record = curve[best_val[1] - 1]
            for later in range(epoch + 1, n_epochs + 1):
                curve.append(
                    {
                        **best_record,
                        "epoch": later,
                        "epoch_time": 0.0,
                        "epoch_cpu_time": 0.0,
                        "wall_time": record["wall_time"],
                        "early_stopped": True,
                    }
                )
            break
    if bar is not None:
        bar.close()
    final_epoch = len(epoch_times)
    if config.keep_best and best_val[2] is not None and best_val[1] != final_epoch:
        network.load_state_dict(best_val[2])
        final_epoch = best_val[1]
    return curve, epoch_times, final_epoch
