"""Typed fields: which channels form scalars, pseudoscalars and vectors, and how the plane's linear
maps act on them.

A :class:`FieldType` is a value with a string form that round-trips, like e3nn's irreps:

    >>> ft = FieldType.parse("vorticity:pseudoscalar, velocity:vector, density:scalar")
    >>> str(ft)
    'vorticity:pseudoscalar, velocity:vector, density:scalar'
    >>> ft.num_channels
    4

Channel order is field order; a vector takes two channels, x component first. Representations of a
linear map ``A`` of the plane (DESIGN.md section 1):

    ======== ============ ======================
    type     rho(A)       d rho(a), a in gl(2)
    ======== ============ ======================
    scalar   1            0
    pseudo   sign(det A)  0
    vector   A            a
    ======== ============ ======================

The exact discrete actions (whole-cell shifts, quarter turns, axis and diagonal reflections) are index
permutations of the grid followed by ``rho(A)`` on the channels:

    (g.u)(x) = rho(A) u(A^-1 (x - b))

with ``x`` measured from the centre of the grid (see :func:`lattice_transform` for the centre on
periodic and non-periodic axes). Arrays are ``(..., channel, H, W)`` with ``H`` = ``y`` growing with
the row index and ``W`` = ``x``; so the counter-clockwise quarter turn ``A = J = [[0,-1],[1,0]]`` is
``torch.rot90(u, -1)`` on the grid (``k=+1`` turns the picture clockwise) with vector components
``(u_x, u_y) -> (-u_y, u_x)``. Both maps are derived here from the same matrix ``A``, never written
separately, because getting one of them backwards silently destroys a symmetry (DESIGN.md section 5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch

FieldKind = Literal["scalar", "pseudoscalar", "vector"]
KINDS: tuple[str, ...] = ("scalar", "pseudoscalar", "vector")
_WIDTH = {"scalar": 1, "pseudoscalar": 1, "vector": 2}


@dataclasses.dataclass(frozen=True)
class Field:
    """One named field of a :class:`FieldType`: ``name`` and ``kind`` (scalar|pseudoscalar|vector)."""

    name: str
    kind: FieldKind

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"unknown field type {self.kind!r} for field {self.name!r}: expected one of "
                f"{', '.join(KINDS)} (write e.g. '{self.name}:vector')"
            )
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(
                f"field name {self.name!r} is not valid: use letters, digits, '_' or '-'"
            )

    @property
    def width(self) -> int:
        """Number of channels: 2 for a vector, else 1."""
        return _WIDTH[self.kind]

    def __str__(self) -> str:
        return f"{self.name}:{self.kind}"


@dataclasses.dataclass(frozen=True)
class FieldType:
    """An ordered tuple of typed fields; the channel layout of a ``(batch, channel, H, W)`` tensor."""

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("a FieldType needs at least one field, e.g. 'u:scalar'")
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"field names must be unique; repeated: {', '.join(duplicates)}")

    # -- construction and string form -------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | FieldType) -> FieldType:
        """Parse ``"name:type, name:type, ..."``; a bare ``type`` names the field after its type."""
        if isinstance(text, FieldType):
            return text
        if not isinstance(text, str):
            raise TypeError(f"expected a field-type string like 'u:vector', got {type(text).__name__}")
        fields = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                raise ValueError(f"empty entry in field-type string {text!r}: remove the extra comma")
            name, sep, kind = item.partition(":")
            name, kind = name.strip(), kind.strip()
            if not sep:
                name, kind = (f"{item}_{len(fields)}", item)
            fields.append(Field(name, kind))  # type: ignore[arg-type]
        return cls(tuple(fields))

    @classmethod
    def of(cls, *kinds: str) -> FieldType:
        """Anonymous fields ``f0, f1, ...`` of the given kinds: ``FieldType.of("vector", "scalar")``."""
        return cls(tuple(Field(f"f{i}", k) for i, k in enumerate(kinds)))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return ", ".join(str(f) for f in self.fields)

    def __add__(self, other: FieldType) -> FieldType:
        return FieldType(self.fields + FieldType.parse(other).fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self):
        return iter(self.fields)

    # -- channel layout ---------------------------------------------------------------------------

    @property
    def num_channels(self) -> int:
        return sum(f.width for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def slices(self) -> dict[str, slice]:
        """Channel slice of every field, by name."""
        out, start = {}, 0
        for f in self.fields:
            out[f.name] = slice(start, start + f.width)
            start += f.width
        return out

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in {self}; fields are {', '.join(self.names)}")

    def check(self, u: torch.Tensor, what: str = "input") -> None:
        """Raise if ``u`` is not ``(..., num_channels, H, W)``."""
        if u.ndim < 3 or u.shape[-3] != self.num_channels:
            raise ValueError(
                f"{what} has shape {tuple(u.shape)} but field type '{self}' needs "
                f"(..., {self.num_channels}, H, W): {self.num_channels} channels "
                f"(a vector takes 2, x component first)"
            )

    # -- representations --------------------------------------------------------------------------

    def rho(self, A: torch.Tensor) -> torch.Tensor:
        """Block-diagonal ``(C, C)`` matrix ``rho(A)`` of a ``(2, 2)`` linear map."""
        A = _as_matrix(A, "rho(A)")
        det_sign = torch.sign(torch.linalg.det(A))
        blocks = []
        for f in self.fields:
            if f.kind == "scalar":
                blocks.append(torch.ones(1, 1, dtype=A.dtype, device=A.device))
            elif f.kind == "pseudoscalar":
                blocks.append(det_sign.reshape(1, 1))
            else:
                blocks.append(A)
        return torch.block_diag(*blocks)

    def drho(self, a: torch.Tensor) -> torch.Tensor:
        """Block-diagonal ``(C, C)`` matrix ``d rho(a)`` of ``a`` in gl(2)."""
        a = _as_matrix(a, "d rho(a)")
        zero = torch.zeros(1, 1, dtype=a.dtype, device=a.device)
        return torch.block_diag(*[a if f.kind == "vector" else zero for f in self.fields])

    def fiber_projector(self, names: Sequence[str], dtype=torch.float64) -> torch.Tensor:
        """``(C, C)`` diagonal projector onto the channels of the named fields (amplitude scalings)."""
        slices = self.slices()
        diag = torch.zeros(self.num_channels, dtype=dtype)
        for name in names:
            self.field(name)
            diag[slices[name]] = 1
        return torch.diag(diag)

    # -- exact discrete actions ---------------------------------------------------------------------

    def transform(
        self,
        u: torch.Tensor,
        A: torch.Tensor | Sequence[Sequence[int]] = ((1, 0), (0, 1)),
        shift: tuple[int, int] = (0, 0),
        periodic: tuple[bool, bool] = (True, True),
    ) -> torch.Tensor:
        """Exact action ``(g.u)(x) = rho(A) u(A^-1 (x - b))`` of a lattice symmetry on ``u``.

        ``u``: ``(..., C, H, W)``. ``A``: a signed permutation matrix (an element of D4 acting on
        ``(x, y)``). ``shift``: ``b`` in whole cells, ``(dx_cells, dy_cells)``. ``periodic``: per axis,
        ``(y, x)`` order like the array axes.
        """
        self.check(u)
        A = torch.as_tensor(A, dtype=torch.float64)
        grid_moved = lattice_transform(u, A, shift, periodic)
        R = self.rho(A).to(dtype=u.dtype, device=u.device)
        # c=out channel, d=in channel, ...=batch and grid
        return torch.einsum("cd,...dhw->...chw", R, grid_moved)


def _as_matrix(A, what: str) -> torch.Tensor:
    A = torch.as_tensor(A)
    if not A.is_floating_point():
        A = A.to(torch.float64)
    if A.shape != (2, 2):
        raise ValueError(f"{what} needs a (2, 2) matrix acting on (x, y), got shape {tuple(A.shape)}")
    return A


# The eight signed permutation matrices acting on (x, y), by name. J is the counter-clockwise quarter
# turn; "flip_x" reverses the x axis (x -> -x), "flip_diag" swaps x and y.
D4_MATRICES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "e": ((1, 0), (0, 1)),
    "r1": ((0, -1), (1, 0)),
    "r2": ((-1, 0), (0, -1)),
    "r3": ((0, 1), (-1, 0)),
    "flip_x": ((-1, 0), (0, 1)),
    "flip_y": ((1, 0), (0, -1)),
    "flip_diag": ((0, 1), (1, 0)),
    "flip_antidiag": ((0, -1), (-1, 0)),
}


def lattice_transform(
    u: torch.Tensor,
    A: torch.Tensor,
    shift: tuple[int, int] = (0, 0),
    periodic: tuple[bool, bool] = (True, True),
) -> torch.Tensor:
    """Move the grid of ``u`` (``(..., H, W)``): ``out(x) = u(A^-1 (x - b))``, no channel mixing.

    Index coordinates are measured from the grid centre. On a periodic axis of ``N`` cells the
    centre is the domain centre ``x0 + N dx / 2``; a reflection about it is ``j -> -j mod N``, the
    same as about ``x0`` because the axis is a circle. On a non-periodic axis the centre is the middle
    node ``(N - 1) / 2`` and a reflection is ``j -> N - 1 - j``. Both keep a lattice onto itself, so
    the result is an exact permutation. Shifts on a non-periodic axis are not symmetries: an error.
    """
    A = A.to(torch.float64)
    if not _is_signed_permutation(A):
        raise ValueError(
            f"lattice_transform needs a signed permutation matrix (an element of D4), got {A.tolist()}; "
            "continuous rotations are not exact on a grid: use generators and the Lie derivative"
        )
    H, W = u.shape[-2], u.shape[-1]
    swaps_axes = A[0, 0] == 0
    if swaps_axes and (H != W or periodic[0] != periodic[1]):
        raise ValueError(
            f"a quarter turn or diagonal reflection needs a square grid with the same periodicity on "
            f"both axes; got H={H}, W={W}, periodic(y, x)={periodic}"
        )
    for axis, (cells, per) in enumerate(zip((shift[1], shift[0]), periodic)):
        if cells and not per:
            raise ValueError(
                f"a shift of {cells} cells along {'yx'[axis]} is not a symmetry of a non-periodic axis"
            )
    # Centred integer coordinates of the target nodes; twice the coordinate keeps half-integers exact.
    jy = torch.arange(H, dtype=torch.float64)
    jx = torch.arange(W, dtype=torch.float64)
    cy = 0.0 if periodic[0] else (H - 1) / 2
    cx = 0.0 if periodic[1] else (W - 1) / 2
    Y, X = torch.meshgrid(jy - cy, jx - cx, indexing="ij")
    pts = torch.stack([X - shift[0], Y - shift[1]])  # (2, H, W), x first
    src = torch.einsum("ij,jhw->ihw", A.T, pts)  # A^-1 = A^T for a signed permutation
    sx = _to_index(src[0] + cx, W, periodic[1])
    sy = _to_index(src[1] + cy, H, periodic[0])
    return u[..., sy, sx]


def _to_index(coord: torch.Tensor, n: int, periodic: bool) -> torch.Tensor:
    idx = torch.round(coord).to(torch.long)
    if periodic:
        return idx % n
    assert bool(((idx >= 0) & (idx < n)).all()), "a D4 element maps a centred lattice onto itself"
    return idx


def _is_signed_permutation(A: torch.Tensor) -> bool:
    return bool(
        ((A == 0) | (A.abs() == 1)).all()
        and (A.abs().sum(0) == 1).all()
        and (A.abs().sum(1) == 1).all()
    )
