"""Symmetry generators, named Lie algebras and the finite groups C4 and D4.

A generator ``xi = (a, beta)`` with ``a`` in gl(2) and ``beta`` in R^2 is the velocity field
``V(x) = a (x - c) + beta`` of a one-parameter group of affine maps of the plane about the grid centre
``c`` (DESIGN.md section 1). It acts on a typed field ``u`` by

    (xi.u)(x) = d rho(a) u(x) - Du(x) V(x) + P u(x)

where ``P`` is an optional *fiber* term: a projector onto named fields (amplitude scaling of those
fields, no motion of the base). Its exponential is the affine map ``x -> e^{a} (x - c) + c + b`` with
``[[e^a, b], [0, 1]] = expm([[a, beta], [0, 0]])`` and the fiber factor ``e^{t}`` on the scaled fields.

Named basis: ``Tx = (0, e_x)``, ``Ty = (0, e_y)``, ``R = (J, 0)`` with ``J = [[0, -1], [1, 0]]``
(counter-clockwise), ``S = (I, 0)`` (dilation), and for ``affine2`` the two traceless symmetric
directions ``Hs = diag(1, -1)`` (stretch) and ``Hr = [[0, 1], [1, 0]]`` (shear).

Bracket. The action ``g.u = rho(A) u(g^-1 x)`` is a left action, so ``xi -> (u -> xi.u)`` is a Lie
algebra homomorphism for the bracket of the affine algebra written as matrices,

    [(a1, b1), (a2, b2)] = (a1 a2 - a2 a1, a1 b2 - a2 b1),

which gives ``[R, Tx] = Ty``, ``[R, Ty] = -Tx``, ``[S, Tx] = Tx``, ``[Tx, Ty] = 0``; fiber scalings are
central. ``tests/test_groups.py`` checks these against the commutator of the field actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fieldsym.fields import D4_MATRICES, FieldType

_I = ((1.0, 0.0), (0.0, 1.0))
_Z = ((0.0, 0.0), (0.0, 0.0))


@dataclasses.dataclass(frozen=True)
class Generator:
    """``xi = (a, beta)`` plus an optional fiber scaling of the named fields.

    ``a``: ``(2, 2)`` acting on ``(x, y)``; ``beta``: ``(beta_x, beta_y)``; ``fiber``: names of the
    fields whose amplitude the generator scales (``d rho = I`` on them, 0 elsewhere).
    """

    name: str
    a: tuple[tuple[float, float], tuple[float, float]] = _Z
    beta: tuple[float, float] = (0.0, 0.0)
    fiber: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        a = torch.as_tensor(self.a, dtype=torch.float64)
        beta = torch.as_tensor(self.beta, dtype=torch.float64)
        if a.shape != (2, 2) or beta.shape != (2,):
            raise ValueError(
                f"generator {self.name!r} is for the plane: needs a (2, 2) matrix and a 2-vector, "
                f"got a of shape {tuple(a.shape)} and beta of shape {tuple(beta.shape)}"
            )
        object.__setattr__(self, "a", tuple(map(tuple, a.tolist())))
        object.__setattr__(self, "beta", tuple(beta.tolist()))
        object.__setattr__(self, "fiber", tuple(self.fiber))

    def matrix(self, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(self.a, dtype=dtype)

    def translation(self, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(self.beta, dtype=dtype)

    @property
    def has_linear_part(self) -> bool:
        """``a != 0``: the motion rotates, dilates or shears, so it does not map a periodic box onto itself."""
        return any(v != 0 for row in self.a for v in row)

    @property
    def moves_base(self) -> bool:
        return any(v != 0 for row in self.a for v in row) or any(v != 0 for v in self.beta)

    def __add__(self, other: Generator) -> Generator:
        return self.combine([(1.0, self), (1.0, other)])

    def scaled(self, t: float) -> Generator:
        if self.fiber and t != 1.0:
            raise ValueError("fiber generators combine with coefficient 1 only")
        a = (t * self.matrix()).tolist()
        return Generator(f"{t:g} {self.name}", a, (t * self.translation()).tolist(), self.fiber)

    @staticmethod
    def combine(terms: Sequence[tuple[float, Generator]], name: str | None = None) -> Generator:
        """The linear combination ``sum_i c_i xi_i`` of geometric generators (no fiber parts)."""
        if any(g.fiber for _, g in terms):
            raise ValueError("linear combinations of fiber scalings are not represented; list them")
        a = sum(c * g.matrix() for c, g in terms)
        beta = sum(c * g.translation() for c, g in terms)
        label = name or " + ".join(f"{c:.2f} {g.name}" for c, g in terms)
        return Generator(label, a.tolist(), beta.tolist())

    def exp(self, t: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, b)`` of the affine map ``exp(t xi)``: ``x - c -> A (x - c) + b``."""
        M = torch.zeros(3, 3, dtype=torch.float64)
        M[:2, :2] = self.matrix()
        M[:2, 2] = self.translation()
        E = torch.linalg.matrix_exp(t * M)
        return E[:2, :2], E[:2, 2]


def bracket(x: Generator, y: Generator) -> Generator:
    """``[x, y] = (a1 a2 - a2 a1, a1 b2 - a2 b1)``; fiber scalings are central (bracket 0)."""
    a1, a2 = x.matrix(), y.matrix()
    b1, b2 = x.translation(), y.translation()
    return Generator(f"[{x.name},{y.name}]", (a1 @ a2 - a2 @ a1).tolist(), (a1 @ b2 - a2 @ b1).tolist())


def structure_constants(basis: Sequence[Generator]) -> torch.Tensor:
    """``C[i, j, k]`` with ``[xi_i, xi_j] = sum_k C[i, j, k] xi_k`` (least squares; raises if not closed)."""
    vecs = torch.stack([_as_vector(g) for g in basis], dim=1)  # (6, k)
    k = len(basis)
    C = torch.zeros(k, k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            target = _as_vector(bracket(basis[i], basis[j]))
            coef = torch.linalg.lstsq(vecs, target.unsqueeze(1)).solution.squeeze(1)
            if torch.linalg.norm(vecs @ coef - target) > 1e-9:
                names = ", ".join(g.name for g in basis)
                raise ValueError(f"[{basis[i].name}, {basis[j].name}] is not in span({names})")
            C[i, j] = coef
    return C


def _as_vector(g: Generator) -> torch.Tensor:
    return torch.cat([g.matrix().flatten(), g.translation()])


# -- the named basis ---------------------------------------------------------------------------------

Tx = Generator("Tx", beta=(1.0, 0.0))
Ty = Generator("Ty", beta=(0.0, 1.0))
R = Generator("R", a=((0.0, -1.0), (1.0, 0.0)))
S = Generator("S", a=_I)
Hs = Generator("Hs", a=((1.0, 0.0), (0.0, -1.0)))
Hr = Generator("Hr", a=((0.0, 1.0), (1.0, 0.0)))
NAMED = {g.name: g for g in (Tx, Ty, R, S, Hs, Hr)}

ALGEBRAS: dict[str, tuple[Generator, ...]] = {
    "translations": (Tx, Ty),
    "so2": (R,),
    "se2": (Tx, Ty, R),
    "sim2": (Tx, Ty, R, S),
    "affine2": (Tx, Ty, R, S, Hs, Hr),
}


def amplitude_scaling(field_name: str) -> Generator:
    """Fiber-only generator that scales the amplitude of one field."""
    return Generator(f"A[{field_name}]", fiber=(field_name,))


def algebra(spec: str | Sequence[str | Generator], field_type: FieldType | str | None = None) -> list[Generator]:
    """A list of generators from a spec.

    ``spec``: a named algebra (``translations, so2, se2, sim2, affine2``), a list of generator names
    (``["Tx", "R"]``), or a sum ``"se2+scalings"`` where ``scalings`` adds one amplitude scaling per field
    of ``field_type`` (``"scale:density"`` adds one field's).
    """
    parts = spec.split("+") if isinstance(spec, str) else list(spec)
    out: list[Generator] = []
    for part in parts:
        if isinstance(part, Generator):
            out.append(part)
            continue
        part = part.strip()
        if part in ALGEBRAS:
            out.extend(ALGEBRAS[part])
        elif part in NAMED:
            out.append(NAMED[part])
        elif part == "scalings" or part.startswith("scale:"):
            if field_type is None:
                raise ValueError(f"{part!r} needs the field type whose amplitudes it scales")
            ft = FieldType.parse(field_type)
            names = ft.names if part == "scalings" else (part.split(":", 1)[1],)
            for n in names:
                ft.field(n)
                out.append(amplitude_scaling(n))
        else:
            known = ", ".join([*ALGEBRAS, *NAMED, "scalings", "scale:<field>"])
            raise ValueError(f"unknown generator or algebra {part!r}; known: {known}")
    return out


# -- finite groups -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupElement:
    """An exact lattice symmetry ``x -> A (x - c) + c + b`` (``A`` a signed permutation, ``b`` in cells)."""

    name: str
    A: tuple[tuple[int, int], tuple[int, int]]
    shift: tuple[int, int] = (0, 0)

    def matrix(self, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor(self.A, dtype=dtype)

    def act(self, u: torch.Tensor, field_type: FieldType | str, periodic=(True, True)) -> torch.Tensor:
        """``(g.u)(x) = rho(A) u(A^-1 (x - b))`` on ``u`` of shape ``(..., C, H, W)``."""
        return FieldType.parse(field_type).transform(u, self.A, self.shift, tuple(periodic))

    def inverse(self) -> GroupElement:
        Ainv = self.matrix().T
        b = -(Ainv @ torch.tensor(self.shift, dtype=torch.float64))
        return GroupElement(f"{self.name}^-1", _int_matrix(Ainv), tuple(int(v) for v in b.round().tolist()))


@dataclasses.dataclass(frozen=True)
class FiniteGroup:
    name: str
    elements: tuple[GroupElement, ...]

    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self):
        return iter(self.elements)

    def element(self, name: str) -> GroupElement:
        for g in self.elements:
            if g.name == name:
                return g
        raise KeyError(f"{self.name} has no element {name!r}; it has {[g.name for g in self.elements]}")


def _int_matrix(A: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    return tuple(tuple(int(v) for v in row) for row in A.round().tolist())  # type: ignore[return-value]


C4 = FiniteGroup("C4", tuple(GroupElement(n, D4_MATRICES[n]) for n in ("e", "r1", "r2", "r3")))
D4 = FiniteGroup("D4", tuple(GroupElement(n, m) for n, m in D4_MATRICES.items()))


def shifts(cells: Sequence[tuple[int, int]]) -> FiniteGroup:
    """Whole-cell translations ``(dx_cells, dy_cells)`` as group elements (a subset of the torus group)."""
    return FiniteGroup("shifts", tuple(GroupElement(f"shift{c}", _I_INT, tuple(c)) for c in cells))


_I_INT = ((1, 0), (0, 1))
GROUPS = {"C4": C4, "D4": D4}


def finite_group(name: str) -> FiniteGroup:
    try:
        return GROUPS[name]
    except KeyError:
        raise ValueError(f"unknown group {name!r}: expected one of {', '.join(GROUPS)}") from None
