"""The enforced continuous operator: an SO(2)- or O(2)-steerable Fourier neural operator.

Every linear map is solved from the Lie-derivative constraint (:mod:`fieldsym.constraints`) instead
of being tied over a finite orbit, so the operator commutes with rotations by any angle (and, for O(2),
with reflections), not just quarter turns. Hidden features are sums of SO(2)/O(2) irreps
(:class:`~fieldsym.constraints.Irreps`, e.g. ``"8x0 + 4x0- + 8x1 + 4x2"``).

Spectral convolution. With ``theta_k = atan2(k_y, k_x)`` and ``rho = |k|`` (``k`` in cycles per domain,
``k_y`` along H), the kernel between an input irrep and an output irrep is

    W(k) = sum_{n, r} w_{n r} f_r(rho) s_{l_n}(rho) B_n(theta_k) * (i if l_n is odd else 1)

- ``B_n``: the angular basis of :func:`~fieldsym.constraints.spectral_basis`, harmonic order ``l_n``;
- ``f_r``: Gaussian bumps ``exp(-(rho - c_r)^2 / 2 s^2) + exp(-(rho + c_r)^2 / 2 s^2)`` (even in
  ``rho``, so smooth in ``k``) times the taper ``exp(1 - 1 / (1 - (rho / K)^2))`` that vanishes with all
  its derivatives at the disc edge ``rho = K``; the disc, unlike FieldFNO's square, is rotation-invariant;
- ``s_l(rho) = (rho / sqrt(rho^2 + 1))^l``: ``W`` behaves like ``rho^l cos(l theta)`` at ``k = 0``, a
  polynomial in ``k``; smooth ``W(k)`` means a spatially localized kernel, so a field that vanishes near
  the seam of the periodic box maps to one that does too (what the continuous Lie derivative needs);
- the ``i``: a real field's kernel satisfies ``W(-k) = conj(W(k))``; ``-k`` is ``theta + pi``, which
  multiplies order ``l`` by ``(-1)^l``, so odd orders are imaginary (the gradient is ``i k``), even
  orders real. The learned ``w_{n r}`` are real.

Equivariance ``W(R k) rho_in(R) = rho_out(R) W(k)`` holds for every rotation ``R`` by construction; on the
``rfft2`` lattice, quarter turns and axis reflections map sampled wave vectors onto sampled wave
vectors, so C4 (SO(2)) and D4 (O(2)) equivariance is exact to rounding. Continuous rotations are exact
for the underlying continuous operator and discretised only by the pointwise nonlinearity (aliasing,
shrinking with resolution). ``k`` counts cycles per domain on both axes, so a rotation of ``k`` is a
rotation of space only on a square domain.

Nonlinearity (:class:`NormActivation`): GELU on scalars (``"0"``); on pseudoscalars and 2-d irreps the
norm gate ``u -> u sigmoid(|u|_eps + b)`` with ``|u|_eps = sqrt(|u|^2 + eps^2)`` (smooth at 0), which
commutes with rotations and reflections because ``|u|`` is invariant.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fieldsym.constraints import (
    Irreps,
    channel_basis,
    harmonic_values,
    irrep_dim,
    spectral_basis,
)
from fieldsym.fields import FieldType
from fieldsym.models.spectral import irfft2_modes, rfft2_modes

NORM_EPS = 1e-3
_BAG_SUM = 0  # embedding_bag's mode number for "sum" (aten's private per-sample-weight backward takes it)


def _blocks(irreps: Irreps):
    """``(slice, multiplicity, label)`` of every block."""
    return [(sl, m, label) for sl, (m, label) in zip(irreps.slices(), irreps.blocks)]


class _BlockWeights(nn.Module):
    """Base of the solved layers: one weight block per connected irrep pair, ``(m_out, m_in, n_basis)``,
    all stored as one flat parameter ``weight`` in pair order (``weights`` gives the blocks as views).

    One parameter instead of a list of blocks: the embedding bag indexes the flat vector anyway, and a
    list costs a concatenation forward and a slice per block backward every step, plus an optimizer
    entry per block (about 380 of the 1,274 ops of the benchmark's steerable training step before
    session 4; a GPU's eager step is bound by the number of ops). Checkpoints written with the old
    ``weights.0``, ``weights.1``, ... keys still load (:meth:`_join_old_blocks`), and their optimizer state
    still resumes (:func:`join_old_block_optimizer_state`)."""

    def _set_blocks(self, blocks: list[torch.Tensor]) -> None:
        self.block_shapes = [tuple(b.shape) for b in blocks]
        self.register_parameter("weight", nn.Parameter(torch.cat([b.flatten() for b in blocks])) if blocks else None)
        self.register_load_state_dict_pre_hook(_BlockWeights._join_old_blocks)
        self._cast: tuple = ()

    @property
    def weights(self) -> tuple[torch.Tensor, ...]:
        """The weight blocks, views of ``weight``, in ``pairs`` order."""
        return () if self.weight is None else self.split(self.weight)

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A flat tensor laid out like ``weight`` (the weight, its gradient) as per-pair block views."""
        sizes = [math.prod(shape) for shape in self.block_shapes]
        return tuple(part.view(shape) for part, shape in zip(flat.split(sizes), self.block_shapes))

    def _profiles_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The ``profiles`` buffer (kept in float64) in ``dtype``, converted once per buffer and dtype
        rather than every step (a copy op per layer and step)."""
        profiles = self.profiles
        if profiles.dtype == dtype or torch.compiler.is_compiling():
            return profiles.to(dtype)
        key = (profiles.data_ptr(), profiles._version, profiles.device, dtype)  # _version: written in place
        if not self._cast or self._cast[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                self._cast = (key, profiles.to(dtype))
        return self._cast[1]

    def _apply(self, fn, *args, **kwargs):
        self._cast = ()  # moved or converted: drop the copy (it would hold memory on the old device)
        return super()._apply(fn, *args, **kwargs)

    @staticmethod
    def _join_old_blocks(module, state_dict, prefix, *_) -> None:
        old = [f"{prefix}weights.{i}" for i in range(len(module.block_shapes))]
        if f"{prefix}weight" not in state_dict and old and all(key in state_dict for key in old):
            state_dict[f"{prefix}weight"] = torch.cat([state_dict.pop(key).flatten() for key in old])


def join_old_block_optimizer_state(model: nn.Module, param_groups: list[dict], saved: dict) -> dict:
    """An optimizer state dict written when each weight block of the solved layers was its own parameter,
    made to fit ``param_groups`` (the optimizer's groups for ``model`` now).

    Each such layer's entries (AdamW's ``exp_avg``, ``exp_avg_sq``; one per block, in block order) are
    flattened and concatenated like the blocks themselves, which is exact for an elementwise optimizer;
    ``step`` and other scalars are shared. ``saved`` comes back unchanged when its groups already have the
    optimizer's sizes, or when they do not have the sizes the old layout would give (then loading it
    fails with its own error)."""
    blocks = {id(m.weight): len(m.block_shapes) for m in model.modules()
              if isinstance(m, _BlockWeights) and m.weight is not None}
    sizes = [len(group["params"]) for group in saved["param_groups"]]
    old_sizes = [sum(blocks.get(id(p), 1) for p in group["params"]) for group in param_groups]
    if sizes == [len(group["params"]) for group in param_groups] or sizes != old_sizes:
        return saved
    state, groups, index = {}, [], 0
    for group, saved_group in zip(param_groups, saved["param_groups"]):
        old = iter(saved_group["params"])
        params = []
        for p in group["params"]:
            entries = [saved["state"][i] for i in [next(old) for _ in range(blocks.get(id(p), 1))]
                       if i in saved["state"]]
            if entries:  # (none: a parameter that was never stepped)
                state[index] = {key: torch.cat([e[key].flatten() for e in entries])
                                if torch.is_tensor(value) and value.dim() > 0 else value
                                for key, value in entries[0].items()}
            params.append(index)
            index += 1
        groups.append({**saved_group, "params": params})
    return {"state": state, "param_groups": groups}


def _register_bag(module: nn.Module, entries: list[torch.Tensor], rows: list[torch.Tensor],
                  sources: list[torch.Tensor], size: int) -> None:
    """Give ``module`` the tables of an embedding bag with one bag per output entry ``0..size-1``: the
    terms ``(entry, profile row, weight index)`` sorted by entry, as int32 buffers ``bag_rows``,
    ``bag_src``, ``bag_offsets`` and ``bag_of`` (each term's entry: embedding_bag's ``offset2bag``, which
    its per-sample-weight backward needs and which is fixed, so built here instead of every step)."""
    if not entries:  # a layer without weights (no equivariant map between its irreps)
        entries = rows = sources = [torch.zeros(0, dtype=torch.long)]
    entry = torch.cat(entries)
    order = torch.argsort(entry, stable=True)
    counts = torch.bincount(entry, minlength=size)
    tables = {"bag_rows": torch.cat(rows)[order], "bag_src": torch.cat(sources)[order],
              "bag_offsets": torch.cumsum(counts, 0) - counts, "bag_of": entry[order]}
    for name, table in tables.items():
        module.register_buffer(name, table.int(), persistent=False)


def _profile_bag(module: nn.Module, w: torch.Tensor, profiles: torch.Tensor) -> torch.Tensor:
    """``(size, width)``: entry ``e`` is ``sum_{n in bag e} w[src[n]] profiles[rows[n]]``, with the
    tables of :func:`_register_bag` on ``module``."""
    rows, offsets, src = module.bag_rows, module.bag_offsets, module.bag_src
    if torch.compiler.is_compiling():  # traced: the plain op (the autograd.Function would break the graph)
        return F.embedding_bag(rows, profiles, offsets, mode="sum", per_sample_weights=w[src])
    return _ProfileBag.apply(w, profiles, rows, offsets, src, module.bag_of)


CHANNEL_MAP_METHODS = ("conv", "bmm")


def channel_map(M: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None, method: str) -> torch.Tensor:
    """``(b, C_in, H, W) -> (b, C_out, H, W)``: ``M x + bias`` at every point, computed as

    - ``"conv"``: a 1x1 convolution (oneDNN on CPU, cuDNN on a GPU): one op forward, one backward;
    - ``"bmm"``: ``baddbmm`` of ``M`` broadcast over the batch (cuBLAS), three ops with the backward.

    A plain ``M @ x`` (what this was) transposes ``x`` and its output to contiguous copies forward and
    backward: 12 ops and four activation-sized copies per map. On an H200 both methods gave the same
    step time (the benchmark's gated model: 13 ms either way, experiments/README.md "Third lending"),
    so ``SteerableLinear.method`` is ``"conv"`` on every device (fewer ops; oneDNN 1.3-1.7x faster on CPU).
    """
    if method == "conv":
        return F.conv2d(x, M[:, :, None, None], bias)
    if method != "bmm":
        raise ValueError(f"channel_map: method must be one of {CHANNEL_MAP_METHODS}, got {method!r}")
    flat = x.flatten(2)  # (b, c, h w)
    M = M.expand(x.shape[0], -1, -1)
    out = torch.bmm(M, flat) if bias is None else torch.baddbmm(bias[None, :, None].to(x.dtype), M, flat)
    return out.unflatten(2, x.shape[2:])


class SteerableLinear(_BlockWeights):
    """Pointwise equivariant channel map ``(b, C_in, H, W) -> (b, C_out, H, W)``.

    Block ``(out a, in b)`` of the matrix is ``sum_n w[i, j, n] B_n`` with ``B_n`` from
    :func:`~fieldsym.constraints.channel_basis`; a bias only on invariant blocks (``"0"``, and ``"0-"``
    under SO(2)).

    The matrix is rebuilt every step as one embedding bag over the flat weight: entry ``e`` of
    the flattened matrix is ``sum_t coef_t w_flat[src_t]`` over its few terms (the basis elements are
    sparse: ``I`` and ``J`` for vector pairs). A handful of ops whatever the number of blocks, where a
    matmul per block pair costs a dozen ops each (a GPU step pays per op).
    """

    def __init__(self, irreps_in: Irreps | str, irreps_out: Irreps | str, group: str = "SO2", bias: bool = True):
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps.parse(irreps_in), Irreps.parse(irreps_out)
        self.group = group
        self.pairs: list[tuple[int, int]] = []
        blocks: list[torch.Tensor] = []
        std = 1 / math.sqrt(self.irreps_in.num_channels)
        out_sl, in_sl = self.irreps_out.slices(), self.irreps_in.slices()
        n_in = self.irreps_in.num_channels
        entries, sources, coefs, offset = [], [], [], 0
        for a, (m_a, la) in enumerate(self.irreps_out.blocks):
            for b, (m_b, lb) in enumerate(self.irreps_in.blocks):
                basis = channel_basis(la, lb, group).basis  # (n, d_a, d_b)
                if basis.shape[0] == 0:
                    continue
                self.pairs.append((a, b))
                blocks.append(std * torch.randn(m_a, m_b, basis.shape[0]))
                n, d_a, d_b = basis.shape
                # i/j = out/in copy, k = basis element, o/c = out/in component
                i, j, k, o, c = torch.meshgrid(*(torch.arange(s) for s in (m_a, m_b, n, d_a, d_b)), indexing="ij")
                coef = basis[k, o, c]
                keep = coef != 0
                row, col = out_sl[a].start + i * d_a + o, in_sl[b].start + j * d_b + c
                entries.append((row * n_in + col)[keep])
                sources.append((offset + (i * m_b + j) * n + k)[keep])
                coefs.append(coef[keep].to(torch.float64))
                offset += m_a * m_b * n
        # The matrix is an embedding bag like SteerableSpectralConv's kernel, with 1-wide profile rows:
        # one row per term, holding its basis coefficient.
        terms = torch.cat(coefs) if coefs else torch.zeros(0, dtype=torch.float64)
        _register_bag(self, entries, [torch.arange(len(terms))], sources, self.irreps_out.num_channels * n_in)
        self._set_blocks(blocks)
        self.register_buffer("profiles", terms[:, None], persistent=False)
        invariant = ("0",) if group == "O2" else ("0", "0-")
        mask = torch.zeros(self.irreps_out.num_channels)
        for sl, _, label in _blocks(self.irreps_out):
            if label in invariant:
                mask[sl] = 1
        self.register_buffer("bias_mask", mask, persistent=False)
        self.method = "conv"  # how the map is computed (channel_map; the same map either way)
        self.bias = nn.Parameter(torch.zeros(self.irreps_out.num_channels)) if bias and mask.any() else None

    def matrix(self) -> torch.Tensor:
        """``(C_out, C_in)``."""
        shape = (self.irreps_out.num_channels, self.irreps_in.num_channels)
        if self.weight is None:
            return self.bias_mask.new_zeros(shape)
        return _profile_bag(self, self.weight, self._profiles_as(self.weight.dtype)).reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else (self.bias * self.bias_mask).to(x.dtype)
        return channel_map(self.matrix().to(x.dtype), x, bias, self.method)

    def extra_repr(self) -> str:
        return f"'{self.irreps_in}' -> '{self.irreps_out}', group={self.group}"


class _Run(NamedTuple):
    """Channels ``start:stop`` of a feature: ``copies`` irrep copies of ``d`` components each (``d = 0``:
    scalars, GELU), gated with the biases ``gates`` (indices into ``NormActivation.biases``)."""

    start: int
    stop: int
    d: int
    copies: int
    gates: tuple[int, ...]


class NormActivation(nn.Module):
    """GELU on ``"0"`` blocks; ``u sigmoid(sqrt(|u|^2 + eps^2) + b)`` per copy on the others.

    Neighbouring blocks of the same dimension are gated together (``"8x1 + 4x2"`` is one run of 12
    two-component copies): one set of ops per run instead of per block."""

    def __init__(self, irreps: Irreps | str):
        super().__init__()
        self.irreps = Irreps.parse(irreps)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(m)) for _, m, label in _blocks(self.irreps) if label != "0"
        )
        # Consecutive blocks of one component count d (0: GELU) form a run; a gated block's bias is
        # self.biases[k] for the k-th non-"0" block.
        self._runs: list[_Run] = []
        blocks = [(sl, m, 0 if label == "0" else irrep_dim(label)) for sl, m, label in _blocks(self.irreps)]
        gated = itertools.count()
        for d, group in itertools.groupby(blocks, key=lambda block: block[2]):
            group = list(group)
            self._runs.append(_Run(start=group[0][0].start, stop=group[-1][0].stop, d=d,
                                   copies=sum(m for _, m, _ in group),
                                   gates=tuple(next(gated) for _ in group) if d else ()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for start, stop, d, m, gates in self._runs:
            u = x[:, start:stop]
            if d == 0:
                parts.append(F.gelu(u))
                continue
            biases = [self.biases[i] for i in gates]
            b = torch.cat(biases) if len(biases) > 1 else biases[0]
            u = u.reshape(u.shape[0], m, d, *u.shape[-2:])
            norm = torch.sqrt(u.pow(2).sum(2, keepdim=True) + NORM_EPS**2)
            parts.append((u * torch.sigmoid(norm + b.to(x.dtype)[:, None, None, None])).flatten(1, 2))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class GateActivation(nn.Module):
    """Gated nonlinearity (Weiler et al. 2018, escnn's ``GatedNonLinearity1``): GELU on ``"0"`` blocks;
    every other irrep copy times ``sigmoid`` of its own gate scalar.

    ``(b, C + n_gates, H, W) -> (b, C, H, W)``: the input is the feature ``irreps`` followed by one true
    scalar per non-``"0"`` copy, in order. A gate is invariant, so the product transforms as the copy
    (a pseudoscalar stays pseudoscalar under O(2)). Unlike the norm gate it lets scalars act on vectors
    pointwise: with norm gates, information passes between irrep frequencies only through the
    spectral convolutions, so the projection MLP treats each frequency on its own.
    """

    def __init__(self, irreps: Irreps | str):
        super().__init__()
        self.irreps = Irreps.parse(irreps)
        # per channel: is it a "0" channel; which gate drives it (gate k: the k-th non-"0" copy)
        scalar, gate_of, k = [], [], 0
        for _, m, label in _blocks(self.irreps):
            d = irrep_dim(label)
            for _copy in range(m):
                scalar += [label == "0"] * d
                gate_of += [0] * d if label == "0" else [k] * d
                k += label != "0"
        self.n_gates = k
        self.register_buffer("scalar", torch.tensor(scalar)[:, None, None], persistent=False)
        self.register_buffer("gate_of", torch.tensor(gate_of, dtype=torch.long), persistent=False)

    @property
    def input_irreps(self) -> Irreps:
        """The feature irreps followed by the gate scalars."""
        return Irreps((*self.irreps.blocks, (self.n_gates, "0"))) if self.n_gates else self.irreps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = self.irreps.num_channels
        h = x[:, :C]
        if not self.n_gates:
            return F.gelu(h)
        gates = torch.sigmoid(x[:, C:]).index_select(1, self.gate_of)
        return torch.where(self.scalar, F.gelu(h), h * gates)


def radial_profiles(rho: torch.Tensor, K: int, n_radial: int) -> torch.Tensor:
    """``(n_radial, *rho.shape)``: even Gaussian bumps in ``rho`` on ``[0, K)`` times a smooth taper
    that vanishes for ``rho >= K`` (see the module docstring)."""
    spacing = K / n_radial
    centres = spacing * torch.arange(n_radial, dtype=torch.float64)
    s = spacing
    r, c = rho[None], centres.reshape(-1, *([1] * rho.ndim))
    bumps = torch.exp(-((r - c) ** 2) / (2 * s**2)) + torch.exp(-((r + c) ** 2) / (2 * s**2))
    t = (rho / K).clamp(max=1.0)
    inside = t < 1
    taper = torch.where(inside, torch.exp(1 - 1 / torch.where(inside, 1 - t**2, 1.0)), 0.0)
    return bumps * taper


class _ProfileBag(torch.autograd.Function):
    """``out[e] = sum_{n in bag e} w[src[n]] profiles[rows[n]]`` (linear in ``w``) as one embedding bag.

    Its own autograd.Function because ``torch.func.jvp`` (the Lie-derivative penalties) cannot pass through
    ``embedding_bag`` when its per-sample weights require a gradient (it tries to make its integer outputs
    dual). Backward is embedding_bag's own per-sample-weight gradient (``grad[bag_of[n]] . profiles[rows[n]]``
    per term, one kernel, with the fixed ``bag_of`` table instead of a second forward pass to make it)
    scattered onto ``w``; the forward-mode rule is the same linear bag applied to the tangent of ``w``."""

    @staticmethod
    def forward(w, profiles, rows, offsets, src, bag_of):
        return F.embedding_bag(rows, profiles, offsets, mode="sum", per_sample_weights=w[src])

    @staticmethod
    def setup_context(ctx, inputs, output):
        w, profiles, rows, offsets, src, bag_of = inputs
        ctx.save_for_backward(profiles, rows, offsets, src, bag_of)
        ctx.save_for_forward(profiles, rows, offsets, src)
        ctx.size = w.numel()

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled() and grad.requires_grad:  # create_graph=True: this backward is not differentiable
            raise RuntimeError(
                "the steerable spectral kernel has no second derivative (its backward is an embedding bag, "
                "which autograd cannot differentiate): second-order training through a SteerableFNO "
                "(create_graph=True) is not supported"
            )
        profiles, rows, offsets, src, bag_of = ctx.saved_tensors
        per_term = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            grad.contiguous(), profiles, rows, offsets, bag_of, _BAG_SUM)
        return grad.new_zeros(ctx.size).index_add_(0, src, per_term), None, None, None, None, None

    @staticmethod
    def jvp(ctx, w_tangent, *_):
        profiles, rows, offsets, src = ctx.saved_tensors
        return F.embedding_bag(rows, profiles, offsets, mode="sum", per_sample_weights=w_tangent[src])


class SteerableSpectralConv(_BlockWeights):
    """Spectral convolution ``(b, C_in, H, W) -> (b, C_out, H, W)`` with the steerable kernel ``W(k)``
    of the module docstring on the disc ``|k| <= K`` (``K < min(H, W) / 2``)."""

    def __init__(self, irreps_in: Irreps | str, irreps_out: Irreps | str, K: int, group: str = "SO2",
                 n_radial: int = 3):
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps.parse(irreps_in), Irreps.parse(irreps_out)
        if not isinstance(K, int) or K < 1 or n_radial < 1:
            raise ValueError(f"SteerableSpectralConv needs a radius K >= 1 and n_radial >= 1, got {K!r}, {n_radial!r}")
        self.K, self.group, self.n_radial = K, group, n_radial
        L = self.irreps_in.max_frequency + self.irreps_out.max_frequency
        ky = torch.arange(-K, K + 1, dtype=torch.float64)[:, None].expand(-1, K + 1)
        kx = torch.arange(0, K + 1, dtype=torch.float64)[None, :].expand(2 * K + 1, -1)
        rho, theta = torch.sqrt(kx**2 + ky**2), torch.atan2(ky, kx)
        radial = radial_profiles(rho, K, n_radial)  # (r, y, x)
        spacing = K / n_radial
        harmonics = harmonic_values(L, theta)  # (h, y, x)
        self.pairs: list[tuple[int, int, bool]] = []
        blocks: list[torch.Tensor] = []
        fan_in = self.irreps_in.num_channels * n_radial
        out_sl, in_sl = self.irreps_out.slices(), self.irreps_in.slices()
        n_in, Y, X = self.irreps_in.num_channels, 2 * K + 1, K + 1
        profiles, entries, rows, sources, offset = [], [], [], [], 0
        for a, (m_a, la) in enumerate(self.irreps_out.blocks):
            for b, (m_b, lb) in enumerate(self.irreps_in.blocks):
                ns, orders = spectral_basis(la, lb, L, group)
                for odd in (False, True):
                    keep = [n for n, l in enumerate(orders) if l % 2 == odd]
                    if not keep:
                        continue
                    l_n = torch.tensor([orders[n] for n in keep], dtype=torch.float64)
                    # n=basis, h=harmonic, o/c=out/in component, y/x=wave-number grid
                    angular = torch.einsum("nhoc,hyx->noyxc", ns.basis[keep], harmonics)
                    onset = (1 - torch.exp(-(rho / spacing) ** 2))[None] ** (l_n[:, None, None] / 2)
                    # n=basis, r=radial, o/c=components, y/x=wave numbers -> (n r, o, c, y, x)
                    kern = torch.einsum("noyxc,nyx,ryx->nrocyx", angular, onset, radial)
                    kern = kern.reshape(-1, *kern.shape[2:])
                    self.register_buffer(f"basis_{a}_{b}_{int(odd)}", kern, persistent=False)
                    self.pairs.append((a, b, odd))
                    blocks.append(torch.randn(m_a, m_b, kern.shape[0]) / math.sqrt(fan_in))
                    # One profile row per (basis element q, out component o, in component c) that is not
                    # zero, real or imaginary part by parity; every (i, j) copy pair reuses it.
                    q, d_a, d_b = kern.shape[:3]
                    row = torch.zeros(q, d_a, d_b, Y, X, 2, dtype=torch.float64)
                    row[..., int(odd)] = kern
                    nonzero = row.flatten(3).abs().amax(-1) > 0  # (q, o, c)
                    row_id = torch.full((q, d_a, d_b), -1, dtype=torch.long)
                    row_id[nonzero] = sum(len(p) for p in profiles) + torch.arange(int(nonzero.sum()))
                    profiles.append(row[nonzero].flatten(1))
                    # i/j = out/in copy, k = basis element, o/c = out/in component
                    i, j, k, o, c = torch.meshgrid(*(torch.arange(s) for s in (m_a, m_b, q, d_a, d_b)), indexing="ij")
                    used = nonzero[k, o, c]
                    out_ch, in_ch = out_sl[a].start + i * d_a + o, in_sl[b].start + j * d_b + c
                    entries.append((out_ch * n_in + in_ch)[used])
                    rows.append(row_id[k, o, c][used])
                    sources.append((offset + (i * m_b + j) * q + k)[used])
                    offset += m_a * m_b * q
        # W(k) flattened to (C_out C_in, 2K+1, K+1, 2) is an embedding bag: entry e sums profile rows
        # bag_rows[e's bag] weighted by the weights bag_src[e's bag] (one op; see kernel()).
        if not blocks:
            raise ValueError(
                f"no {group}-equivariant spectral kernel maps '{self.irreps_in}' to '{self.irreps_out}' (every "
                f"output would be zero): give the input or output irreps a frequency that connects them, e.g. "
                f"'1' (a vector) between a scalar and a pseudoscalar under O2"
            )
        _register_bag(self, entries, rows, sources, self.irreps_out.num_channels * n_in)
        self.register_buffer("profiles", torch.cat(profiles), persistent=False)
        self._set_blocks(blocks)

    def kernel(self) -> torch.Tensor:
        """``W(k)``: ``(C_out, C_in, 2K+1, K+1)`` complex, rows ``k_y = -K..K``, columns ``k_x = 0..K``.

        Built as one ``embedding_bag`` (a weighted sum of shared profile rows per kernel entry) from the
        flat weight: the kernel is rebuilt every training step, and on a GPU its cost is the
        number of ops (a matmul per irrep-block pair cost ~150 ops with their backward, this ~15)."""
        flat = _profile_bag(self, self.weight, self._profiles_as(self.weight.dtype))
        shape = (self.irreps_out.num_channels, self.irreps_in.num_channels, 2 * self.K + 1, self.K + 1, 2)
        return torch.view_as_complex(flat.reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if 2 * self.K >= min(H, W):
            raise ValueError(
                f"steerable spectral convolution with radius K={self.K} needs a grid with more than "
                f"{2 * self.K} points per axis, got {H}x{W}: use a finer grid or a smaller n_modes"
            )
        x_hat = rfft2_modes(x, self.K, self.K)  # (b, c, 2K+1, K+1)
        # o=out, c=in channel, b=batch, y/x=wave numbers
        out_hat = torch.einsum("ocyx,bcyx->boyx", self.kernel().to(x_hat.dtype), x_hat)
        return irfft2_modes(out_hat, H, W)

    def extra_repr(self) -> str:
        return f"'{self.irreps_in}' -> '{self.irreps_out}', K={self.K}, group={self.group}, n_radial={self.n_radial}"


def radial_embedding(H: int, W: int, periodic: tuple[bool, bool], dtype=torch.float32, device=None) -> torch.Tensor:
    """``(H, W)`` distance to the grid centre in domain units, computed so that nodes mirrored by
    :func:`fieldsym.fields.lattice_transform` get identical bits (periodic: ``(j - N/2) / N``;
    otherwise ``(j - (N-1)/2) / (N-1)``)."""
    def centred(n, per):
        j = torch.arange(n, dtype=torch.float64, device=device)
        return (2 * j - n).abs() / (2 * n) if per else (2 * j - (n - 1)).abs() / (2 * max(n - 1, 1))

    sy, sx = centred(H, periodic[0])[:, None], centred(W, periodic[1])[None, :]
    return torch.sqrt(sx**2 + sy**2).to(dtype)


class SteerableFNO(nn.Module):
    """SO(2)- or O(2)-equivariant Fourier neural operator between typed fields.

    ``u``: ``(batch, in_type.num_channels, H, W)`` -> ``(batch, out_type.num_channels, H, W)``.

    ``group``: ``"SO2"`` (rotations; pseudoscalars behave as scalars) or ``"O2"`` (also reflections).
    ``hidden_irreps``: the hidden feature, e.g. ``"8x0 + 8x1 + 4x2"``; default ``"16x0 + 8x1 + 4x2"``
    (SO2) or ``"8x0 + 8x0- + 8x1 + 4x2"`` (O2: a pseudoscalar output needs ``"0-"`` features, since
    no pointwise map sends a vector to a pseudoscalar). ``n_modes``: ``m``; the spectral kernels live on
    the disc ``|k| <= m // 2``, the disc inscribed in :class:`FieldFNO`'s square of the same ``n_modes``.
    ``n_radial``: radial profiles per angular basis element, spaced ``K / n_radial``
    apart on the disc of radius ``K``; default ``2 K`` (half a wave number apart; the lattice has about
    ``1.5 K`` distinct radii there). Finer radial profiles fit better and cost parameters, not width:
    gated, about 175k parameters, rotation_small's symmetric data: ``n_radial`` 3 / 6 / 12 gave test
    error 0.039 / 0.032 / 0.027 (GroupFNO 0.026), with a larger continuous-rotation error (0.004 / 0.013 /
    0.026; the FNO's 0.086), since a less smooth ``W(k)`` is a less localised kernel.
    ``positional_embedding``: append the distance to the grid centre (invariant under every rotation and
    reflection about it) as a scalar input, for forcings with the group's symmetry that are fixed in
    space; it breaks translations.
    ``periodic``: ``(y, x)``, where the centre of that embedding lies. ``activation``: ``"gate"``
    (default; :class:`GateActivation`: the layer before each nonlinearity also outputs one scalar gate
    per non-scalar copy, so scalars modulate vectors pointwise; more parameters for the same hidden
    irreps) or ``"norm"`` (:class:`NormActivation`, each copy gated by its own norm; on rotation_small's
    symmetric data 0.112 against the gate's 0.047 test error at 16x0 + 8x1 + 4x2).

    Layers: ``lift -> [spectral conv + pointwise skip, activation] * n_layers -> activation
    between two pointwise maps -> out``; the last layer has no activation after it (as neuralop's FNO).
    """

    def __init__(
        self,
        in_type: FieldType | str,
        out_type: FieldType | str,
        group: str = "SO2",
        hidden_irreps: Irreps | str | None = None,
        n_modes: int = 12,
        n_layers: int = 4,
        n_radial: int | None = None,
        positional_embedding: bool = False,
        periodic: tuple[bool, bool] = (True, True),
        activation: str = "gate",
    ) -> None:
        super().__init__()
        if activation not in ("norm", "gate"):
            raise ValueError(f"SteerableFNO: activation must be 'norm' or 'gate', got {activation!r}")
        if group not in ("SO2", "O2"):
            raise ValueError(f"SteerableFNO: group must be 'SO2' or 'O2', got {group!r} (for C4/D4 use GroupFNO)")
        if not isinstance(n_modes, int) or n_modes < 2 or n_layers < 1:
            raise ValueError(
                f"SteerableFNO needs an integer n_modes >= 2 (disc radius n_modes // 2) and n_layers >= 1, "
                f"got n_modes={n_modes!r}, n_layers={n_layers!r}"
            )
        self.in_type, self.out_type = FieldType.parse(in_type), FieldType.parse(out_type)
        self.group, self.n_modes = group, n_modes
        hidden = Irreps.parse(hidden_irreps if hidden_irreps is not None else default_hidden_irreps(group))
        self.hidden_irreps = hidden
        in_irreps = Irreps.from_field_type(self.in_type)
        self.periodic = tuple(bool(p) for p in periodic)
        self.positional_embedding = bool(positional_embedding)
        if self.positional_embedding:
            in_irreps = Irreps((*in_irreps.blocks, (1, "0")))
        K = n_modes // 2
        self.lift = SteerableLinear(in_irreps, hidden, group)
        self.activation = activation
        act = NormActivation if activation == "norm" else GateActivation
        # what a layer feeding an activation outputs: the hidden irreps, plus the gates for "gate"
        gated = hidden if activation == "norm" else GateActivation(hidden).input_irreps
        widths = [gated] * (n_layers - 1) + [hidden]
        self.n_radial = default_n_radial(n_modes) if n_radial is None else n_radial
        self.convs = nn.ModuleList(SteerableSpectralConv(hidden, w, K, group, self.n_radial) for w in widths)
        self.skips = nn.ModuleList(SteerableLinear(hidden, w, group) for w in widths)
        self.acts = nn.ModuleList(act(hidden) for _ in range(n_layers - 1))
        self.proj_act = act(hidden)
        self.proj_in = SteerableLinear(hidden, gated, group)
        self.proj_out = SteerableLinear(hidden, Irreps.from_field_type(self.out_type), group)
        # The last map is pointwise: an output irrep that no hidden irrep maps to would always be zero.
        reached = {a for a, _ in self.proj_out.pairs}
        missing = sorted({la for a, (_, la) in enumerate(self.proj_out.irreps_out.blocks) if a not in reached})
        if missing:
            raise ValueError(
                f"hidden_irreps '{hidden}' cannot reach the output irreps {', '.join(missing)} of '{self.out_type}' "
                f"under {group} (those outputs would always be zero): add them to hidden_irreps, e.g. '0-' for a "
                f"pseudoscalar under O2, '1' for a vector"
            )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.in_type.check(u)
        if self.positional_embedding:
            r = radial_embedding(u.shape[-2], u.shape[-1], self.periodic, u.dtype, u.device)
            u = torch.cat([u, r.expand(u.shape[0], 1, -1, -1)], dim=1)
        return steerable_layers(self, u)

    def extra_repr(self) -> str:
        return (
            f"in_type='{self.in_type}', out_type='{self.out_type}', group={self.group}, "
            f"hidden_irreps='{self.hidden_irreps}', n_modes={self.n_modes}, activation={self.activation}"
        )


# The defaults of SteerableFNO that depend on another argument, as functions: the constructor and
# fieldsym.models.build.resolved_options (which writes them into a run's stored config) share them.


def default_hidden_irreps(group: str) -> str:
    """:class:`SteerableFNO`'s ``hidden_irreps`` when none is given: it depends on ``group``."""
    return "16x0 + 8x1 + 4x2" if group == "SO2" else "8x0 + 8x0- + 8x1 + 4x2"


def default_n_radial(n_modes: int) -> int:
    """:class:`SteerableFNO`'s ``n_radial`` when none is given: ``2 K`` on the disc of radius ``K = n_modes // 2``."""
    return 2 * (n_modes // 2)


def steerable_layers(net: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """``lift -> [conv + skip, activation] * n_layers -> proj_out(proj_act(proj_in(.)))`` on any module
    with :class:`SteerableFNO`'s layer attributes: the eager model and its baked export share it."""
    h = net.lift(u)
    for i, (conv, skip) in enumerate(zip(net.convs, net.skips)):
        h = conv(h) + skip(h)
        if i < len(net.acts):
            h = net.acts[i](h)
    return net.proj_out(net.proj_act(net.proj_in(h)))
