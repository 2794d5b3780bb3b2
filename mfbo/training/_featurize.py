"""Fingerprinting images through the engine, with or without the on-disk cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["featurize_images", "gmp_params_of", "resolve_cache"]


def gmp_params_of(config):
    """The engine's GMPParams for a TrainConfig."""
    from mfbo.fingerprints import GMPParams

    return GMPParams.from_fp_params(config.fp_params, fp_scheme=config.fp_scheme)


def resolve_cache(cache):
    """None/False -> None (no disk cache); a path -> FingerprintCache(path); a cache -> itself."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, (str, Path)):
        from mfbo.fingerprints import FingerprintCache

        return FingerprintCache(cache)
    return cache


def featurize_images(images: Sequence, params, *, derivatives: bool, cache=None, progress: bool = False) -> list:
    """Fingerprints (and, with ``derivatives``, pair-list Jacobians) of every image.

    Args:
        images: ``ase.Atoms``.
        params: GMPParams.
        derivatives: compute the Jacobian.
        cache: None (compute directly), a FingerprintCache, or a cache directory.
        progress: tqdm bar on stderr.
    """
    cache = resolve_cache(cache)
    if cache is not None:
        return list(cache.featurize_many(images, params, derivatives=derivatives, progress=progress))
    import mfbo.fingerprints as fingerprints

    if hasattr(fingerprints, "featurize_many"):
        # The engine batches many images per torch call: much faster than one call per image.
        return list(fingerprints.featurize_many(images, params, derivatives=derivatives, progress=progress))
    iterator = images
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(images, desc="fingerprints", unit="img", leave=False)
    return [fingerprints.featurize(atoms, params, derivatives=derivatives) for atoms in iterator]
