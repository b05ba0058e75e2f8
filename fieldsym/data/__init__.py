"""Data on disk: the schema-1 netCDF writer, validation, datasets, normalisation, loaders and converters
(DESIGN.md section 3)."""

from fieldsym.data.converters import convert_neuralop, convert_pdebench
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import DevicePrefetcher, FieldLoader, make_loader
from fieldsym.data.normalization import FieldNormalizer, fit_normalizers
from fieldsym.data.schema import SCHEMA_VERSION, DatasetError, FileInfo, inspect_file
from fieldsym.data.spec import DataSpec, FieldSelection, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset

__all__ = [
    "SCHEMA_VERSION", "DataSpec", "DatasetError", "DevicePrefetcher", "FieldDataset", "FieldLoader",
    "FieldNormalizer", "FieldSelection", "FieldSpec", "FileInfo", "TimeSelection", "convert_neuralop",
    "convert_pdebench", "fit_normalizers", "inspect_file", "make_loader", "write_dataset",
]
