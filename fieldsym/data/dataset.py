"""``FieldDataset``: typed ``(x, y)`` pairs from one schema-1 file, one split of it, or a split file.

Why it reads the way it does:

- Validation (:mod:`fieldsym.data.schema`) runs once, with xarray; the reads themselves use raw
  ``netCDF4`` because it is 2-3x faster than xarray ``isel`` (DESIGN.md section 5).
- The file is opened lazily, once per process. netCDF4 handles cannot be pickled and netCDF-C must not
  be read from several threads, so ``__getstate__`` drops the handle and a process that finds a handle
  opened by another process (a forked DataLoader worker) opens its own.
- :meth:`FieldDataset.read` reads a *block* of consecutive items with one ``var[start:stop]`` call per
  variable: consecutive items are consecutive samples (or consecutive windows of one trajectory), and
  one large read costs far less than many small ones. The streaming loader builds on it.
- Small selections are held in memory as tensors (``in_memory=True``, or automatically under
  ``memory_limit`` bytes), behind the same reading code.

Items: item ``i`` is ``(sample position i // B, base time bases[i % B])`` with ``B = len(bases)`` (see
:class:`~fieldsym.data.spec.TimeSelection`); ``x`` is ``(C_in, H, W)`` in ``in_type`` channel order and
``y`` is ``(C_out, H, W)`` in ``out_type`` order, float32.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import netCDF4
import numpy as np
import torch

from fieldsym.fields import FieldType
from fieldsym.grid import Grid

from .schema import DatasetError, FileInfo, _open_raw, _read_raw, check_same_grid, inspect_file
from .spec import DataSpec, ResolvedSpec, resolve

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_MEMORY_LIMIT = 512 * 2**20


class FieldDataset(torch.utils.data.Dataset):
    """Typed field pairs ``(x, y)`` read lazily from a schema-1 netCDF file.

    Args:
        source: a ``.nc`` file, or a folder holding ``train.nc``, ``valid.nc``, ``test.nc``.
        spec: what to read (:class:`~fieldsym.data.spec.DataSpec`).
        split: ``None`` (every sample of a file) or one of ``train | valid | test``: the file of that
            name in a folder, or a seeded random subset of a single file's samples of size
            ``fractions[i] * num_samples``.
        fractions: ``(train, valid, test)`` fractions of a single file, summing to at most 1.
        seed: seed of the random split.
        in_memory: hold the selected arrays as tensors; ``None`` does so when they fit ``memory_limit``.
        memory_limit: bytes, for ``in_memory=None``.
        check_finite: scan the selected variables for NaN/inf/missing values on construction.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        spec: DataSpec,
        split: str | None = None,
        *,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        in_memory: bool | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        check_finite: bool = True,
    ) -> None:
        self.spec = spec
        self.split = split
        path, others = _split_file(Path(source), split)
        self.info: FileInfo = inspect_file(path, spec.variables, dims=spec.dims, periodic=spec.periodic,
                                           check_finite=check_finite)
        check_same_grid([self.info] + [inspect_file(p, spec.variables, dims=spec.dims,
                                                    periodic=spec.periodic, check_finite=False)
                                       for p in others])
        self.resolved: ResolvedSpec = resolve(spec, self.info)
        self.samples = _split_samples(self.info.num_samples, split, fractions, seed, Path(source).is_file())
        self._offsets = _variable_offsets(self.resolved)
        self._store: _NetCDFStore | _MemoryStore = _NetCDFStore(path, self.samples)
        wanted = self._selected_bytes()
        if in_memory or (in_memory is None and wanted <= memory_limit):
            self._store = _MemoryStore.load(self._store, self._needed_times(), self._read_chunk())
        logger.info("%s split=%s: %d items, %s, %.1f MiB selected, %s", path, split, len(self),
                    self.in_type, wanted / 2**20, "in memory" if self.in_memory else "streamed")

    # -- description ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def grid(self) -> Grid:
        """The grid: shape ``(H, W)``, spacing ``(dy, dx)``, origin, periodic ``(y, x)``; ``grid.axis("x")``."""
        return self.info.grid

    @property
    def in_type(self) -> FieldType:
        return self.resolved.in_type

    @property
    def out_type(self) -> FieldType:
        return self.resolved.out_type

    @property
    def in_memory(self) -> bool:
        return isinstance(self._store, _MemoryStore)

    @property
    def windows_per_sample(self) -> int:
        return len(self.resolved.bases)

    def __len__(self) -> int:
        return len(self.samples) * self.windows_per_sample

    # -- reading -------------------------------------------------------------------------------------

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        x, y = self.read(index, index + 1)
        return x[0], y[0]

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``start .. stop - 1``: ``x (n, C_in, H, W)``, ``y (n, C_out, H, W)``."""
        n = stop - start
        H, W = self.grid.shape
        x = torch.empty(n, self.in_type.num_channels, H, W)
        y = torch.empty(n, self.out_type.num_channels, H, W)
        self.read_into(start, stop, x.unbind(0), y.unbind(0))
        return x, y

    def read_into(self, start: int, stop: int, x_rows: Sequence[torch.Tensor],
                  y_rows: Sequence[torch.Tensor]) -> None:
        """Write item ``start + i`` into ``x_rows[i]`` ``(C_in, H, W)`` and ``y_rows[i]`` ``(C_out, H, W)``.

        Reads each variable once, as one block, and copies each item once into place; the rows may
        belong to different tensors (the loader writes straight into shuffled batches).
        """
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"items {start}..{stop - 1} out of range for a dataset of {len(self)} items")
        items = np.arange(start, stop)
        positions, local = np.unique(items // self.windows_per_sample, return_inverse=True)
        bases = self.resolved.bases[items % self.windows_per_sample]
        blocks = {v: self._read_variable(v, positions, local, bases) for v in self.spec.variables}
        r = self.resolved
        in_steps = [(int(o), sel) for o in r.in_offsets for sel in r.spec.inputs]
        _place(x_rows, in_steps, blocks, self._offsets)
        _place(y_rows, [(r.out_offset, sel) for sel in r.spec.outputs], blocks, self._offsets)

    def _read_variable(self, name: str, positions: np.ndarray, local: np.ndarray,
                       bases: np.ndarray) -> torch.Tensor:
        """``(n, len(offsets[name]), [2,] H, W)``: the variable at every item's times."""
        offsets = self._offsets[name]
        if not self.info.variable(name).has_time:
            data = self._store.read(name, positions, None)
            return _gather(data, local, np.zeros((len(local), len(offsets)), dtype=np.int64))
        times = bases[:, None] + offsets[None, :]
        unique, t_local = np.unique(times, return_inverse=True)
        data = self._store.read(name, positions, unique)
        return _gather(data, local, t_local.reshape(times.shape))

    def close(self) -> None:
        """Close the file handle of this process (reopened on the next read)."""
        self._store.close()

    # -- memory ----------------------------------------------------------------------------------------

    def _needed_times(self) -> dict[str, np.ndarray | None]:
        return {v: (np.unique(self.resolved.bases[:, None] + self._offsets[v][None, :])
                    if self.info.variable(v).has_time else None) for v in self.spec.variables}

    def _selected_bytes(self) -> int:
        H, W = self.grid.shape
        total = 0
        for name, times in self._needed_times().items():
            width = 2 if self.info.variable(name).has_component else 1
            total += len(self.samples) * (1 if times is None else len(times)) * width * H * W * 4
        return total

    def _read_chunk(self) -> int:
        """Samples per read when loading into memory: about 32 MiB."""
        per_sample = max(1, self._selected_bytes() // max(1, len(self.samples)))
        return max(1, (32 * 2**20) // per_sample)


# -- splits ----------------------------------------------------------------------------------------------


def _split_file(source: Path, split: str | None) -> tuple[Path, list[Path]]:
    """The file to read and the other split files of its folder (checked for the same grid)."""
    if split is not None and split not in SPLITS:
        raise DatasetError(f"split {split!r} unknown; expected None or one of {', '.join(SPLITS)}")
    if not source.is_dir():
        return source, []
    if split is None:
        raise DatasetError(f"{source} is a folder of splits; name the split to read: one of {SPLITS}")
    path = source / f"{split}.nc"
    if not path.is_file():
        found = sorted(p.name for p in source.glob("*.nc")) or ["no .nc files"]
        raise DatasetError(f"{source}: no {path.name} (found {', '.join(found)}); name the files "
                           f"{', '.join(s + '.nc' for s in SPLITS)}")
    return path, [source / f"{s}.nc" for s in SPLITS if s != split and (source / f"{s}.nc").is_file()]


def _split_samples(num_samples: int, split: str | None, fractions: Sequence[float], seed: int,
                   single_file: bool) -> np.ndarray:
    """Sorted sample indices of the split: all of them, or a seeded random subset of a single file."""
    if split is None or not single_file:
        return np.arange(num_samples)
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) > 1 + 1e-9:
        raise DatasetError(f"fractions must be (train, valid, test), >= 0, summing to <= 1; got {fractions}")
    ends = np.round(np.cumsum((0.0,) + fractions) * num_samples).astype(int)
    i = SPLITS.index(split)
    chosen = np.sort(np.random.default_rng(seed).permutation(num_samples)[ends[i]:ends[i + 1]])
    if chosen.size == 0:
        raise DatasetError(f"split {split!r} of {num_samples} samples with fractions {fractions} is empty; "
                           "raise its fraction or use more samples")
    return chosen


def _variable_offsets(r: ResolvedSpec) -> dict[str, np.ndarray]:
    """Sorted time offsets (from an item's base time) at which each variable is read."""
    offsets: dict[str, set[int]] = {}
    for sel in r.spec.inputs:
        for v in sel.variables:
            offsets.setdefault(v, set()).update(int(o) for o in r.in_offsets)
    for sel in r.spec.outputs:
        for v in sel.variables:
            offsets.setdefault(v, set()).add(int(r.out_offset))
    return {v: np.array(sorted(o), dtype=np.int64) for v, o in offsets.items()}


# -- assembling -------------------------------------------------------------------------------------------


def _gather(data: torch.Tensor, local: np.ndarray, t_local: np.ndarray) -> torch.Tensor:
    """``data[local[i], t_local[i, j]]`` for every item ``i`` and offset ``j``.

    With one window per sample (one-step and multi-step reads) the block already is that array, so it
    is returned as is and copied only once, into the output batch.
    """
    if data.shape[:2] == t_local.shape and (t_local == np.arange(t_local.shape[1])).all():
        return data
    return data[torch.from_numpy(local)[:, None], torch.from_numpy(t_local)]


def _place(rows: Sequence[torch.Tensor], steps, blocks, offsets) -> None:
    """Copy each ``(offset, selection)`` into its channels of every item's row ``(C, H, W)``, in order.

    A scalar variable fills one channel, a stored vector two, and the two scalars of a mapped vector
    fill its two channels one after the other: each block is copied exactly once, row by row (one
    contiguous copy per item and variable, so rows may live in different batch tensors).
    """
    channel = 0
    for offset, sel in steps:
        for name in sel.variables:
            part = blocks[name][:, int(np.searchsorted(offsets[name], offset))]
            part = part[:, None] if part.ndim == 3 else part
            width = part.shape[1]
            for row, source in zip(rows, part):
                row[channel:channel + width].copy_(source)
            channel += width
    assert channel == rows[0].shape[0], "in_type/out_type channel counts match the selections"


# -- stores -----------------------------------------------------------------------------------------------


class _NetCDFStore:
    """Raw netCDF4 reads of the split's samples; one lazily opened handle per process."""

    def __init__(self, path: Path, samples: np.ndarray) -> None:
        self.path = path
        self.samples = samples
        self._handle: netCDF4.Dataset | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def _variable(self, name: str) -> netCDF4.Variable:
        if self._handle is None or self._pid != os.getpid():
            # A handle inherited through fork belongs to the parent: never use it, open our own.
            self._handle, self._pid = _open_raw(self.path), os.getpid()
        var = self._handle.variables[name]
        var.set_auto_mask(False)  # plain ndarrays; missing values were rejected by validation
        return var

    def read(self, name: str, positions: np.ndarray, times: np.ndarray | None) -> torch.Tensor:
        """``(len(positions), len(times) or 1, [2,] H, W)`` float32, one read call."""
        var = self._variable(name)
        row_index, row_pick = _as_index(self.samples[positions])
        if times is None:
            data = _read_raw(self.path, name, lambda: var[row_index])
            data = data if row_pick is None else data[row_pick]
            return torch.from_numpy(np.asarray(data, dtype=np.float32)[:, None])
        time_index, time_pick = _as_index(times)
        data = _read_raw(self.path, name, lambda: var[row_index, time_index])
        data = data if row_pick is None else data[row_pick]
        data = data if time_pick is None else data[:, time_pick]
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = self._pid = None


def _as_index(values: np.ndarray) -> tuple[slice | np.ndarray, np.ndarray | None]:
    """A netCDF index for sorted unique ``values`` and the picks to apply after reading.

    A slice when ``values`` are dense in their span (read a little extra, one contiguous read), else
    the list itself (netCDF4 then issues one read per run).
    """
    lo, hi = int(values[0]), int(values[-1]) + 1
    if hi - lo == len(values):
        return slice(lo, hi), None
    if hi - lo <= 2 * len(values):
        return slice(lo, hi), values - lo
    return values, None


class _MemoryStore:
    """The split's selected variables as tensors ``(sample position, kept time, [2,] H, W)``."""

    def __init__(self, arrays: dict[str, torch.Tensor], times: dict[str, np.ndarray | None]) -> None:
        self.arrays = arrays
        self.times = times

    @classmethod
    def load(cls, store: _NetCDFStore, times: dict[str, np.ndarray | None], chunk: int) -> _MemoryStore:
        arrays = {}
        for name, kept in times.items():
            parts = [store.read(name, np.arange(s, min(s + chunk, len(store.samples))), kept)
                     for s in range(0, len(store.samples), chunk)]
            arrays[name] = torch.cat(parts)
        store.close()
        return cls(arrays, times)

    def read(self, name: str, positions: np.ndarray, times: np.ndarray | None) -> torch.Tensor:
        rows = torch.from_numpy(positions)
        if times is None:
            return self.arrays[name][rows]
        return self.arrays[name][rows[:, None], torch.from_numpy(np.searchsorted(self.times[name], times))]

    def close(self) -> None:
        """Nothing to close."""
