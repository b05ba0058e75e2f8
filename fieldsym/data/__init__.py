"""Data on disk: the schema-1 netCDF writer, validation, datasets and loaders (DESIGN.md section 3)."""
