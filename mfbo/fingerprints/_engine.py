"""Vectorised GMP evaluation in torch (float64), batched over many structures.

For a centre atom i, probe sigma s and MCSH component c,

    comp_i[s, c] = sum_{pairs p of i} sum_{gaussians g of elem(j)} A_s B_g (pi/gamma)^1.5
                   exp(-alpha_s beta_g / gamma |d_p|^2) E[T_c(X)],  X ~ N(lambda d_p, v I),

with gamma = alpha_s + beta_g, lambda = beta_g/gamma, v = 1/(2 gamma). Expanding E[T_c] in
raw normal moments (see :mod:`._mcsh`) gives

    comp_p[s, c] = sum_km S_p[s, km] Q_p[km, c],
    S_p[s, (k, M)] = sum_g w_psg lambda^k v^M          (per-element tables x one exp per g)
    Q_p[km, c]     = sum_d W[d, km, c] d_p^(a,b,c)     (one small matmul)

Values: S_p (one exp table per neighbour element, then a per-sigma batched matmul, pair
innermost) and the d-monomials of every pair are placed in a padded (centre, 32-neighbour-slot)
layout, so the neighbour sum of their outer products is one batched matmul; contracting with W
gives the components. Features then combine components per group (signed value, root of the sum
of squares, or weighted sum of squares).

Jacobian: the same factorisation with dS/d(r^2) (from the same exp table) and the derivative of
the d-monomials. Per centre, d feature / d component is one coefficient table; per pair, slices
of a few thousand pairs are processed pair-innermost in reused per-thread buffers that stay in
cache: the dS/dr2 term goes through one (components -> groups) matmul, the S dQ/dx term through
a short list of nonzero (component, axis, power) entries, and the slice is transposed once to
pair-major rows and summed per (i, j).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from decimal import Decimal, localcontext

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
_SLICE = 4096  # pairs per Jacobian slice: its buffers (~2 MB each) stay in cache
_CANCELLATION = 64.0  # a chain whose plain sum loses fewer than 6 bits stays Gaussian by Gaussian
_CHAIN_STEP = 0.01  # Gaussians chain when their decays differ by <= this / cutoff^2 (see _decay_chains)


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
        self.GT2 = (2.0 * G.t()).contiguous().to(device)  # with the 2 of d(r^2)/d vec
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
        # The Q rows and the nonzero H_x rows (below) come from one (R, D) @ (D, P) product.
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
        # The Jacobian's S * H term, sparse: one entry (feature group, axis x, power k, component c,
        # row) per nonzero row of W^T d(dmono)/dx, pre-scaled by the group weight of c. Dense
        # (k, c, x) blocks are mostly zero (d(d_y)/dx = 0, ...), so entries skip two thirds of the work.
        comp_fg = [fgi for _, fgi, _ in gg]  # gg holds one (c, group, weight) per component, c ascending
        comp_w = [w for _, _, w in gg]
        entries, hrows, off = [], [], 0
        for k, c0, c1 in runs:
            for c in range(c0, c1):
                for ax in range(3):
                    row = mats[1 + ax][off + c - c0]
                    if bool((row != 0).any()):
                        entries.append((comp_fg[c], ax, k, c, WQ.shape[0] + len(hrows)))
                        hrows.append(comp_w[c] * row)
            off += c1 - c0
        self.jac_entries = entries
        self.WQH2 = torch.cat([WQ, *([torch.stack(hrows)] if hrows else [])]).contiguous().to(device)
        self.comp_fg = torch.as_tensor(comp_fg, dtype=torch.long, device=device)
        # Feature columns as rows of an (NFG, S) grid; usually the identity (groups x sorted sigmas).
        col_rows = self.col_fg * self.n_sigma + self.col_s
        self.col_rows = (
            None if torch.equal(col_rows, torch.arange(len(col_rows), device=device)) else col_rows
        )
        # Each d-monomial (but 1) is a lower one times one coordinate: one product per monomial.
        self.dmono_parent = [
            (dindex[(*m[:ax], m[ax] - 1, *m[ax + 1 :])], ax) if sum(m) else (-1, -1)
            for m in self.dmonos
            for ax in [next((a for a in range(3) if m[a]), -1)]
        ]
        # Probe prefactor A and exponent alpha per sigma.
        sig = torch.tensor(sigmas, dtype=dt)
        A = 1.0 / (sig * math.sqrt(2.0 * math.pi))
        if scheme == "gmpordernorm":
            A = A**3
        self.A = A
        self.alpha = 1.0 / (2.0 * sig * sig)
        self._elem: dict[str, ElementRadial] = {}

    def element_tables(self, symbol: str) -> ElementRadial:
        """Radial tables of a neighbour element (built once per plan, see :class:`ElementRadial`)."""
        got = self._elem.get(symbol)
        if got is None:
            got = self._elem[symbol] = self._build_element(symbol)
        return got

    def _build_element(self, symbol: str) -> ElementRadial:
        dens = self.params.density(symbol)
        B = torch.tensor(dens.B, dtype=torch.float64)
        beta = torch.tensor(dens.beta, dtype=torch.float64)
        alpha = self.alpha[:, None]
        gamma = alpha + beta[None, :]
        lam = beta[None, :] / gamma
        var = 0.5 / gamma
        pref = self.A[:, None] * B[None, :] * (math.pi / gamma) ** 1.5
        decay = alpha * beta[None, :] / gamma  # (S, G), 1/Å^2
        coef = pref[..., None] * lam[..., None] ** self.k_pow * var[..., None] ** self.m_pow  # (S, G, K)
        coef_d = coef * (-decay)[..., None]  # coefficients of dS/d(r^2)
        S, G = decay.shape
        neg_decay = -decay.clone()
        neg_delta = torch.zeros(S, G, dtype=torch.float64)
        member = torch.zeros(S, G, dtype=torch.bool)
        limit = _CHAIN_STEP / (self.params.cutoff * self.params.cutoff)
        for s in range(S):
            for chain in _decay_chains(decay[s].tolist(), limit):
                if len(chain) == 1:
                    continue
                tails, tails_d, decays = _exact_chain(
                    self.sigmas[s],
                    self.params.fp_scheme,
                    [dens.B[g] for g in chain],
                    [dens.beta[g] for g in chain],
                    self.km,
                )
                if _cancellation(tails) <= _CANCELLATION and _cancellation(tails_d) <= _CANCELLATION:
                    continue  # the plain sum loses at most a few bits: keep the cheaper form
                for j, g in enumerate(chain):
                    coef[s, g] = _f64(tails[j])
                    coef_d[s, g] = _f64(tails_d[j])
                    if j:
                        member[s, g] = True
                        neg_decay[s, g] = -float(decays[j - 1])
                        neg_delta[s, g] = -float(decays[j] - decays[j - 1])
        member = member.reshape(-1)
        rows = torch.nonzero(member).reshape(-1)
        dev = self.device
        return ElementRadial(
            neg_decay=neg_decay.reshape(-1, 1).contiguous().to(dev),
            rows=tuple(int(r) for r in rows),
            neg_delta=neg_delta.reshape(-1)[rows].reshape(-1, 1).contiguous().to(dev),
            member=member.to(dev),
            neg_delta_all=neg_delta.reshape(-1).to(dev),
            # Block-diagonal over sigmas: one (P, S*G) @ (S*G, S*K) product gives every S[p, s, k].
            blockdiag=torch.block_diag(*coef.unbind(0)).to(dev),
            # [S; dS/dr2][s] (2K, P) = table[s] @ E[s] (G, P): per sigma, a batched matmul with S
            # times fewer products than the block-diagonal form.
            table=torch.cat([coef, coef_d], dim=2).transpose(1, 2).contiguous().to(dev),
        )


@dataclass(frozen=True)
class ElementRadial:
    """Radial tables of one neighbour element for a plan (S sigmas, G Gaussians, K moment terms).

    The radial factor of a pair at squared distance r2 (Å^2) is

        S[s, k](r2) = sum_g T[s, g, k] exp(-c[s, g] r2),

    evaluated as S[s] = coef[s] @ E[s] from G exponential columns E[s](r2). A Gaussian far (in
    decay c) from the others is its own column, E = exp(-c r2), coef = T. Gaussians whose decays
    form a chain of close values c_1 <= c_2 <= ... (valence fits such as Al's two ~8.9e5 e/Å^3
    Gaussians of opposite sign whose exponents differ by 1e-4 relative) are summed by parts:

        sum_i T_i exp(-c_i r2) = sum_j U_j (E_j - E_(j-1)),  U_j = sum_(i >= j) T_i,
        E_j - E_(j-1) = exp(-c_(j-1) r2) expm1(-(c_j - c_(j-1)) r2),  E_0 = 0,

    with the tail sums U_j computed in 50-digit arithmetic. Summing the Gaussians one by one in
    float64 rounds each huge term and leaves the cancellation to the rounding (relative errors up
    to 1e-4 on small order-4 features, which sum such terms over many neighbours); here every
    term is about the size of the result.

    Attributes:
        neg_decay: (S*G, 1) -c of each column's exponential, 1/Å^2 (row s * G + g).
        rows: columns that carry an expm1 factor; neg_delta: (len(rows), 1) their -(c_j - c_(j-1)).
        member: (S*G,) bool, the same columns as a mask; neg_delta_all: (S*G,) (0 elsewhere).
        blockdiag: (S*G, S*K) coefficients, block-diagonal over sigmas.
        table: (S, 2*K, G) coefficients of S and of dS/d(r2), stacked.
    """

    neg_decay: torch.Tensor
    rows: tuple[int, ...]
    neg_delta: torch.Tensor
    member: torch.Tensor
    neg_delta_all: torch.Tensor
    blockdiag: torch.Tensor
    table: torch.Tensor


def _decay_chains(decays: list[float], limit: float) -> list[list[int]]:
    """Gaussians (indices into ``decays``, 1/Å^2) in order of increasing decay, cut into chains
    wherever the step to the next decay exceeds ``limit`` (``_CHAIN_STEP`` / cutoff^2: inside the
    cutoff a step changes the exponential by at most 1%, so the sum by parts is never worse than
    the plain sum, and only near-equal exponents, the ones that cancel badly, pay for an expm1)."""
    chains: list[list[int]] = []
    last = None
    for g in sorted(range(len(decays)), key=lambda g: (decays[g], g)):
        if chains and decays[g] - last <= limit:
            chains[-1].append(g)
        else:
            chains.append([g])
        last = decays[g]
    return chains


def _cancellation(tails: list) -> float:
    """max over (k, M) of sum_i |T_i| / |sum_i T_i| for a chain given by its tail sums."""
    worst = 1.0
    for k in range(len(tails[0])):
        terms = [tails[j][k] - (tails[j + 1][k] if j + 1 < len(tails) else 0) for j in range(len(tails))]
        total = abs(tails[0][k])
        size = sum(abs(t) for t in terms)
        worst = max(worst, float("inf") if total == 0 else float(size / total))
    return worst


def _f64(values) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


def _exact_chain(sigma: float, scheme: str, B: list[float], beta: list[float], km) -> tuple:
    """Tail sums of a chain of Gaussians (in order of increasing decay), in 50-digit arithmetic.

    Per Gaussian i the term is T_i[k, M] = A B_i (pi/gamma_i)^1.5 lambda_i^k v_i^M for every (k, M)
    in ``km``, with gamma = alpha + beta, lambda = beta / gamma, v = 1 / (2 gamma),
    alpha = 1 / (2 sigma^2), A = 1 / (sigma sqrt(2 pi)) (cubed for gmpordernorm); its decay is
    c_i = alpha beta_i / gamma_i (1/Å^2).

    Returns:
        U: per chain position j, sum_(i >= j) T_i (one Decimal per (k, M));
        U_d: the same for -c_i T_i (the coefficients of dS/d(r2));
        c: the decays.
    """
    with localcontext() as ctx:
        ctx.prec = 50
        sig = Decimal(sigma)
        alpha = 1 / (2 * sig * sig)
        A = 1 / (sig * (2 * _PI).sqrt())
        if scheme == "gmpordernorm":
            A = A**3
        terms, terms_d, decays = [], [], []
        for b, be in zip(B, beta):
            bd, bed = Decimal(b), Decimal(be)
            gamma = alpha + bed
            ratio = _PI / gamma
            pref = A * bd * ratio * ratio.sqrt()
            lam, var = bed / gamma, 1 / (2 * gamma)
            c = alpha * bed / gamma
            t = [pref * lam**k * var**m for k, m in km]
            terms.append(t)
            terms_d.append([-c * x for x in t])
            decays.append(c)
        n, nk = len(terms), len(km)
        tails = [[sum(terms[i][k] for i in range(j, n)) for k in range(nk)] for j in range(n)]
        tails_d = [[sum(terms_d[i][k] for i in range(j, n)) for k in range(nk)] for j in range(n)]
        return tails, tails_d, decays


_WORKSPACE = threading.local()


def _workspace() -> dict:
    """This thread's scratch buffers (name -> flat tensor), reused across slices, batches and plans:
    fresh multi-MB tensors cost page faults as expensive as the arithmetic. They hold at most a
    few tens of MB (sized by the largest batch)."""
    ws = getattr(_WORKSPACE, "buffers", None)
    if ws is None:
        ws = _WORKSPACE.buffers = {}
    return ws


def _buffer(ws: dict, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A workspace tensor of ``shape`` (uninitialised), grown when too small."""
    numel = math.prod(shape)
    buf = ws.get(name)
    if buf is None or buf.numel() < numel or buf.device != like.device:
        buf = ws[name] = like.new_empty(max(numel, 1))
    return buf[:numel].view(shape)


def _zeros(*shape: int, like: torch.Tensor) -> torch.Tensor:
    """A fresh zero tensor; on the CPU from numpy, which asks the kernel for huge pages: touching a
    large fresh tensor then costs a few page faults instead of one per 4 KiB."""
    if like.device.type == "cpu":
        return torch.from_numpy(np.zeros(shape, dtype=np.float64)).to(like.dtype)
    return like.new_zeros(shape)


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
        vec: (P, 3) pair vectors r_j + shift - r_i, Å (property: a view of ``vec_t``).
        shift: (P, 3) Cartesian lattice shift, Å (None unless built ``with_shift``).
        elem_slices: (symbol, start, stop) of the element-sorted pairs.
        slot: (P,) row of each pair in a zero-padded layout of ``n_rows`` x ``_CHUNK`` slots, where
            each centre owns ceil(n_pairs / _CHUNK) consecutive rows.
        row_centre: (n_rows,) centre atom of each padded row.
        vec_t: (3, P) ``vec`` transposed; r2: (P,) squared pair distances, Å^2.
        vec_pad_t: (3, n_rows * _CHUNK) pair vectors in the padded layout (0 in empty slots).
    """

    n_atoms: list[int]
    offsets: np.ndarray
    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor | None
    elem_slices: list[tuple[str, int, int]]
    slot: torch.Tensor
    row_centre: torch.Tensor
    vec_t: torch.Tensor
    r2: torch.Tensor
    vec_pad_t: torch.Tensor

    @property
    def vec(self) -> torch.Tensor:
        """(P, 3) pair vectors (a transposed view of ``vec_t``)."""
        return self.vec_t.t()


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
    slot = row_start[i] * _CHUNK + np.concatenate(rr)
    row_centre = np.repeat(np.arange(len(counts)), rows_per_centre)
    # Pair vectors as (3, P) rows: 1-D gathers and scatters (fancy indexing of (P, 3) rows is slow).
    vec_rows = np.concatenate(vv).T
    vec_t = np.empty((3, len(order)))
    vec_pad_t = np.zeros((3, len(row_centre) * _CHUNK))
    for k in range(3):
        np.take(vec_rows[k], order, out=vec_t[k])
        vec_pad_t[k, slot] = vec_rows[k]
    dev = torch.device(device)
    vec_t = torch.from_numpy(vec_t).to(dev)
    return Batch(
        n_atoms,
        offsets,
        torch.from_numpy(i[order]).to(dev),
        torch.from_numpy(np.concatenate(jj)[order]).to(dev),
        torch.from_numpy(np.concatenate(ss)[order]).to(dev) if with_shift else None,
        elem_slices,
        torch.from_numpy(slot[order]).to(dev),
        torch.from_numpy(row_centre).to(dev),
        vec_t,
        vec_t[0] * vec_t[0] + vec_t[1] * vec_t[1] + vec_t[2] * vec_t[2],
        torch.from_numpy(vec_pad_t).to(dev),
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


def _radial(plan: Plan, batch: Batch, r2: torch.Tensor) -> torch.Tensor:
    """S (P, S, K): S[p, s, k] = sum_g exp(-c[s, g] r_p^2) coef[s, g, k] (see :class:`ElementRadial`)."""
    P = r2.shape[0]
    SK = plan.n_sigma * plan.nk
    if r2.requires_grad:  # autograd path: no out= writes
        parts = []
        for symbol, a, b in batch.elem_slices:
            rad = plan.element_tables(symbol)
            E = torch.exp(r2[a:b, None] * rad.neg_decay.view(1, -1))
            if rad.rows:
                M = torch.expm1(r2[a:b, None] * rad.neg_delta_all[None, :])
                E = E * torch.where(rad.member, M, torch.ones_like(M))
            parts.append(E @ rad.blockdiag)
        return torch.cat(parts, dim=0).view(P, plan.n_sigma, plan.nk)
    ws = _workspace()
    Sv = _buffer(ws, "sv", (P, SK), r2)
    for symbol, a, b in batch.elem_slices:
        rad = plan.element_tables(symbol)
        E = _buffer(ws, "exp", (rad.neg_decay.shape[0], b - a), r2)
        _columns(rad, ws, r2[a:b], E)
        torch.mm(E.t(), rad.blockdiag, out=Sv[a:b])
    return Sv.view(P, plan.n_sigma, plan.nk)


def _columns(rad: ElementRadial, ws: dict, r2: torch.Tensor, E: torch.Tensor) -> None:
    """Fill E (S*G, n) with the exponential columns of ``rad`` at squared distances r2 (n,)."""
    torch.mul(rad.neg_decay, r2, out=E).exp_()
    if rad.rows:
        n = r2.shape[0]
        M = _buffer(ws, "expm1", (len(rad.rows), n), r2)
        torch.mul(rad.neg_delta, r2, out=M).expm1_()
        for k, row in enumerate(rad.rows):  # a few rows: row views beat index_select/index_copy_
            E[row].mul_(M[k])


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


def _pooled_components(plan: Plan, batch: Batch, Sv: torch.Tensor, n_total: int) -> torch.Tensor:
    """comp (N, S, NC) = sum over each centre's pairs of S (x) dmono, contracted with W.

    Args:
        Sv: (S, K, P) radial factors, pair innermost (a strided view is fine).

    Pairs sit in a zero-padded (row, _CHUNK slot) layout, each centre owning whole rows, so the
    neighbour sum of the outer products is one batched matmul; the d-monomials are computed in
    that layout directly (empty slots give finite values that meet S = 0).
    """
    V = batch.row_centre.shape[0]
    S, K, D = plan.n_sigma, plan.nk, plan.nd
    ws = _workspace()
    X = _buffer(ws, "pad_s", (S, K, V * _CHUNK), batch.r2).zero_()
    X.index_copy_(2, batch.slot, Sv)
    dm = _dmonomials_t(plan, ws, batch.vec_pad_t)  # (D, V * _CHUNK)
    # Strided (V, S*K, _CHUNK) and (V, _CHUNK, D) views that BLAS reads directly.
    outer = torch.bmm(X.view(S * K, V, _CHUNK).transpose(0, 1), dm.view(D, V, _CHUNK).permute(1, 2, 0))
    pooled = batch.r2.new_zeros(n_total, S * K * D)
    pooled.index_add_(0, batch.row_centre, outer.view(V, -1))
    return pooled.view(n_total, S, K * D) @ plan.Wkd


def components(plan: Plan, batch: Batch, vec: torch.Tensor, n_total: int) -> torch.Tensor:
    """Per-atom MCSH components (N, S, NC), differentiable w.r.t. ``vec`` (index_add has a
    simple backward; the fast no-grad route is :func:`_pooled_components`)."""
    r2 = (vec * vec).sum(1)
    Sv = _radial(plan, batch, r2)
    T = _terms(plan, Sv, _dmonomials(plan, _powers(vec, plan.max_deg)))
    Tc = vec.new_zeros(n_total, plan.n_sigma, plan.nj).index_add(0, batch.i, T)
    return Tc @ plan.Wj


def compute_values(plan: Plan, batch: Batch) -> torch.Tensor:
    """Features (N_total, F) for a batch."""
    N = int(batch.offsets[-1])
    return _assemble(plan, _pooled_components(plan, batch, _radial_t(plan, batch, derivative=False), N))


def compute_torch(plan: Plan, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
    """Features as a differentiable function of ``positions`` (N_total, 3)."""
    vec = positions[batch.j] - positions[batch.i] + batch.shift
    comp = components(plan, batch, vec, positions.shape[0])
    return _assemble(plan, comp)


def _chain_coefficients(plan: Plan, comp: torch.Tensor) -> torch.Tensor:
    """d feature / d component per centre, as a (NC * S, N) table (row c * S + s).

    A feature (group g, sigma s) is comp (linear), sqrt(sum comp^2) (root) or sum w comp^2; its
    derivative is sum_c G[c, g] coef[c, s] d comp[c, s] with coef = 1, comp / feature (0 where the
    feature is 0) or 2 comp. The group weights G stay in the contraction.
    """
    N = comp.shape[0]
    v = torch.where(plan.squared, comp * comp, comp)
    pre = v @ plan.G  # (N, S, NFG)
    root = plan.fg_mode == _MODE_SQRT
    live = root & (pre > 0)
    scale = torch.where(live, 0.5 / torch.sqrt(torch.where(live, pre, torch.ones_like(pre))), (~root).to(pre))
    coef = torch.where(plan.squared, 2.0 * comp, torch.ones_like(comp)) * scale[:, :, plan.comp_fg]
    return coef.permute(2, 1, 0).reshape(plan.nc * plan.n_sigma, N).contiguous()


def _radial_t(plan: Plan, batch: Batch, derivative: bool) -> torch.Tensor:
    """S (S, K, P), or [S, dS/d(r^2)] (S, 2K, P) with ``derivative``, pair innermost.

    One (S*G, P_e) table of exponential columns and one batched matmul per neighbour element.
    """
    S, K, P = plan.n_sigma, plan.nk, batch.r2.shape[0]
    rows = 2 * K if derivative else K
    ws = _workspace()
    out = _buffer(ws, "svd", (S, rows, P), batch.r2)
    for symbol, a, b in batch.elem_slices:
        rad = plan.element_tables(symbol)
        E = _buffer(ws, "exp", (rad.neg_decay.shape[0], b - a), batch.r2)
        _columns(rad, ws, batch.r2[a:b], E)
        torch.bmm(rad.table[:, :rows], E.view(S, -1, b - a), out=out[:, :, a:b])
    return out


def _dmonomials_t(plan: Plan, ws: dict, vecT: torch.Tensor) -> torch.Tensor:
    """(D, n) d-monomials of pair vectors ``vecT`` (3, n), D ordered as ``plan.dmonos``."""
    out = _buffer(ws, "dmono", (plan.nd, vecT.shape[1]), vecT)
    for d, (parent, ax) in enumerate(plan.dmono_parent):
        if parent < 0:
            out[d].fill_(1.0)
        else:
            torch.mul(out[parent], vecT[ax], out=out[d])
    return out


def _jacobian_slice(plan: Plan, batch: Batch, ws: dict, coef, svd, vecT, p0: int, p1: int) -> torch.Tensor:
    """d feature[i_p] / d vec_p for pairs p0:p1 as (n, F * 3) (row p, column f * 3 + x).

    d comp[c, s] / d vec_x = 2 vec_x sum_k dS/dr2[s, k] Q[k, c] + sum_k S[s, k] H_x[k, c], with
    Q = W^T dmono and H_x = W^T d(dmono)/dx; the chain rule contracts it with ``coef`` and G:
    term 1 as (NC)->(NFG) matmul, term 2 entry by entry (see ``Plan.jac_entries``).
    """
    S, K, NC, n = plan.n_sigma, plan.nk, plan.nc, p1 - p0
    Sv, Sd = svd[:, :K, p0:p1], svd[:, K:, p0:p1]  # (S, K, n)
    r2 = batch.r2  # dtype and device for the buffers
    vs = vecT[:, p0:p1]
    QH = torch.mm(plan.WQH2, _dmonomials_t(plan, ws, vs), out=_buffer(ws, "qh", (plan.WQH2.shape[0], n), r2))
    cc = _buffer(ws, "coef", (NC * S, n), r2)
    torch.gather(coef, 1, batch.i[p0:p1].expand(NC * S, n), out=cc)
    cc = cc.view(NC, S, n)
    # Term 1: R[c, s] = sum_k dS/dr2[s, k] Q[k, c], weighted by coef and summed per group.
    R = _buffer(ws, "R", (NC, S, n), r2).zero_()
    off = 0
    for k, c0, c1 in plan.runs:
        R[c0:c1].addcmul_(QH[off : off + c1 - c0, None, :], Sd[None, :, k, :])
        off += c1 - c0
    R.mul_(cc)
    T1 = torch.mm(plan.GT2, R.view(NC, S * n), out=_buffer(ws, "t1", (plan.n_fg, S * n), r2))
    out = _buffer(ws, "dfeat", (plan.n_fg, S, 3, n), r2)
    for x in range(3):
        torch.mul(T1.view(plan.n_fg, S, n), vs[x], out=out[:, :, x, :])
    # Term 2: coef[c, s] S[s, k] H_x[k, c] into group fg(c), axis x.
    tmp = _buffer(ws, "tmp", (S, n), r2)
    for fg, ax, k, c, row in plan.jac_entries:
        torch.mul(Sv[:, k, :], QH[row], out=tmp)
        out[fg, :, ax, :].addcmul_(cc[c], tmp)
    rows = out.view(plan.n_fg * S, 3 * n)
    if plan.col_rows is not None:
        rows = rows.index_select(0, plan.col_rows)
    block = _buffer(ws, "block", (n, plan.n_features * 3), r2)
    block.copy_(rows.view(-1, n).t())  # pair-major for the per-(i, j) sums
    return block


def compute_with_jacobian(plan: Plan, batch: Batch):
    """Features and the pair-list Jacobian for a batch.

    The derivative is computed in slices of ``_SLICE`` pairs, pair-innermost (long contiguous
    loops), in reused buffers that stay in cache, and summed per (i, j) slice by slice.

    Returns:
        feats: (N, F); keys: (U,) sorted i * N + j; dfeat: (U, F, 3) with
        dfeat[u, m, k] = d feats[i_u, m] / d r_{j_u, k} (periodic images summed, i == j included).
    """
    vec = batch.vec
    N = int(batch.offsets[-1])
    P = vec.shape[0]
    F = plan.n_features
    svd = _radial_t(plan, batch, derivative=True)  # (S, 2K, P)
    comp = _pooled_components(plan, batch, svd[:, : plan.nk], N)
    feats = _assemble(plan, comp)
    coef = _chain_coefficients(plan, comp)
    # A pair's vector is r_j - r_i (+ shift): +d at (i, j), -d at (i, i); self images cancel.
    key_ij = batch.i * N + batch.j
    # Every (i, i) key is present: the self pair (i, i, no shift) is always in the list.
    keys, inv_ij = torch.unique(key_ij, return_inverse=True)
    inv_ii = torch.searchsorted(keys, batch.i * (N + 1))
    dfeat = _zeros(keys.shape[0], F * 3, like=vec)
    vecT = batch.vec_t  # (3, P)
    ws = _workspace()
    step = _SLICE if vecT.device.type == "cpu" else P  # slicing is for CPU caches; a GPU wants big ops
    for p0 in range(0, P, step):
        p1 = min(P, p0 + step)
        block = _jacobian_slice(plan, batch, ws, coef, svd, vecT, p0, p1)
        dfeat.index_add_(0, inv_ij[p0:p1], block)
        dfeat.index_add_(0, inv_ii[p0:p1], block, alpha=-1.0)
    return feats, keys, dfeat.view(-1, F, 3)
