"""keep_best hands over the best validation epoch's weights; early stopping stops after
``early_stopping_patience`` epochs without a better validation score and fills the curve.

The configuration is named in full (tanh, no batch norm, constant learning rate 0.2, force weight 1):
at this learning rate the validation score on these water images is best at an early epoch and
then worsens, so "best" and "last" differ.
"""

import numpy as np
import pytest

from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints

EPOCHS = 12


@pytest.fixture(scope="module")
def data():
    from ase.io import read

    from mfbo.datasets import WATER

    water = read(str(WATER), index=":40")
    return water[:12], water[30:36]


@pytest.fixture(scope="module")
def config():
    from mfbo.training import TrainConfig

    return TrainConfig(fp_params=SMALL_FP, num_layers=2, num_nodes=8, activation="tanh", batchnorm=False,
                       batch_size=4, epochs=EPOCHS, lr=0.2, scheduler="none", warmup_epochs=0,
                       force_coefficient=1.0, loss="mse", keep_best=True, early_stopping_patience=0, seed=0)


def _val_errors(model, images):
    from mfbo.training import evaluate_model

    m = evaluate_model(model, images)
    return m["energy_mae_per_atom"], m["force_mae"]


def test_keep_best_returns_and_saves_the_best_validation_epoch(data, config, tmp_path):
    from mfbo.training import TrainedModel, train

    train_set, val = data
    result = train(config, train_set, val)
    scores = [rec["val_score"] for rec in result.curve]
    best = int(np.argmin(scores)) + 1
    assert 1 < best < EPOCHS, scores  # the premise: the last epoch is not the best one
    assert result.extra["best_epoch"] == best and result.model.metadata["best_epoch"] == best
    rec = result.curve[best - 1]
    # the returned model scores exactly the best epoch's validation errors, not the last epoch's
    e, f = _val_errors(result.model, val)
    assert e == pytest.approx(rec["val_energy_mae_per_atom"], rel=1e-10)
    assert f == pytest.approx(rec["val_force_mae"], rel=1e-10)
    assert e != pytest.approx(result.curve[-1]["val_energy_mae_per_atom"], rel=1e-6)
    # ... and is the model of a run truncated at that epoch (constant lr: a prefix of the long run)
    truncated = train(config.replace(keep_best=False), train_set, val, epochs=best)
    np.testing.assert_allclose(result.model.predict(val)["energy"], truncated.model.predict(val)["energy"],
                               rtol=1e-10)
    # the saved file holds those weights
    loaded = TrainedModel.load(result.model.save(tmp_path / "best.npz"))
    assert _val_errors(loaded, val) == pytest.approx((e, f), rel=1e-10)
    assert loaded.metadata["best_epoch"] == best


def test_without_keep_best_the_last_epoch_is_returned(data, config):
    from mfbo.training import train

    train_set, val = data
    result = train(config.replace(keep_best=False), train_set, val)
    assert result.extra["best_epoch"] == EPOCHS
    e, f = _val_errors(result.model, val)
    assert e == pytest.approx(result.curve[-1]["val_energy_mae_per_atom"], rel=1e-10)
    assert f == pytest.approx(result.curve[-1]["val_force_mae"], rel=1e-10)


def test_early_stopping_stops_after_patience_and_fills_the_curve(data, config):
    from mfbo.training import train

    train_set, val = data
    patience = 2
    full = train(config, train_set, val)
    stopped = train(config.replace(early_stopping_patience=patience), train_set, val)
    assert len(stopped.curve) == EPOCHS and [r["epoch"] for r in stopped.curve] == list(range(1, EPOCHS + 1))
    # The epochs that ran are the full run's, up to the first `patience` epochs in a row without a
    # better score than the best so far.
    scores = [r["val_score"] for r in full.curve]
    best, stop = 1, None
    for epoch in range(2, EPOCHS + 1):
        if scores[epoch - 1] < scores[best - 1]:
            best = epoch
        elif epoch - best >= patience:
            stop = epoch
            break
    assert stop is not None and stop < EPOCHS, scores  # the premise: this run does stop early
    ran = [r for r in stopped.curve if not r.get("early_stopped")]
    assert [r["epoch"] for r in ran] == list(range(1, stop + 1))
    assert [r["val_score"] for r in ran] == pytest.approx(scores[:stop], rel=1e-10)
    # The rest repeats the best epoch's validation errors, marked, and costs nothing.
    assert stopped.extra["best_epoch"] == best
    best_rec = stopped.curve[best - 1]
    for rec in stopped.curve[stop:]:
        assert rec["early_stopped"] is True
        for key in ("val_score", "val_energy_mae", "val_energy_mae_per_atom", "val_force_mae", "val_force_mae_free"):
            assert rec[key] == best_rec[key], key
        assert rec["epoch_time"] == 0.0 and rec["wall_time"] == stopped.curve[stop - 1]["wall_time"]
    e, _ = _val_errors(stopped.model, val)
    assert e == pytest.approx(best_rec["val_energy_mae_per_atom"], rel=1e-10)
