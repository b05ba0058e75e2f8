"""Symmetry discovery: which candidate symmetries does an operator have, and how strongly are the
others broken?

Discovery is the dual of enforcement (Otto et al. 2023): stack the Lie derivatives of the operator
over a candidate algebra into ``M = [m_1 ... m_k]`` on held-out inputs. ``M c = 0`` iff the generator
``sum_j c_j xi_j`` (in column units) is a symmetry, so the right singular vectors with small singular
values span the symmetry subalgebra.

Columns are *relative*: ``m_j = w L_j F(u) / (||w DF(u)[xi_j.u]|| + ||w xi_j.F(u)||)`` (norms over the
batch, ``w`` the interior window for rotations and dilations on a periodic box), the continuous error
of DESIGN.md section 1. Unlike the promoted penalty's normalisation by input motion (right for a loss:
it cannot be lowered by shrinking the output), this makes singular values comparable across operators
of any gain, and with the floor of a reference operator. One scale per column keeps combinations
(``Tx - Ty``) exact null vectors.

What is reported, and why:

- the singular values (descending) and the largest *gap* ``s_i / s_{i+1}`` — the honest evidence;
- a *threshold sweep*: the null-space dimension for every threshold on a log grid, instead of one
  magic tolerance; the suggested threshold sits in the largest gap if that gap is at least
  :data:`MIN_GAP` (10x), and otherwise at 3x the floor — without a clear gap, only singular values
  indistinguishable from discretisation error are called symmetries;
- *localised inputs* for rotations and dilations on a periodic box (:func:`fieldsym.lie.localize`): the
  inputs' fluctuations times a centred smooth bump that is 0 near the seam, so ``xi.u`` has no jump
  there for a non-local operator to spread (on raw Navier-Stokes vorticity an exactly
  rotation-equivariant SteerableFNO shows a rotation singular value of 0.03; on the localised fields
  0.006, with translations at 0.002);
- the *accuracy floor* of a trained operator (with ``targets``): it reproduces a symmetry of its data
  only as well as it fits the data. Its error field ``E = F(u) - y`` moves under ``xi`` by ``xi.E``, which
  an equivariant truth does not explain, so a symmetric-data Lie derivative of about
  ``||w xi.E|| / ||w xi.y||`` (measured on the raw test inputs, per generator) cannot be told from
  breaking; the threshold is never below the largest of these. Errors of learned operators sit at
  higher wave numbers than the data, so this is several times the relative error itself (measured:
  0.09-0.2 for errors 0.02-0.05 on Navier-Stokes);
- the *discretisation floor*: the same computation on a reference operator that is exactly symmetric
  in the continuum under every geometric candidate — the channel-wise ``r gelu(u / r)`` (``r`` the RMS
  of the inputs) with every channel taken as a scalar, so translations, rotations and dilations only
  move the base — on the same inputs: like a trained operator with pointwise nonlinearities it aliases
  and feels the seam, so values near it mean "symmetric within discretisation";
- null directions as named combinations in the generators' own units (``1.00 Tx``,
  ``0.71 Tx - 0.71 Ty``; the normalised singular vector ``v`` is the raw combination ``v / scale``,
  renormalised): a null space of dimension
  ``d > 1`` has no preferred basis, so it is written in reduced row-echelon form over the candidates'
  order (each row then normalised), which names coordinate generators when they are in the span;
- a bootstrap over samples of the per-sample Gram matrices, giving a standard deviation for every
  singular value at almost no cost (the Lie derivatives are computed once);
- exact lattice symmetries (quarter turns, reflections) tested directly, with their errors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import D4, Generator, algebra
from fieldsym.lie import (Method, equivariance_errors, generator_action, interior_window, lie_derivative_terms,
                          localize, needs_localizing)


@dataclasses.dataclass
class Discovery:
    """Result of :func:`discover`. Singular values are descending; ``vectors[:, i]`` goes with ``singular_values[i]``."""

    candidates: list[str]
    singular_values: list[float]
    singular_std: list[float]
    vectors: list[list[float]]  # (k, k) right singular vectors as columns, in raw generator units
    floor: list[float]  # singular values of the reference operator, descending
    threshold: float
    gap: float
    symmetries: list[str]  # named null directions at ``threshold``
    sweep: list[tuple[float, int]]  # (threshold, null-space dimension)
    column_norms: dict[str, float]
    discrete_errors: dict[str, float]
    localized: bool = False  # continuous columns on localize()d inputs
    accuracy_floor: dict[str, float] = dataclasses.field(default_factory=dict)  # ||w xi.E|| / ||w xi.y|| per generator
    rule: str = ""  # how the threshold was chosen

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """A readable plain-text summary."""
        lines = [f"{'i':>2}  {'singular value':>14}  {'+-':>9}  {'floor':>9}  direction"]
        for i, (s, sd) in enumerate(zip(self.singular_values, self.singular_std)):
            v = [row[i] for row in self.vectors]
            floor = self.floor[i] if i < len(self.floor) else float("nan")
            lines.append(f"{i:>2}  {s:14.4g}  {sd:9.2g}  {floor:9.2g}  {name_combination(v, self.candidates)}")
        lines.append(f"threshold {self.threshold:.3g} ({self.rule or f'largest gap x{self.gap:.3g}'}); symmetries: "
                     + (", ".join(self.symmetries) or "none"))
        if self.accuracy_floor:
            lines.append("accuracy floor ||w xi.(F(u) - y)|| / ||w xi.y||: "
                         + ", ".join(f"{k} {v:.2g}" for k, v in self.accuracy_floor.items()))
        if self.localized:
            lines.append("continuous columns on localised inputs (rotations/dilations on a periodic box)")
        if self.discrete_errors:
            lines.append("discrete: " + ", ".join(f"{k} {v:.2g}" for k, v in self.discrete_errors.items()))
        return "\n".join(lines)


def discover(operator, inputs: torch.Tensor, in_type: FieldType | str, out_type: FieldType | str, grid: Grid,
             candidates: str | Sequence[str | Generator] | None = None, method: Method = "jvp",
             threshold: float | None = None, bootstrap: int = 200, seed: int = 0,
             discrete: bool = True, localized: bool | None = None,
             targets: torch.Tensor | None = None) -> Discovery:
    """Discover the symmetries of ``operator`` on ``inputs`` ``(B, C_in, H, W)``.

    ``candidates``: an algebra spec for :func:`fieldsym.groups.algebra` (default ``"sim2+scalings"``:
    ``Tx, Ty, R, S`` and an amplitude scaling of each input field — the scalings need the input and
    output types to name the same fields, so for ``in_type != out_type`` the default is ``sim2``).
    ``threshold``: fixes the null-space threshold; by default it is placed in the largest gap (geometric
    mean of the two singular values), but never below 3x the discretisation floor nor, with ``targets``
    (the true outputs for ``inputs``), below the operator's accuracy floor (module docstring).
    ``localized``: evaluate the continuous columns on :func:`fieldsym.lie.localize` d inputs (default: when
    a candidate rotates or dilates, the grid is periodic and the inputs reach the seam,
    :func:`fieldsym.lie.needs_localizing`). Discrete elements use the raw inputs.
    """
    in_type, out_type = FieldType.parse(in_type), FieldType.parse(out_type)
    if candidates is None:
        candidates = "sim2+scalings" if in_type == out_type else "sim2"
    gens = algebra(candidates, in_type) if isinstance(candidates, str) else algebra(list(candidates), in_type)
    names = [g.name for g in gens]
    accuracy = {} if targets is None else _accuracy_floor(operator, inputs, targets, gens, out_type, grid)
    localized = needs_localizing(gens, grid, inputs) if localized is None else localized
    probe = localize(inputs, grid) if localized else inputs
    M, scale = _columns(operator, probe, gens, in_type, out_type, grid, method)
    s, V = _svd(M)
    V = V / scale.to(V)[:, None]  # normalised units -> the generators' own units
    V = V / V.norm(dim=0, keepdim=True)
    floor = _floor(probe, gens, in_type, grid, method, amplitude=_rms(inputs))
    std = _bootstrap_std(M, inputs.shape[0], bootstrap, seed)
    thr, gap, rule = _choose_threshold(s, floor, threshold, max(accuracy.values(), default=None))
    null = V[:, s < thr]
    column_norms = M.norm(dim=0)
    return Discovery(
        candidates=names,
        singular_values=s.tolist(),
        singular_std=std.tolist(),
        vectors=V.tolist(),
        floor=floor.tolist(),
        threshold=thr,
        gap=gap,
        symmetries=name_null_space(null, names, column_norms < thr),
        sweep=threshold_sweep(s),
        column_norms={n: float(c) for n, c in zip(names, column_norms)},
        discrete_errors=_discrete(operator, inputs, in_type, out_type, grid) if discrete else {},
        localized=localized,
        accuracy_floor=accuracy,
        rule=rule,
    )


def _columns(op, inputs, gens, in_type, out_type, grid, method) -> tuple[torch.Tensor, torch.Tensor]:
    """``M`` ``(rows, k)`` with column ``j`` = ``w L_j F(u) / (||w DF[xi_j.u]|| + ||w xi_j.F(u)||)`` over the
    batch, and those ``(k,)`` denominators (a raw combination ``c`` is ``M (c * scale)``)."""
    with torch.no_grad() if method != "jvp" else torch.enable_grad():
        dF, xiF = lie_derivative_terms(op, inputs, gens, in_type, out_type, grid, method)
    dF, xiF = dF.detach(), xiF.detach()
    w = interior_window(gens, grid, dtype=dF.dtype, device=dF.device)
    k = len(gens)
    dF, xiF = (dF * w).reshape(k, -1), (xiF * w).reshape(k, -1)
    scale = (dF.norm(dim=1) + xiF.norm(dim=1)).clamp_min(torch.finfo(dF.dtype).tiny)
    return ((dF - xiF) / scale[:, None]).T, scale


def _svd(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, s, Vh = torch.linalg.svd(M.to(torch.float64), full_matrices=False)
    return s, Vh.T


def _accuracy_floor(op, inputs, targets, gens, out_type, grid) -> dict[str, float]:
    """``||w xi.E|| / ||w xi.y||`` per generator, ``E = F(u) - y`` on the raw inputs (``w``: the interior
    window for rotations and dilations on a periodic box)."""
    if targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets: expected one output per input ({inputs.shape[0]}), got {targets.shape[0]}")
    with torch.no_grad():
        prediction = op(inputs)
    if prediction.shape != targets.shape:
        raise ValueError(f"targets: expected the operator's output shape {tuple(prediction.shape)}, "
                         f"got {tuple(targets.shape)}")
    targets = targets.to(prediction)
    error = prediction - targets
    out = {}
    for g in gens:
        w = interior_window([g], grid, dtype=error.dtype, device=error.device)
        moved = (w * generator_action(error, g, out_type, grid)).norm()
        truth = (w * generator_action(targets, g, out_type, grid)).norm().clamp_min(torch.finfo(error.dtype).tiny)
        out[g.name] = float(moved / truth)
    return out


def _rms(u: torch.Tensor) -> torch.Tensor:
    return u.detach().pow(2).mean().sqrt().clamp_min(torch.finfo(u.dtype).tiny)


def _floor(inputs, gens, in_type, grid, method, amplitude: torch.Tensor | None = None) -> torch.Tensor:
    """Singular values of the reference ``r gelu(u / r)`` on scalar channels (exactly symmetric in the
    continuum under every base motion; amplitude scalings are left out: no discretisation enters them).
    ``r``: ``amplitude``, else the RMS of ``inputs`` (pass the raw inputs' RMS for localised inputs,
    whose RMS is mostly the quiet outskirts: the kink of ``gelu`` would sit far up their peaks)."""
    geometric = [g for g in gens if not g.fiber]
    if not geometric:
        return torch.zeros(0, dtype=torch.float64)
    scalars = FieldType.of(*["scalar"] * in_type.num_channels)
    r = amplitude if amplitude is not None else _rms(inputs)
    M, _ = _columns(lambda u: r * torch.nn.functional.gelu(u / r), inputs, geometric, scalars, scalars, grid, method)
    return _svd(M)[0]


def _bootstrap_std(M: torch.Tensor, n_samples: int, rounds: int, seed: int) -> torch.Tensor:
    """Std of the singular values over bootstrap resamples of the per-sample Gram matrices."""
    k = M.shape[1]
    if rounds <= 0 or n_samples < 2:
        return torch.zeros(k, dtype=torch.float64)
    per_sample = M.to(torch.float64).reshape(n_samples, -1, k)  # rows are sample-major
    grams = torch.einsum("brk,brl->bkl", per_sample, per_sample)  # b=sample r=row k,l=generator
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n_samples, (rounds, n_samples), generator=gen)
    G = grams[idx].sum(1)  # (rounds, k, k)
    s = torch.linalg.eigvalsh(G).clamp_min(0).sqrt().flip(-1)
    return s.std(0)


MIN_GAP = 10.0  # a ratio s_i / s_{i+1} below this is no evidence of a symmetry/non-symmetry split


def _choose_threshold(s: torch.Tensor, floor: torch.Tensor, fixed: float | None,
                      accuracy: float | None = None) -> tuple[float, float, str]:
    """``(threshold, largest gap, rule)``: in the largest gap when it is at least :data:`MIN_GAP`, never
    below 3x the discretisation floor nor the ``accuracy`` floor; without a clear gap, only values within
    those floors count as symmetries."""
    # Values below 1e-12 s_max are rounding: they must not make an infinite "gap" among themselves.
    s = s.clamp_min(max(1e-12 * float(s[0]), 1e-300))  # M may be exactly 0
    ratios = s[:-1] / s[1:]
    gap = float(ratios.max()) if ratios.numel() else 1.0
    if fixed is not None:
        return fixed, gap, "fixed"
    floors = {"3x discretisation floor": 3 * float(floor.max()) if floor.numel() else 0.0}
    if accuracy is not None:
        floors["accuracy floor"] = accuracy
    which = max(floors, key=floors.get)
    minimum = floors[which]
    if gap < MIN_GAP:
        return minimum, gap, f"no clear gap (largest x{gap:.3g}): {which}"
    i = int(ratios.argmax())
    in_gap = float((s[i] * s[i + 1]).sqrt())
    if in_gap >= minimum:
        return in_gap, gap, f"in the largest gap, x{gap:.3g}"
    return minimum, gap, f"largest gap x{gap:.3g} lies below the {which}"


def threshold_sweep(s: torch.Tensor, points: int = 25) -> list[tuple[float, int]]:
    """``(threshold, #singular values below it)`` on a log grid spanning the spectrum."""
    s = s.clamp_min(max(1e-13 * float(s.max()), 1e-300))  # rounding sits at the bottom; M may be exactly 0
    lo = math.log10(float(s.min())) - 1
    hi = math.log10(float(s.max())) + 1
    grid = torch.logspace(lo, hi, points, dtype=torch.float64)
    return [(float(t), int((s < t).sum())) for t in grid]


def name_combination(v: Sequence[float], names: Sequence[str], digits: int = 2, cutoff: float = 0.05) -> str:
    """``0.71 Tx - 0.71 Ty``: terms above ``cutoff`` in absolute value, sign fixed so the first is positive."""
    v = torch.as_tensor(v, dtype=torch.float64)
    v = v / v.norm().clamp_min(1e-300)
    keep = [i for i in range(len(v)) if abs(float(v[i])) >= cutoff]
    if not keep:
        return "0"
    if v[keep[0]] < 0:
        v = -v
    text = ""
    for j, i in enumerate(keep):
        c = float(v[i])
        sign = "-" if c < 0 else "+"
        text += (f"{c:.{digits}f} " if j == 0 else f" {sign} {abs(c):.{digits}f} ") + names[i]
    return text


def name_null_space(null: torch.Tensor, names: Sequence[str], alone: torch.Tensor) -> list[str]:
    """Names for the null space ``null`` ``(k, d)`` (raw units): first every candidate that is a symmetry
    *alone* (``alone[j]``: its own column of ``M`` is below the threshold) as ``1.00 X``, then the rest of
    the space, with those coordinates removed, in reduced row-echelon form.

    Without the first step a null space that holds ``Tx, Ty, R`` and an amplitude scaling, where the
    small but non-zero correlations of the columns tilt the singular vectors, reads ``0.96 Tx + 0.27 A``,
    ``0.45 Ty - 0.89 A``, ...: true, but not what a user asks.
    """
    d = null.shape[1] if null.numel() else 0
    single = [j for j in range(len(names)) if bool(alone[j])]
    if len(single) > d:  # individually small columns that do not add up to independent symmetries
        return name_subspace(null, names)
    rest = null.clone()
    rest[single] = 0
    if rest.numel():
        U, sv, _ = torch.linalg.svd(rest, full_matrices=False)
        rest = U[:, : d - len(single)] if d > len(single) else U[:, :0]
    return [f"1.00 {names[j]}" for j in single] + name_subspace(rest, names)


def name_subspace(basis: torch.Tensor, names: Sequence[str], tol: float = 1e-6) -> list[str]:
    """Name a subspace given by the columns of ``basis`` ``(k, d)``: reduced row-echelon rows, normalised."""
    if basis.numel() == 0 or basis.shape[1] == 0:
        return []
    A = basis.T.clone()  # (d, k)
    rows, cols = A.shape
    r = 0
    for c in range(cols):
        if r == rows:
            break
        p = int(A[r:, c].abs().argmax()) + r
        if float(A[p, c].abs()) < tol:
            continue
        A[[r, p]] = A[[p, r]]
        A[r] = A[r] / A[r, c]
        for i in range(rows):
            if i != r:
                A[i] = A[i] - A[i, c] * A[r]
        r += 1
    return [name_combination(row, names) for row in A[:r]]


def _discrete(op, inputs, in_type, out_type, grid) -> dict[str, float]:
    if grid.shape[0] != grid.shape[1] or grid.periodic[0] != grid.periodic[1]:
        return {}
    return {k: v for k, v in equivariance_errors(op, inputs, D4, in_type, out_type, grid.periodic).items() if k != "e"}
