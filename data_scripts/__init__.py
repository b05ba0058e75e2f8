"""PDE solvers that write schema-1 netCDF files (DESIGN.md section 3).

Each module is both a script (``python data_scripts/<name>.py --help``) and importable: the experiment
runner calls its ``generate(...)`` function, which writes one file and returns its path.
"""
