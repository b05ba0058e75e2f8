"""Writing and loading the three export formats, and refusing files that were changed.

- ``pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``), for PyTorch without fieldsym's
  code; ``torch.export.load`` runs it.
- ``onnx``: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``), for onnxruntime and other
  runtimes; one self-contained file.
- ``safetensors``: the operator's own (trainable, constrained) weights and normalisation buffers,
  no pickle, plus ``operator.json``, the recipe that rebuilds it in fieldsym (:func:`load_safetensors`).

Why loading is strict: an export is a file someone sends around. Each file's SHA-256 is recorded in the
model card beside it and checked on load, on the very bytes that are then parsed (no window between
check and use), so a truncated copy or a flipped byte fails with the path and what to do instead of a
parser's traceback or, worse, a model that runs and is wrong. Nothing is unpickled: safetensors and
ONNX are not pickle formats, and ``torch.export.load`` reads weights as raw bytes except for payloads
marked as pickled and its sample inputs, which it unpickles with a fallback to ``weights_only=False``;
an archive with a pickled payload, or sample inputs that ``weights_only`` refuses, is rejected before
``torch.export.load`` sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fieldsym.export.bake import PhysicalOperator
from fieldsym.export.source import ExportError
from fieldsym.fields import FieldType

FORMATS = ("pt2", "onnx", "safetensors")
MODEL_FILES = {"pt2": "model.pt2", "onnx": "model.onnx", "safetensors": "model.safetensors"}
RECIPE = "operator.json"
CARD = "model_card.json"
INPUT_NAME, OUTPUT_NAME = "u", "F_u"
MAX_SIZE = 2**20  # the upper bound of every dynamic dimension

_REEXPORT = "re-export it from the run (`fieldsym export RUN_DIR --format {fmt}`) or copy it again"


# -- writing -----------------------------------------------------------------------------------------------


def dynamic_shapes(batch: bool, grid_min: tuple[int, int] | None) -> dict[str, dict[int, Any]]:
    """``torch.export`` dynamic shapes for the single input: batch, and the grid when ``grid_min`` is given."""
    dims: dict[int, Any] = {}
    if batch:
        dims[0] = torch.export.Dim("batch", min=1, max=MAX_SIZE)
    if grid_min is not None:
        dims[2] = torch.export.Dim("H", min=grid_min[0], max=MAX_SIZE)
        dims[3] = torch.export.Dim("W", min=grid_min[1], max=MAX_SIZE)
    return {"u": dims}


def write_pt2(module: nn.Module, example: torch.Tensor, shapes: dict, path: Path) -> None:
    program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    torch.export.save(program, path)


def write_onnx(module: nn.Module, example: torch.Tensor, shapes: dict, path: Path) -> None:
    with _quiet(_ONNX_LOGGERS), _quiet(_ONNX_NOTICES, logging.ERROR), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=shapes,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
        program.save(path)


# The ONNX exporter's graph passes log every rewrite at INFO (about 60 lines for a small operator), and
# the CLI shows INFO for every logger: they would bury the export's own messages.
_ONNX_LOGGERS = ("onnx_ir", "onnxscript")
# ... and the exporter warns, at every export, that torchvision's detection ops cannot be registered
# (torchvision is not a dependency), and torch's pytree a FutureWarning about its own LeafSpec: nothing
# a user can act on.
_ONNX_NOTICES = ("torch.onnx._internal.exporter._registration",)


@contextlib.contextmanager
def _quiet(names: tuple[str, ...], level: int = logging.WARNING) -> Iterator[None]:
    """Raise the loggers ``names`` to ``level`` for the block, then restore them; a logger whose level
    was set explicitly (someone debugging the exporter) is left alone."""
    loggers = [logger for logger in map(logging.getLogger, names) if logger.level == logging.NOTSET]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger in loggers:
            logger.setLevel(logging.NOTSET)


def write_safetensors(operator: PhysicalOperator, recipe: dict[str, Any], directory: Path) -> None:
    """The operator's state dict (no pickle) and the JSON ``recipe`` that rebuilds it."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in operator.state_dict().items() if k != "_metadata"}
    save_file(state, directory / MODEL_FILES["safetensors"], metadata={"fieldsym_recipe": RECIPE})
    (directory / RECIPE).write_text(json.dumps(recipe, indent=2) + "\n")


# -- loading -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadedExport:
    """An export loaded back: call it on physical fields ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    ``card``: the model card. ``run``: the runtime's own callable (the ExportedProgram's module, the
    onnxruntime session's wrapper, or the rebuilt fieldsym operator).
    """

    path: Path
    format: str
    card: dict[str, Any]
    run: Callable[[torch.Tensor], torch.Tensor]

    @property
    def in_type(self) -> FieldType:
        return FieldType.parse(self.card["inputs"]["field_type"])

    @property
    def out_type(self) -> FieldType:
        return FieldType.parse(self.card["outputs"]["field_type"])

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        self.check(u)
        with torch.no_grad():
            return self.run(u.to(torch.float32))

    def check(self, u: torch.Tensor) -> None:
        """Raise unless ``u`` has the card's input channels and a grid the export accepts."""
        C = self.in_type.num_channels
        grid = self.card["grid"]
        if u.ndim != 4 or u.shape[1] != C:
            raise ValueError(f"{self.path}: expects (batch, {C}, H, W) for '{self.in_type}', got {tuple(u.shape)}")
        H, W = u.shape[-2:]
        if grid["dynamic"]:
            low = tuple(grid["min_shape"])
            if H < low[0] or W < low[1]:
                raise ValueError(f"{self.path}: needs a grid of at least {low[0]}x{low[1]} (the modes it keeps), "
                                 f"got {H}x{W}")
        elif (H, W) != tuple(grid["shape"]):
            raise ValueError(f"{self.path}: exported for a {grid['shape'][0]}x{grid['shape'][1]} grid, got "
                             f"{H}x{W}; resample the input or export with --dynamic-shapes")


def read_card(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(directory, card)`` for an export file or its directory."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    card_path = directory / CARD
    if not card_path.is_file():
        exports = sorted(p.parent for p in directory.glob(f"export/*/{CARD}"))  # a run directory, exported
        if exports:
            raise ExportError(f"{path} is a run directory, not an export; give one of its exports: "
                              f"{', '.join(map(str, exports))}")
        if any((directory / name).is_file() for name in ("best.pt", "last.pt")):
            raise ExportError(f"{path} is a run directory that was not exported: `fieldsym export {path} --format "
                              "pt2|onnx|safetensors` writes RUN/export/FORMAT, then give that")
        raise ExportError(f"{path}: no {CARD} beside it; an export is a directory with its model card, which "
                          f"holds the checksums it is verified against: {_REEXPORT.format(fmt='FORMAT')}")
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ExportError(f"{card_path}: not a readable model card ({error}); "
                          f"{_REEXPORT.format(fmt='FORMAT')}") from error
    missing = [k for k in ("format", "files", "inputs", "outputs", "grid") if not isinstance(card, dict) or k not in card]
    if missing:
        raise ExportError(f"{card_path}: not a fieldsym model card (no {', '.join(missing)}); "
                          f"{_REEXPORT.format(fmt='FORMAT')}")
    return directory, card


def verified_bytes(directory: Path, card: dict[str, Any], name: str) -> bytes:
    """The bytes of ``directory / name``, after checking them against the card's SHA-256."""
    path = directory / name
    fmt = card["format"]
    if name not in card["files"]:
        raise ExportError(f"{path}: not listed in the model card {directory / CARD}; {_REEXPORT.format(fmt=fmt)}")
    if not path.is_file():
        raise ExportError(f"{path}: missing from the export directory; {_REEXPORT.format(fmt=fmt)}")
    data = path.read_bytes()
    expected = card["files"][name]["sha256"]
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ExportError(
            f"{path}: its SHA-256 is {found} but the model card records {expected} ({len(data)} bytes, "
            f"{card['files'][name].get('bytes', '?')} expected): the file was truncated, damaged or modified "
            f"after export; do not use it: {_REEXPORT.format(fmt=fmt)}"
        )
    return data


def load_export(path: str | Path) -> LoadedExport:
    """Load an export (its directory or its model file), verifying every file against the model card."""
    directory, card = read_card(path)
    fmt = card["format"]
    if fmt not in FORMATS:
        raise ExportError(f"{directory / CARD}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    model_path = directory / MODEL_FILES[fmt]
    if fmt == "safetensors":
        return LoadedExport(model_path, fmt, card, load_safetensors(directory))
    data = verified_bytes(directory, card, MODEL_FILES[fmt])
    run = _open_pt2(data, model_path) if fmt == "pt2" else _open_onnx(data, model_path)
    return LoadedExport(model_path, fmt, card, run)


def load_safetensors(directory: str | Path) -> PhysicalOperator:
    """Rebuild the fieldsym operator (normalisation included) of a ``safetensors`` export directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from fieldsym.data.normalization import FieldNormalizer
    from fieldsym.models import build_operator

    directory, card = read_card(directory)
    recipe_bytes = verified_bytes(directory, card, RECIPE)
    weights = verified_bytes(directory, card, MODEL_FILES["safetensors"])
    path = directory / MODEL_FILES["safetensors"]
    try:
        recipe = json.loads(recipe_bytes)
        state = load(weights)
        model = build_operator(recipe["kind"], recipe["in_type"], recipe["out_type"], **recipe["options"])
        operator = PhysicalOperator(model, FieldNormalizer.identity(recipe["in_type"]),
                                    FieldNormalizer.identity(recipe["out_type"]))
        operator.load_state_dict(state)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ExportError(f"{path}: cannot be rebuilt ({type(error).__name__}: {str(error).splitlines()[0]}); "
                          f"{_REEXPORT.format(fmt='safetensors')}") from error
    return operator.float().eval()


def _open_pt2(data: bytes, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    _refuse_pickled_payloads(data, path)
    try:
        program = torch.export.load(io.BytesIO(data))
    except (RuntimeError, ValueError, KeyError, AssertionError, zipfile.BadZipFile, EOFError,
            json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not a loadable torch.export archive ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); {_REEXPORT.format(fmt='pt2')}") from error
    return program.module()


def _refuse_pickled_payloads(data: bytes, path: Path) -> None:
    """Reject an archive that would make ``torch.export.load`` unpickle anything (module docstring)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        for name in names:
            if name.endswith("_config.json") and "/data/" in name:
                entries = json.loads(archive.read(name)).get("config", {})
                pickled = [key for key, meta in entries.items() if meta.get("use_pickle")]
                if pickled:
                    raise ExportError(f"{path}: holds pickled payloads ({', '.join(pickled[:3])}), which loading "
                                      "would unpickle; fieldsym exports never do: refusing it. "
                                      + _REEXPORT.format(fmt="pt2"))
            elif name.endswith(".pt"):
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except ExportError:
        raise
    except pickle.UnpicklingError as error:
        raise ExportError(f"{path}: holds Python objects that weights_only loading refuses "
                          f"({str(error).splitlines()[0]}); refusing it. {_REEXPORT.format(fmt='pt2')}") from error
    except (zipfile.BadZipFile, ValueError, RuntimeError, EOFError, AttributeError, OSError) as error:
        raise ExportError(f"{path}: not a readable torch.export archive ({type(error).__name__}: {error}); "
                          f"{_REEXPORT.format(fmt='pt2')}") from error


def _open_onnx(data: bytes, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf

    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, RuntimeError) as error:
        raise ExportError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: "
                          f"{str(error).splitlines()[0]}); {_REEXPORT.format(fmt='onnx')}") from error

    def run(u: torch.Tensor) -> torch.Tensor:
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: u.detach().cpu().numpy()})
        return torch.from_numpy(out)

    return run
