"""Saving and loading trained models: round trip, truncated and tampered files."""

import json
import zipfile

import numpy as np
import pytest

from mfbo.errors import ModelFileError
from tests.training.conftest import needs_fingerprints

pytestmark = needs_fingerprints


@pytest.fixture(scope="module")
def trained(water):
    from mfbo.training import TrainConfig, train
    from tests.training.conftest import SMALL_FP

    cfg = TrainConfig(fp_params=SMALL_FP, num_layers=2, num_nodes=6, epochs=2, batch_size=4, lr=1e-2,
                      target_scaling="per_element")
    return train(cfg, water[:8], water[30:33]).model


def test_round_trip_predicts_identically(trained, water, tmp_path):
    from mfbo.training import TrainedModel

    path = trained.save(tmp_path / "m.npz")
    loaded = TrainedModel.load(path)
    assert loaded.config == trained.config
    assert loaded.metadata["n_features"] == 6 and "torch" in loaded.metadata["versions_saved_with"]
    a, b = trained.predict(water[33:36]), loaded.predict(water[33:36])
    np.testing.assert_array_equal(a["energy"], b["energy"])
    for fa, fb in zip(a["forces"], b["forces"]):
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(loaded.target_scaler.ref, trained.target_scaler.ref)


def test_truncated_file(trained, tmp_path):
    from mfbo.training import TrainedModel

    path = trained.save(tmp_path / "m.npz")
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.npz"):
        TrainedModel.load(cut)
    with pytest.raises(ModelFileError, match="does not exist"):
        TrainedModel.load(tmp_path / "missing.npz")


def _rewrite(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)


def test_tampered_weights_and_metadata(trained, tmp_path):
    from mfbo.training import TrainedModel

    path = trained.save(tmp_path / "m.npz")

    def weights(arrays):
        key = next(k for k in arrays if k.startswith("net/") and k.endswith("weight"))
        arrays[key] = arrays[key] + 1e-3

    def meta(arrays):
        m = json.loads(arrays["meta"].tobytes().decode())
        m["config"]["activation"] = "tanh" if m["config"]["activation"] != "tanh" else "gelu"
        arrays["meta"] = np.frombuffer(json.dumps(m, sort_keys=True).encode(), dtype=np.uint8)

    for name, edit in (("w", weights), ("m", meta)):
        bad = tmp_path / f"{name}.npz"
        _rewrite(path, bad, edit)
        with pytest.raises(ModelFileError, match="checksum"):
            TrainedModel.load(bad)


def test_pickle_payload_is_never_executed(tmp_path):
    import pickle

    from mfbo.training import TrainedModel

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.npz"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("meta.npy", pickle.dumps(Evil()))
    with pytest.raises(ModelFileError):
        TrainedModel.load(bad)
    obj = np.array([Evil()], dtype=object)
    bad2 = tmp_path / "evil2.npz"
    np.savez(bad2, meta=obj, checksum=obj)
    with pytest.raises(ModelFileError):
        TrainedModel.load(bad2)
    assert not marker.exists()


def test_element_outputs_round_trip_and_are_named_untransferable_to_amptorch(water, tmp_path):
    from mfbo.objectives._amptorch_config import untransferable_settings
    from mfbo.training import TrainConfig, TrainedModel, train
    from tests.training.conftest import SMALL_FP

    cfg = TrainConfig(fp_params=SMALL_FP, num_layers=1, num_nodes=6, epochs=2, batch_size=4, lr=1e-2,
                      element_outputs=True)
    model = train(cfg, water[:8], water[30:33]).model
    assert model.network.net[-1].out_features == 2  # H and O
    loaded = TrainedModel.load(model.save(tmp_path / "m.npz"))
    a, b = model.predict(water[33:36]), loaded.predict(water[33:36])
    np.testing.assert_array_equal(a["energy"], b["energy"])
    notes = untransferable_settings(cfg.to_dict())
    assert any(n.startswith("element_outputs:") for n in notes)
    assert not any(n.startswith("element_outputs:") for n in untransferable_settings(TrainConfig().to_dict()))
