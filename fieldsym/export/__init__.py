"""Export trained operators: ``pt2`` (torch.export), ``onnx`` (onnxruntime), ``safetensors`` (weights).

An export is a directory: the model file(s) and a model card (``model_card.json`` and ``.md``) that
records what the operator computes, on what data it was trained, the SHA-256 of every file (checked on
load) and the equivariance errors measured on the exported file itself. Graph formats hold a plain
operator: constraints baked into ordinary weights (like escnn's ``export()``), spectral convolutions in
real arithmetic, normalisation inside, so the graph takes and returns physical fields.

- :func:`export_run` — a run directory or checkpoint -> an export directory;
- :func:`load_export` — load any export back, verified, as a callable on physical fields;
- :func:`load_safetensors` — rebuild the fieldsym operator of a ``safetensors`` export;
- :func:`predict` — run an export on a schema-1 file, write a schema-1 file;
- :func:`bake` — the plain module of an operator (``FieldFNO``, ``GroupFNO``, ``SteerableFNO``,
  ``GroupAveraged`` over one of them), for custom exports.
"""

from fieldsym.export.bake import BakeError, PhysicalOperator, bake
from fieldsym.export.exporter import export_run
from fieldsym.export.formats import FORMATS, LoadedExport, load_export, load_safetensors
from fieldsym.export.predict import predict
from fieldsym.export.source import ExportError

__all__ = [
    "FORMATS",
    "BakeError",
    "ExportError",
    "LoadedExport",
    "PhysicalOperator",
    "bake",
    "export_run",
    "load_export",
    "load_safetensors",
    "predict",
]
