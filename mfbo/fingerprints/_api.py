"""Public entry points: featurize one or many structures, values or values + Jacobian."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from mfbo.errors import FingerprintError
from mfbo.fingerprints._engine import (
    Batch,
    build_batch_from_pairs,
    compute_torch,
    compute_values,
    compute_with_jacobian,
    get_plan,
)
from mfbo.fingerprints._neighbors import neighbor_pairs, structure_from_atoms
from mfbo.fingerprints._params import GMPParams

__all__ = ["Fingerprints", "featurize", "featurize_many", "featurize_torch"]

# Work per batch: pairs x (sigmas x components [x 3]) elements kept below these. Batches of a
# few 10k pairs amortise the per-op overhead, keep the engine's scratch buffers at a few tens of
# MB per thread and give worker threads several batches each (bigger ones were no faster).
_VALUE_ELEMENTS = 2_000_000
_JAC_ELEMENTS = 3_000_000


@dataclass
class Fingerprints:
    """GMP fingerprints of one structure.

    Attributes:
        features: float64 (n_atoms, n_features), AMPTorch column order.
        pair_i, pair_j: int64 (P,) or None: centre and neighbour atom of each Jacobian block
            (every i == j included; periodic images of j summed).
        dfeatures: float64 (P, n_features, 3) or None:
            ``dfeatures[p, m, k] = d features[pair_i[p], m] / d positions[pair_j[p], k]`` (1/Å x
            feature units).
    """

    features: np.ndarray
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    dfeatures: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return self.features.shape[0]

    @property
    def has_derivatives(self) -> bool:
        return self.dfeatures is not None

    def forces(self, dE_dfeatures: np.ndarray) -> np.ndarray:
        """Forces from an energy gradient with respect to the features.

        Args:
            dE_dfeatures: (n_atoms, n_features), eV per feature unit.

        Returns:
            (n_atoms, 3) forces, eV/Å: ``F_j = -sum_p dfeatures[p]^T dE/dfeatures[pair_i[p]]``.
        """
        if self.dfeatures is None:
            raise FingerprintError("these fingerprints were computed without derivatives")
        contrib = np.einsum("pmk,pm->pk", self.dfeatures, dE_dfeatures[self.pair_i])
        out = np.zeros((self.n_atoms, 3))
        np.add.at(out, self.pair_j, -contrib)
        return out


def _check_params(params) -> GMPParams:
    if not isinstance(params, GMPParams):
        raise FingerprintError(
            f"params must be a GMPParams (use GMPParams.from_fp_params), got {type(params).__name__}"
        )
    return params


def _chunks(items: list, sizes: list[int], limit: int) -> Iterable[list]:
    """Split consecutive items so that the sizes in a chunk sum to at most ``limit`` (>= 1 item)."""
    chunk, total = [], 0
    for item, size in zip(items, sizes):
        if chunk and total + size > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size
    if chunk:
        yield chunk


def featurize_many(
    images: Sequence,
    params: GMPParams,
    *,
    derivatives: bool = False,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> list[Fingerprints]:
    """Featurise many structures, batching many images per torch call (no cache).

    Args:
        images: ASE ``Atoms`` objects.
        params: the GMP parameters.
        derivatives: also compute the pair-list Jacobian.
        progress: tqdm bar on stderr.
        device: torch device for the arithmetic (results come back as numpy arrays).

    Returns:
        One :class:`Fingerprints` per image, in order.

    Raises:
        DataError: an image is empty or periodic without a cell.
        ValenceDensityError: an element has no valence-density file.
    """
    params = _check_params(params)
    images = list(images)
    plan = get_plan(params, device)
    per_pair = plan.n_sigma * max(plan.nc, plan.nk) * (3 if derivatives else 1)
    limit = max(1, (_JAC_ELEMENTS if derivatives else _VALUE_ELEMENTS) // per_pair)
    # Validate every structure and check all elements have densities before any work.
    structs = [structure_from_atoms(a, where=f"image {k}") for k, a in enumerate(images)]
    for sym in sorted({s for st in structs for s in st.symbols}):
        plan.element_tables(sym)  # filled here, so worker threads only read the cache
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="fingerprints", unit="img", leave=False)
    # With several CPU threads, whole batches run side by side, one torch thread each: the
    # engine's many small ops scale poorly inside torch (a barrier per op, badly hit on a loaded
    # machine), while batches are independent (each worker has its own scratch buffers).
    threads = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    pool = (
        ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) if threads > 1 else None
    )
    neighbours = partial(neighbor_pairs, cutoff=params.cutoff, shifts=False)
    results = []  # per chunk: its image count and its Fingerprints (or a future of them)
    try:
        # Neighbour lists are cheap; compute them lazily in windows to size the batches.
        window = 64
        for w0 in range(0, len(structs), window):
            sub = structs[w0 : w0 + window]
            nls = list(pool.map(neighbours, sub)) if pool else [neighbours(s) for s in sub]
            sizes = [len(nl[0]) for nl in nls]
            for chunk in _chunks(list(range(len(sub))), sizes, limit):
                args = (plan, [sub[k] for k in chunk], [nls[k] for k in chunk], device, derivatives)
                if pool is None:
                    results.append(_featurize_chunk(*args))
                    if bar is not None:
                        bar.update(len(chunk))
                    continue
                fut = pool.submit(_featurize_chunk, *args)
                if bar is not None:
                    fut.add_done_callback(partial(_tick, bar, len(chunk)))
                results.append(fut)
        out: list[Fingerprints] = []
        for res in results:
            out.extend(res.result() if pool else res)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    return out


def _tick(bar, n: int, _future) -> None:
    bar.update(n)


def _featurize_chunk(plan, structs, nls, device, derivatives: bool) -> list[Fingerprints]:
    return _run_batch(plan, build_batch_from_pairs(structs, nls, device), derivatives)


def _run_batch(plan, batch: Batch, derivatives: bool) -> list[Fingerprints]:
    offsets = batch.offsets
    with torch.no_grad():
        if not derivatives:
            feats = compute_values(plan, batch).cpu().numpy()
            return [Fingerprints(feats[offsets[k] : offsets[k + 1]]) for k in range(len(batch.n_atoms))]
        feats_t, keys, dfeat = compute_with_jacobian(plan, batch)
    feats = feats_t.cpu().numpy()
    N = int(offsets[-1])
    keys = keys.cpu().numpy()
    dfeat = dfeat.cpu().numpy()
    gi = keys // N
    gj = keys % N
    # keys are sorted by centre atom, so each image's blocks are contiguous.
    bounds = np.searchsorted(gi, offsets)
    out = []
    for k in range(len(batch.n_atoms)):
        a, b = bounds[k], bounds[k + 1]
        off = offsets[k]
        out.append(
            Fingerprints(
                feats[off : offsets[k + 1]],
                gi[a:b] - off,
                gj[a:b] - off,
                np.ascontiguousarray(dfeat[a:b]),
            )
        )
    return out


def featurize(atoms, params: GMPParams, *, derivatives: bool = False, device="cpu") -> Fingerprints:
    """Featurise one structure.

    Args:
        atoms: ASE ``Atoms`` (positions Å; any pbc; triclinic cells fine).
        params: the GMP parameters.
        derivatives: also compute the pair-list Jacobian (see :class:`Fingerprints`).
        device: torch device for the arithmetic.

    Returns:
        :class:`Fingerprints` with ``features`` (n_atoms, n_features) float64.
    """
    return featurize_many([atoms], params, derivatives=derivatives, device=device)[0]


def featurize_torch(atoms, params: GMPParams, positions: torch.Tensor) -> torch.Tensor:
    """Fingerprints as a differentiable torch function of the positions.

    The neighbour list is built from ``positions`` (detached), with the cell, pbc and
    elements of ``atoms``; gradients flow through ``positions`` (autograd, also higher order).

    Args:
        atoms: ASE ``Atoms`` giving elements, cell and pbc.
        params: the GMP parameters.
        positions: (n_atoms, 3) tensor, Å, on the device to compute on.

    Returns:
        (n_atoms, n_features) tensor, float64.
    """
    params = _check_params(params)
    if positions.shape != (len(atoms), 3):
        raise FingerprintError(
            f"positions must have shape ({len(atoms)}, 3) for this structure, got {tuple(positions.shape)}"
        )
    probe = atoms.copy()
    probe.set_positions(positions.detach().cpu().double().numpy())
    struct = structure_from_atoms(probe)
    plan = get_plan(params, positions.device)
    batch = build_batch_from_pairs(
        [struct], [neighbor_pairs(struct, params.cutoff)], positions.device, with_shift=True
    )
    return compute_torch(plan, batch, positions.to(torch.float64))
