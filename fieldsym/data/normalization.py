"""Normalisation that commutes with the symmetry of each field.

Per field (never per pixel, never per vector component), with statistics over samples and grid:

    scalar        u -> (u - mean) / std
    pseudoscalar  u -> u / rms,            rms = sqrt(mean(u^2))
    vector        u -> u / rms_magnitude,  rms_magnitude = sqrt(mean(u_x^2 + u_y^2))

Why: a group element acts as ``(g.u)(x) = rho(A) u(A^-1 (x - b))``. Constants per field commute with
the grid motion, and ``u -> (u - m)/s`` commutes with ``rho(A)`` only if ``rho(A) m = m``: true for a
scalar (rho = 1), false for a pseudoscalar (rho = -1 under reflections) or a vector unless ``m = 0``.
A common scale commutes with every ``rho(A)``; separate scales for ``u_x`` and ``u_y`` do not commute
with rotations. So encode(g.u) = g.encode(u) for every element of D4 and every translation.

Statistics are streamed (float64 sums over blocks of the training split), so fitting never holds the
dataset in memory. The state is plain tensors and strings, so a checkpoint loads with
``torch.load(weights_only=True)`` and export can bake the normaliser in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from fieldsym.fields import FieldType

_EPS = 1e-12


class FieldNormalizer:
    """``encode(u) = (u - shift) / scale`` per channel, with ``shift`` and ``scale`` tied per field.

    ``shift``, ``scale``: ``(C,)`` tensors. ``shift`` is zero on pseudoscalar and vector channels and
    both channels of a vector share one ``scale``; the constructor checks it.
    """

    def __init__(self, field_type: FieldType | str, shift: torch.Tensor, scale: torch.Tensor) -> None:
        self.field_type = FieldType.parse(field_type)
        self.shift = torch.as_tensor(shift, dtype=torch.float64).reshape(-1)
        self.scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
        self._converted: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        C = self.field_type.num_channels
        if self.shift.shape != (C,) or self.scale.shape != (C,):
            raise ValueError(f"shift and scale need shape ({C},) for '{self.field_type}', got "
                             f"{tuple(self.shift.shape)} and {tuple(self.scale.shape)}")
        if not bool((self.scale > 0).all()):
            raise ValueError(f"scales must be positive, got {self.scale.tolist()}")
        for f, sl in zip(self.field_type, self.field_type.slices().values()):
            if f.kind != "scalar" and bool(self.shift[sl].ne(0).any()):
                raise ValueError(f"field {f.name!r} is a {f.kind}: its shift must be 0 (a mean breaks "
                                 "the sign or rotation of its components)")
            if f.kind == "vector" and self.scale[sl][0] != self.scale[sl][1]:
                raise ValueError(f"vector field {f.name!r} needs one scale for both components")

    @classmethod
    def identity(cls, field_type: FieldType | str) -> FieldNormalizer:
        C = FieldType.parse(field_type).num_channels
        return cls(field_type, torch.zeros(C), torch.ones(C))

    @classmethod
    def fit(cls, batches: Iterable[torch.Tensor], field_type: FieldType | str,
            groups: Mapping[str, str] | None = None) -> FieldNormalizer:
        """Fit on ``batches`` of ``(B, C, H, W)``; fields mapped to one group share their statistics.

        ``groups``: field name -> group name; by default every field is its own group. Multi-step
        inputs use it to pool ``w_t0, w_t1, ...`` into one statistic for ``w``.
        """
        field_type = FieldType.parse(field_type)
        stats = _Moments(field_type)
        for batch in batches:
            stats.add(batch)
        return stats.normalizer(groups or {f.name: f.name for f in field_type})

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """``(..., C, H, W)`` physical -> normalised."""
        self.field_type.check(u, "normaliser input")
        shift, scale = self._broadcast(u)
        return (u - shift) / scale

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """``(..., C, H, W)`` normalised -> physical."""
        self.field_type.check(u, "normaliser input")
        shift, scale = self._broadcast(u)
        return u * scale + shift

    def _broadcast(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Converted once per (device, dtype): on a GPU a fresh host-to-device copy at every encode/decode
        # would be a blocking transfer per call.
        key = (u.device, u.dtype)
        if key not in self._converted:
            shape = (-1, 1, 1)
            self._converted[key] = (self.shift.to(device=u.device, dtype=u.dtype).reshape(shape),
                                    self.scale.to(device=u.device, dtype=u.dtype).reshape(shape))
        return self._converted[key]

    def state_dict(self) -> dict[str, object]:
        """``{"field_type": str, "shift": (C,) tensor, "scale": (C,) tensor}``; ``weights_only`` safe."""
        return {"field_type": str(self.field_type), "shift": self.shift.clone(), "scale": self.scale.clone()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object]) -> FieldNormalizer:
        return cls(state["field_type"], state["shift"], state["scale"])  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"FieldNormalizer('{self.field_type}', shift={self.shift.tolist()}, scale={self.scale.tolist()})"


def fit_normalizers(dataset, block_size: int = 64) -> tuple[FieldNormalizer, FieldNormalizer]:
    """Input and output normalisers fitted on every item of ``dataset`` (the training split).

    ``dataset``: a :class:`~fieldsym.data.dataset.FieldDataset`; read in blocks of ``block_size``
    consecutive items, one pass, two running sums per channel.
    """
    inputs, outputs = _Moments(dataset.in_type), _Moments(dataset.out_type)
    for start in range(0, len(dataset), block_size):
        x, y = dataset.read(start, min(start + block_size, len(dataset)))
        inputs.add(x)
        outputs.add(y)
    return (inputs.normalizer(dataset.resolved.in_groups),
            outputs.normalizer({f.name: f.name for f in dataset.out_type}))


class _Moments:
    """Running float64 ``sum u`` and ``sum u^2`` per channel, and the count of values per channel."""

    def __init__(self, field_type: FieldType) -> None:
        self.field_type = field_type
        self.total = torch.zeros(field_type.num_channels, dtype=torch.float64)
        self.squares = torch.zeros(field_type.num_channels, dtype=torch.float64)
        self.count = 0

    def add(self, batch: torch.Tensor) -> None:
        self.field_type.check(batch, "normaliser fit batch")
        u = batch.detach().to(torch.float64).transpose(0, -3).reshape(batch.shape[-3], -1)
        self.total += u.sum(dim=1)
        self.squares += (u * u).sum(dim=1)
        self.count += u.shape[1]

    def normalizer(self, groups: Mapping[str, str]) -> FieldNormalizer:
        if self.count == 0:
            raise ValueError("cannot fit a normaliser on no data: the training split is empty")
        slices = self.field_type.slices()
        pooled: dict[str, list[float]] = {}
        for f in self.field_type:
            sl = slices[f.name]
            acc = pooled.setdefault(groups[f.name], [0.0, 0.0, 0])
            acc[0] += float(self.total[sl].sum()) if f.kind == "scalar" else 0.0
            acc[1] += float(self.squares[sl].sum())
            acc[2] += self.count  # a vector's two components count as one value of |u|^2
        shift = torch.zeros(self.field_type.num_channels, dtype=torch.float64)
        scale = torch.ones(self.field_type.num_channels, dtype=torch.float64)
        for f in self.field_type:
            total, squares, count = pooled[groups[f.name]]
            mean = total / count
            spread = max(squares / count - mean * mean, 0.0) ** 0.5
            shift[slices[f.name]] = mean
            scale[slices[f.name]] = spread if spread > _EPS else 1.0
        return FieldNormalizer(self.field_type, shift, scale)
