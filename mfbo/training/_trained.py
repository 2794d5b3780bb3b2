"""A trained potential: network, fingerprint parameters, scalers; saving, loading, predicting.

The file format is a NumPy ``.npz`` archive read with ``allow_pickle=False``: arrays plus
one JSON metadata string and a SHA-256 checksum over everything, so loading never runs code
from the file and a truncated or edited file is refused with :class:`ModelFileError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mfbo.errors import ModelFileError
from mfbo.training._config import TrainConfig
from mfbo.training._core import ScaledPack, predict_pack
from mfbo.training._model import SingleNN
from mfbo.training._scaling import FeatureScaler, TargetScaler

__all__ = ["TrainedModel", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "mfbo-singlenn"
FORMAT_VERSION = 1


def _versions() -> dict:
    import ase

    import mfbo

    return {"mfbo": mfbo.__version__, "torch": torch.__version__, "numpy": np.__version__, "ase": ase.__version__}


def _checksum(meta_json: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class TrainedModel:
    """A trained GMP + SingleNN potential.

    Attributes:
        config: the TrainConfig it was trained with.
        network: the SingleNN (eval mode, CPU unless moved).
        feature_scaler, target_scaler: fitted on the training subset.
        metadata: dict (versions, n_features, elements of the training subset, ...).
    """

    def __init__(
        self,
        config: TrainConfig,
        network: SingleNN,
        feature_scaler: FeatureScaler,
        target_scaler: TargetScaler,
        metadata: dict | None = None,
    ):
        self.config = config
        self.network = network.eval()
        self.feature_scaler = feature_scaler
        self.target_scaler = target_scaler
        self.metadata = dict(metadata or {})
        self._gmp = None

    # ------------------------------------------------------------------ fingerprints
    @property
    def gmp_params(self):
        """The engine's GMPParams for this model's fingerprints."""
        if self._gmp is None:
            from mfbo.fingerprints import GMPParams

            self._gmp = GMPParams.from_fp_params(self.config.fp_params, fp_scheme=self.config.fp_scheme)
        return self._gmp

    @property
    def n_features(self) -> int:
        return int(self.metadata["n_features"])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # ------------------------------------------------------------------ prediction
    def scaled_pack(self, packed) -> ScaledPack:
        return ScaledPack.build(packed.to(self.device, self.dtype), self.feature_scaler, self.target_scaler)

    def predict_packed(self, packed, *, forces: bool = True, batch_size: int = 64):
        """Energies (n,) eV and forces (A, 3) eV/A (or None) of packed images, as float64 numpy arrays."""
        sp = self.scaled_pack(packed)
        energies, force = predict_pack(self.network, sp, self.target_scaler.scale, forces=forces, batch_size=batch_size)
        return energies.double().cpu().numpy(), None if force is None else force.double().cpu().numpy()

    def predict(self, images: Sequence, *, forces: bool = True, cache=None) -> dict:
        """Predict energies and forces of structures.

        Args:
            images: ``ase.Atoms`` (labels not needed).
            forces: also predict forces.
            cache: optional FingerprintCache.

        Returns:
            ``{"energy": (n,) eV, "forces": list of (n_atoms, 3) eV/A arrays or None}``.
        """
        from mfbo.training._featurize import featurize_images
        from mfbo.training._packed import pack_images

        images = list(images)
        fps = featurize_images(images, self.gmp_params, derivatives=forces, cache=cache)
        packed = pack_images(images, fps, jacobian=forces)
        energies, force = self.predict_packed(packed, forces=forces)
        per_image = None
        if force is not None:
            offsets = packed.atom_offsets.tolist()
            per_image = [force[offsets[k] : offsets[k + 1]] for k in range(len(images))]
        return {"energy": energies, "forces": per_image}

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Write the model to ``path`` (an ``.npz`` archive; no pickle). Returns the path."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for name, tensor in self.network.state_dict().items():
            arrays[f"net/{name}"] = tensor.detach().cpu().numpy()
        for name, value in self.feature_scaler.state().items():
            if isinstance(value, np.ndarray):
                arrays[f"fscaler/{name}"] = value
        arrays["tscaler/ref"] = self.target_scaler.ref
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "network_dtype": str(self.dtype).replace("torch.", ""),
            "feature_scaler_kind": self.feature_scaler.kind,
            "target_scaler": {k: v for k, v in self.target_scaler.state().items() if k != "ref"},
            "metadata": self.metadata,
            "versions": _versions(),
        }
        meta_json = json.dumps(meta, sort_keys=True)
        arrays["meta"] = np.frombuffer(meta_json.encode(), dtype=np.uint8)
        arrays["checksum"] = np.frombuffer(_checksum(meta_json, arrays).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> TrainedModel:
        """Read a model written by :meth:`save`.

        Raises:
            ModelFileError: missing, truncated, tampered with, or not an mfbo model file.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise ModelFileError(
                f"model file {path} is truncated or not an mfbo model file ({type(exc).__name__}: {exc})"
            ) from None
        if "meta" not in arrays or "checksum" not in arrays:
            raise ModelFileError(f"model file {path} is not an mfbo model file (no metadata/checksum)")
        try:
            meta_json = arrays.pop("meta").tobytes().decode()
            stored = arrays.pop("checksum").tobytes().decode()
            meta = json.loads(meta_json)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"model file {path} has unreadable metadata ({exc})") from None
        arrays_for_sum = dict(arrays)
        arrays_for_sum["meta"] = np.frombuffer(meta_json.encode(), dtype=np.uint8)
        if _checksum(meta_json, arrays_for_sum) != stored:
            raise ModelFileError(f"model file {path} fails its checksum: it was modified or damaged after saving")
        if meta.get("format") != FORMAT_NAME:
            raise ModelFileError(f"model file {path} has format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(meta.get("format_version", -1)) > FORMAT_VERSION:
            raise ModelFileError(
                f"model file {path} has format version {meta['format_version']}; this mfbo reads up to "
                f"{FORMAT_VERSION}: upgrade mfbo"
            )
        try:
            config = TrainConfig.from_dict(meta["config"])
            metadata = meta["metadata"]
            dtype = getattr(torch, meta["network_dtype"])
            network = SingleNN(
                int(metadata["n_features"]),
                config.num_layers,
                config.num_nodes,
                config.activation,
                config.batchnorm,
                config.dropout,
                elements=metadata["elements"] if config.element_outputs else None,
            ).to(dtype)
            state = {k[len("net/") :]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("net/")}
            network.load_state_dict(state)
            fscaler = FeatureScaler.from_state(
                {
                    "kind": meta["feature_scaler_kind"],
                    **{k[len("fscaler/") :]: v for k, v in arrays.items() if k.startswith("fscaler/")},
                }
            )
            tscaler = TargetScaler.from_state({**meta["target_scaler"], "ref": arrays["tscaler/ref"]})
        except Exception as exc:  # any inconsistency inside a file whose checksum matched
            raise ModelFileError(f"model file {path} is inconsistent: {type(exc).__name__}: {exc}") from None
        model = cls(config, network, fscaler, tscaler, metadata)
        model.metadata["versions_saved_with"] = meta.get("versions", {})
        return model
