# The two commands of the README:  `make quickstart` (set-up + main job) and `make test` (set-up + tests).
# Set-up installs the CPU torch wheel first so pip never pulls a multi-GB CUDA build; on a GPU machine
# create .venv yourself with the torch you want and the targets below reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# The quickstart's and the tests' tensors are small: one intra-op thread per process is as fast as two
# on an idle 2-core machine and many times faster on a busy one (OpenMP threads spin against other
# processes). Set OMP_NUM_THREADS yourself to override.
export OMP_NUM_THREADS ?= 1

.PHONY: setup quickstart test clean

$(BIN)/fieldsym: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/fieldsym

setup: $(BIN)/fieldsym

quickstart: setup
	$(BIN)/fieldsym run configs/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
