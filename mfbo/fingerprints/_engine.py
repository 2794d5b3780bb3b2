"""Vectorised GMP evaluation in torch (float64), batched over many structures.

For a centre atom i, probe sigma s and MCSH component c,

    comp_i[s, c] = sum_{pairs p of i} sum_{gaussians g of elem(j)} A_s B_g (pi/gamma)^1.5
                   exp(-alpha_s beta_g / gamma |d_p|^2) E[T_c(X)],  X ~ N(lambda d_p, v I),

with gamma = alpha_s + beta_g, lambda = beta_g/gamma, v = 1/(2 gamma). Expanding E[T_c] in
raw normal moments (see :mod:`._mcsh`) gives

    comp_p[s, c] = sum_km S_p[s, km] Q_p[km, c],
    S_p[s, (k, M)] = sum_g w_psg lambda^k v^M          (per-element tables x one exp per g)
    Q_p[km, c]     = sum_d W[d, km, c] d_p^(a,b,c)     (one small matmul)

Values: S_p (per-element exp tables times a block-diagonal coefficient matrix) and the
d-monomials of every pair are scattered into a padded (centre, 32-neighbour-slot) layout, so
the neighbour sum of their outer products is one batched matmul; contracting with W gives
the components. Features then combine components per group (signed value, root of the sum
of squares, or weighted sum of squares). The Jacobian uses the same factorisation with
dS/d(r^2) and the derivative of the d-monomials, in a pair-innermost layout (long contiguous
loops), applies the chain rule per pair with the centre's values, and sums per (i, j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mfbo.fingerprints._mcsh import group_coefficient, group_members, moment_tables
from mfbo.fingerprints._neighbors import Structure, neighbor_pairs
from mfbo.fingerprints._params import GMPParams

__all__ = [
    "Plan",
    "get_plan",
    "Batch",
    "build_batch",
    "build_batch_from_pairs",
    "compute_values",
    "compute_torch",
    "compute_with_jacobian",
]

_MODE_LIN, _MODE_SQRT, _MODE_SQ = 0, 1, 2
_CHUNK = 32  # neighbour slots per padded row (bounds the padding waste per centre)


class Plan:
    """Constant tensors for one parameter set on one device (built once, cached)."""

    def __init__(self, params: GMPParams, device: torch.device):
        self.params = params
        self.device = device
        dt = torch.float64
        scheme = params.fp_scheme
        # Feature groups: gmp -> (order, group); gmpordernorm -> order (groups combined).
        pairs = []
        for order, groups, _ in params.mcsh:
            for g in groups:
                if (order, g) not in pairs:
                    pairs.append((order, g))
        tables = moment_tables(tuple(pairs), params.solid)
        self.tables = tables
        comps = tables.components
        nc = len(comps)
        fgroups: list[tuple] = []
        fg_index: dict = {}
        fg_mode: list[int] = []
        gg = []  # (component, feature group, weight)
        squared = np.zeros(nc, dtype=bool)
        for ci, (order, g, _member) in enumerate(comps):
            key = (order, g) if scheme == "gmp" else (order,)
            if key not in fg_index:
                fg_index[key] = len(fgroups)
                fgroups.append(key)
                if scheme == "gmp":
                    fg_mode.append(_MODE_LIN if len(group_members(order, g)) == 1 else _MODE_SQRT)
                else:
                    fg_mode.append(_MODE_SQ)
            fgi = fg_index[key]
            if fg_mode[fgi] == _MODE_LIN:
                gg.append((ci, fgi, 1.0))
            else:
                squared[ci] = True
                weight = 1.0 if scheme == "gmp" else float(group_coefficient(order, g))
                gg.append((ci, fgi, weight))
        G = torch.zeros(nc, len(fgroups), dtype=dt)
        for ci, fgi, w in gg:
            G[ci, fgi] = w
        sigmas = sorted({s for _, _, ss in params.mcsh for s in ss})
        sig_index = {s: k for k, s in enumerate(sigmas)}
        col_fg, col_s = [], []
        for order, groups, ss in params.mcsh:
            keys = [(order, g) for g in groups] if scheme == "gmp" else [(order,)]
            for key in keys:
                for s in ss:
                    col_fg.append(fg_index[key])
                    col_s.append(sig_index[s])
        self.sigmas = sigmas
        self.n_sigma = len(sigmas)
        self.nc = nc
        self.n_fg = len(fgroups)
        self.G = G.to(device)
        self.GT = G.t().contiguous().to(device)
        self.squared = torch.as_tensor(squared, device=device)
        self.fg_mode = torch.as_tensor(fg_mode, device=device)
        self.col_fg = torch.as_tensor(col_fg, dtype=torch.long, device=device)
        self.col_s = torch.as_tensor(col_s, dtype=torch.long, device=device)
        self.col_flat = self.col_s * self.n_fg + self.col_fg  # index into (S, NFG) flattened
        self.col_sqrt = self.fg_mode[self.col_fg] == _MODE_SQRT
        self.n_features = len(col_fg)
        # Moment terms, grouped by (k, M): block b pairs S[k_b, M_b] with every d-monomial of
        # degree k_b (contiguous in ``dmonos``): comp[c] = sum_j S[km_j] * dmono[d_j] * Wj[j, c].
        self.km = tables.km
        self.nk = len(tables.km)
        self.k_pow = torch.tensor([k for k, _ in tables.km], dtype=dt)
        self.m_pow = torch.tensor([m for _, m in tables.km], dtype=dt)
        W = torch.tensor(tables.W, dtype=dt)  # (D, K, NC)
        self.dmonos = tables.dmonos
        self.nd = len(self.dmonos)
        self.max_deg = max(sum(m) for m in self.dmonos)
        deg_start = {}
        for di, m in enumerate(self.dmonos):
            deg_start.setdefault(sum(m), di)
        blocks, rows, off = [], [], 0
        for kmi, (k, _) in enumerate(tables.km):
            a0 = deg_start[k]
            n = (k + 1) * (k + 2) // 2
            blocks.append((kmi, a0, a0 + n, off))
            rows.extend(W[a0 : a0 + n, kmi])
            off += n
        self.blocks = blocks  # (km index, d start, d stop, term offset)
        self.nj = off
        self.Wj = torch.stack(rows).to(device)  # (J, NC)
        self.Wkd = W.permute(1, 0, 2).reshape(self.nk * self.nd, -1).to(device)  # (K*D, NC)
        # Derivative path: Q[k, c] = sum_d W[d, k, c] dmono_d and H_x[k, c] = sum_d W[d, k, c]
        # d(dmono_d)/dx, only for the (k, c) that occur, as runs (k, c_lo, c_hi) of components.
        # All rows [Q runs; H_x runs; H_y runs; H_z runs] come from one (R, D) @ (D, P) product.
        dindex = {m: di for di, m in enumerate(self.dmonos)}
        used = (W != 0).any(dim=0)  # (K, NC)
        runs = []
        for k in range(self.nk):
            c = 0
            while c < nc:
                if used[k, c]:
                    c0 = c
                    while c < nc and used[k, c]:
                        c += 1
                    runs.append((k, c0, c))
                else:
                    c += 1
        rows_q = [W[:, k, c] for k, c0, c1 in runs for c in range(c0, c1)]  # each (D,)
        WQ = torch.stack(rows_q)  # (Rq, D)
        mats = [WQ]
        for ax in range(3):
            Wx = torch.zeros_like(WQ)
            for di, m in enumerate(self.dmonos):
                if m[ax]:
                    lower = list(m)
                    lower[ax] -= 1
                    Wx[:, dindex[tuple(lower)]] += m[ax] * WQ[:, di]
            mats.append(Wx)
        self.runs = runs
        self.n_run_rows = WQ.shape[0]
        self.WQH = torch.cat(mats, dim=0).contiguous().to(device)  # (4*Rq, D)
        # Probe prefactor A and exponent alpha per sigma.
        sig = torch.tensor(sigmas, dtype=dt)
        A = 1.0 / (sig * math.sqrt(2.0 * math.pi))
        if scheme == "gmpordernorm":
            A = A**3
        self.A = A
        self.alpha = 1.0 / (2.0 * sig * sig)
        self._elem: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def element_tables(self, symbol: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables of a neighbour element: decay (S*G,) and block-diagonal coefficients
        (S*G, S*K) such that S[p, s, k] = sum_g exp(-decay[s, g] r_p^2) coef[s, g, k]."""
        got = self._elem.get(symbol)
        if got is not None:
            return got
        dens = self.params.density(symbol)
        B = torch.tensor(dens.B, dtype=torch.float64)
        beta = torch.tensor(dens.beta, dtype=torch.float64)
        alpha = self.alpha[:, None]
        gamma = alpha + beta[None, :]
        lam = beta[None, :] / gamma
        var = 0.5 / gamma
        pref = self.A[:, None] * B[None, :] * (math.pi / gamma) ** 1.5
        decay = alpha * beta[None, :] / gamma
        coef = pref[..., None] * lam[..., None] ** self.k_pow * var[..., None] ** self.m_pow  # (S, G, K)
        # Block-diagonal over sigmas: one (P, S*G) @ (S*G, S*K) product gives every S[p, s, k].
        blockdiag = torch.block_diag(*coef.unbind(0))
        got = (decay.reshape(-1).to(self.device), blockdiag.to(self.device))
        self._elem[symbol] = got
        return got


_PLANS: dict = {}


def get_plan(params: GMPParams, device) -> Plan:
    device = torch.device(device)
    key = (params.cache_key(), params.fp_scheme, str(device))
    plan = _PLANS.get(key)
    if plan is None:
        plan = Plan(params, device)
        if len(_PLANS) > 16:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


@dataclass
class Batch:
    """Pairs of several structures, concatenated (atom indices offset per structure).

    Attributes:
        n_atoms: per structure.
        offsets: (n_structures + 1,) atom offsets.
        i, j: (P,) global atom indices (centre, neighbour), sorted by neighbour element.
        vec: (P, 3) pair vectors r_j + shift - r_i, Å.
        shift: (P, 3) Cartesian lattice shift, Å (None unless built ``with_shift``).
        elem_slices: (symbol, start, stop) of the element-sorted pairs.
        slot: (P,) row of each pair in a zero-padded layout of ``n_rows`` x ``_CHUNK`` slots, where
            each centre owns ceil(n_pairs / _CHUNK) consecutive rows.
        row_centre: (n_rows,) centre atom of each padded row.
    """

    n_atoms: list[int]
    offsets: np.ndarray
    i: torch.Tensor
    j: torch.Tensor
    vec: torch.Tensor
    shift: torch.Tensor | None
    elem_slices: list[tuple[str, int, int]]
    slot: torch.Tensor
    row_centre: torch.Tensor


def build_batch(structs: list[Structure], cutoff: float, device) -> Batch:
    """Neighbour lists of several structures as one element-sorted pair list."""
    return build_batch_from_pairs(
        structs, [neighbor_pairs(s, cutoff) for s in structs], device, with_shift=True
    )


def build_batch_from_pairs(
    structs: list[Structure], pairs: list, device, *, with_shift: bool = False
) -> Batch:
    """Concatenate precomputed neighbour pairs (see :func:`neighbor_pairs`) into a batch.

    ``with_shift`` also stores the Cartesian lattice shifts (needed by the autograd path).
    """
    ii, jj, vv, ss, ee, rr = [], [], [], [], [], []
    n_atoms = [len(s.numbers) for s in structs]
    offsets = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    for k, (s, (i, j, S, D, rank)) in enumerate(zip(structs, pairs)):
        off = offsets[k]
        ii.append(i + off)
        jj.append(j + off)
        vv.append(D)
        if with_shift:
            ss.append(S.astype(np.float64) @ s.cell)
        ee.append(s.numbers[j].astype(np.uint8))  # uint8 keys: numpy's stable sort is a radix sort
        rr.append(rank)
    i = np.concatenate(ii)
    z = np.concatenate(ee)
    order = np.argsort(z, kind="stable")
    z = z[order]
    bounds = np.flatnonzero(np.diff(z)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(z)]])
    from ase.data import chemical_symbols

    elem_slices = [(chemical_symbols[int(z[a])], int(a), int(b)) for a, b in zip(starts, stops)]
    # Padded (centre, neighbour slot) layout: the sum over neighbours becomes one batched matmul.
    counts = np.bincount(i, minlength=int(offsets[-1]))
    rows_per_centre = -(-counts // _CHUNK)
    row_start = np.concatenate([[0], np.cumsum(rows_per_centre)[:-1]])
    rank = np.concatenate(rr)
    slot = (row_start[i] + rank // _CHUNK) * _CHUNK + rank % _CHUNK
    row_centre = np.repeat(np.arange(len(counts)), rows_per_centre)
    i = i[order]
    j = np.concatenate(jj)[order]
    vec = np.concatenate(vv)[order]
    shift = np.concatenate(ss)[order] if with_shift else None
    slot = slot[order]
    dev = torch.device(device)
    return Batch(
        n_atoms,
        offsets,
        torch.from_numpy(i).to(dev),
        torch.from_numpy(j).to(dev),
        torch.from_numpy(vec).to(dev),
        torch.from_numpy(shift).to(dev) if with_shift else None,
        elem_slices,
        torch.from_numpy(slot).to(dev),
        torch.from_numpy(row_centre).to(dev),
    )


def _powers(vec: torch.Tensor, max_deg: int) -> list[list[torch.Tensor]]:
    """pw[ax][n] = vec[:, ax]^n as (P,) tensors."""
    out = []
    for ax in range(3):
        x = vec[:, ax]
        col = [torch.ones_like(x), x]
        for _ in range(2, max_deg + 1):
            col.append(col[-1] * x)
        out.append(col[: max_deg + 1])
    return out


def _dmonomials(plan: Plan, pw) -> torch.Tensor:
    """(P, D) d-monomials d_x^a d_y^b d_z^c, D ordered as ``plan.dmonos``."""
    cols = []
    for a, b, c in plan.dmonos:
        cols.append(pw[0][a] * pw[1][b] * pw[2][c])
    return torch.stack(cols, dim=1)


def _radial(plan: Plan, batch: Batch, r2: torch.Tensor, derivative: bool):
    """S (P, S, K) and optionally dS/d(r^2) (P, S, K)."""
    P = r2.shape[0]
    SK = plan.n_sigma * plan.nk
    grad = r2.requires_grad
    if grad:
        parts = []
    else:
        Sv = r2.new_empty(P, SK)
        Sd = r2.new_empty(P, SK) if derivative else None
    for symbol, a, b in batch.elem_slices:
        decay, blockdiag = plan.element_tables(symbol)  # (S*G,), (S*G, S*K)
        E = torch.exp(r2[a:b, None] * (-decay)[None, :])  # (Pe, S*G)
        if grad:  # autograd path: no out= writes
            parts.append(E @ blockdiag)
            continue
        torch.mm(E, blockdiag, out=Sv[a:b])
        if derivative:
            torch.mm(E * (-decay), blockdiag, out=Sd[a:b])
    if grad:
        Sv = torch.cat(parts, dim=0)
    shape = (P, plan.n_sigma, plan.nk)
    return Sv.view(shape), (Sd.view(shape) if derivative else None)


def _terms(plan: Plan, Sv: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
    """T (P, S, J): T[p, s, j] = S[p, s, km_j] * dmono[p, d_j] (autograd path)."""
    return torch.cat([Sv[:, :, k, None] * dm[:, None, a:b] for k, a, b, _ in plan.blocks], dim=2)


def _assemble(plan: Plan, comp: torch.Tensor) -> torch.Tensor:
    """Features (N, F) from components (N, S, NC); roots get a finite gradient at 0."""
    v = torch.where(plan.squared, comp * comp, comp)
    pre = (v @ plan.G).reshape(comp.shape[0], -1)  # (N, S*NFG)
    cols = pre[:, plan.col_flat]
    pos = cols > 0
    root = torch.sqrt(torch.where(pos, cols, torch.ones_like(cols)))
    return torch.where(plan.col_sqrt, torch.where(pos, root, torch.zeros_like(cols)), cols)


def _pooled_components(plan: Plan, batch: Batch, Sv: torch.Tensor, dm: torch.Tensor, n_total: int):
    """comp (N, S, NC) = sum over each centre's pairs of S (x) dmono, contracted with W.

    Pairs are scattered into a zero-padded (N, max_neighbours, .) layout so the neighbour sum
    of the outer products is one batched matmul over rows of _CHUNK slots.
    """
    V = batch.row_centre.shape[0]
    P = Sv.shape[0]
    X = Sv.new_zeros(V * _CHUNK, plan.n_sigma * plan.nk)
    X.index_copy_(0, batch.slot, Sv.reshape(P, -1))
    Y = dm.new_zeros(V * _CHUNK, plan.nd)
    Y.index_copy_(0, batch.slot, dm)
    outer = torch.bmm(X.view(V, _CHUNK, -1).transpose(1, 2), Y.view(V, _CHUNK, -1))  # (V, S*K, D)
    pooled = Sv.new_zeros(n_total, outer.shape[1] * outer.shape[2])
    pooled.index_add_(0, batch.row_centre, outer.view(V, -1))
    return pooled.view(n_total, plan.n_sigma, plan.nk * plan.nd) @ plan.Wkd


def components(plan: Plan, batch: Batch, vec: torch.Tensor, n_total: int) -> torch.Tensor:
    """Per-atom MCSH components (N, S, NC); differentiable w.r.t. ``vec``."""
    r2 = (vec * vec).sum(1)
    Sv, _ = _radial(plan, batch, r2, derivative=False)
    dm = _dmonomials(plan, _powers(vec, plan.max_deg))
    if not (Sv.requires_grad or dm.requires_grad):
        return _pooled_components(plan, batch, Sv, dm, n_total)
    # Differentiable route (index_add has a simple backward).
    T = _terms(plan, Sv, dm)
    Tc = vec.new_zeros(n_total, plan.n_sigma, plan.nj).index_add(0, batch.i, T)
    return Tc @ plan.Wj


def compute_values(plan: Plan, batch: Batch) -> torch.Tensor:
    """Features (N_total, F) for a batch."""
    comp = components(plan, batch, batch.vec, int(batch.offsets[-1]))
    return _assemble(plan, comp)


def compute_torch(plan: Plan, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
    """Features as a differentiable function of ``positions`` (N_total, 3)."""
    vec = positions[batch.j] - positions[batch.i] + batch.shift
    comp = components(plan, batch, vec, positions.shape[0])
    return _assemble(plan, comp)


def compute_with_jacobian(plan: Plan, batch: Batch):
    """Features and the pair-list Jacobian for a batch.

    The derivative part works in a pair-innermost layout (..., P) so every elementwise
    step is a long contiguous loop.

    Returns:
        feats: (N, F); keys: (U,) sorted i * N + j; dfeat: (U, F, 3) with
        dfeat[u, m, k] = d feats[i_u, m] / d r_{j_u, k} (periodic images summed, i == j included).
    """
    vec = batch.vec
    N = int(batch.offsets[-1])
    P = vec.shape[0]
    S, K, NC, F = plan.n_sigma, plan.nk, plan.nc, plan.n_features
    r2 = (vec * vec).sum(1)
    Sv, Sd = _radial(plan, batch, r2, derivative=True)  # (P, S, K)
    pw = _powers(vec, plan.max_deg)
    comp = _pooled_components(plan, batch, Sv, _dmonomials(plan, pw), N)  # (N, S, NC)
    feats = _assemble(plan, comp)

    # d comp_p / d vec_p [s, x, c] = 2 vec_x sum_k dS/dr2[s, k] Q[k, c] + sum_k S[s, k] H[x, k, c]
    # with Q = W^T dmono and H = W^T d(dmono)/dx.
    SvT = Sv.reshape(P, S * K).t().contiguous().view(S, K, P)
    SdT = Sd.reshape(P, S * K).t().contiguous().view(S, K, P)
    dmT = torch.stack([pw[0][a] * pw[1][b] * pw[2][c] for a, b, c in plan.dmonos], dim=0)  # (D, P)
    QH = (plan.WQH @ dmT).view(4, plan.n_run_rows, P)
    vecT = (2.0 * vec).t().contiguous()  # (3, P)
    R = torch.zeros(S, NC, P, dtype=vec.dtype, device=vec.device)
    off = 0
    for k, c0, c1 in plan.runs:
        R[:, c0:c1].addcmul_(SdT[:, k, None, :], QH[0, None, off : off + c1 - c0])
        off += c1 - c0
    dcomp = torch.empty(S, 3, NC, P, dtype=vec.dtype, device=vec.device)
    for x in range(3):
        torch.mul(R, vecT[x], out=dcomp[:, x])  # first touch: no separate zero fill
    off = 0
    for k, c0, c1 in plan.runs:
        n = c1 - c0
        for x in range(3):
            dcomp[:, x, c0:c1].addcmul_(SvT[:, k, None, :], QH[1 + x, None, off : off + n])
        off += n

    # Chain rule through squares and roots, with the centre's values gathered per pair.
    mult = torch.where(plan.squared, 2.0 * comp, torch.ones_like(comp)).reshape(N, S * NC)
    dcomp.mul_(mult.t().contiguous().index_select(1, batch.i).view(S, 1, NC, P))
    dpre = torch.matmul(plan.GT, dcomp)  # (S, 3, NFG, P)
    dsel = dpre[plan.col_s, :, plan.col_fg, :]  # (F, 3, P)
    live = plan.col_sqrt & (feats > 0)
    scale = torch.where(live, 0.5 / torch.where(live, feats, torch.ones_like(feats)), torch.ones_like(feats))
    scale = torch.where(plan.col_sqrt & ~live, torch.zeros_like(feats), scale)  # (N, F)
    # Scale and transpose to pair-major (P, F, 3) in one strided write.
    per_pair = torch.empty(P, F, 3, dtype=vec.dtype, device=vec.device)
    torch.mul(
        dsel, scale.t().contiguous().index_select(1, batch.i)[:, None, :], out=per_pair.permute(1, 2, 0)
    )
    per_pair = per_pair.view(P, F * 3)

    # Aggregate per (i, j): +d at (i, j), -d at (i, i); self images (j == i) cancel.
    key_ij = batch.i * N + batch.j
    key_ii = batch.i * (N + 1)
    # Every (i, i) key is present: the self pair (i, i, no shift) is always in the list.
    keys, inv_ij = torch.unique(key_ij, return_inverse=True)
    inv_ii = torch.searchsorted(keys, key_ii)
    U = keys.shape[0]
    dfeat = vec.new_zeros(U, F * 3)
    dfeat.index_add_(0, inv_ij, per_pair)
    dfeat.index_add_(0, inv_ii, per_pair, alpha=-1.0)
    dfeat = dfeat.view(U, F, 3)
    return feats, keys, dfeat
