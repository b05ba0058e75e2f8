#!/usr/bin/env bash
# The GPU checks, as one script for a lent H100/H200 machine (results: experiments/README.md, "GPU").
#
# The machine has PyTorch with CUDA but not all of our dependencies; carry them as py3.12 wheels in .whl/
# (see the device tool's README), then from the repository root:
#
#   bash experiments/gpu_checks.sh            # logs to $OUT (default /tmp/gpu_checks)
#   ONLY="steerable_step gfno_step" bash experiments/gpu_checks.sh   # just those steps
#
# .whl/ is git-ignored: the device tool copies it only when named in its carry list (carry: [".whl"]);
# without it every step fails on "No module named 'tensorly'".
#
# Order is by value: the open step-cost questions, the CUDA tests, the other side-by-side benchmarks, the
# streaming loader feeding a GPU, the quickstart end to end (bf16 autocast), and last the whole test suite
# with a GPU visible.
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep the whole log, print its end
    local name=$1 limit=$2
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    echo "=== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "--- rc=$? in $((SECONDS - start)) s"
    tail -n "${TAIL:-25}" "$OUT/$name.log"
}

nvidia-smi -L
python3 -c "import torch, neuralop; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
# First the open question of session 3: the steerable step at equal parameters after the rewrite
# (experiments/README.md, "Second lending"), eager and compiled, then the GroupFNO's.
step steerable_step 90 python3 experiments/bench_steerable.py --device cuda --steps 20 --warmup 3
step steerable_profile 90 python3 experiments/bench_steerable.py --device cuda --steps 10 --warmup 2 \
    --models gated_r12_params --profile
step steerable_cuda_tests 120 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py -k "steerable"
step steerable_compiled 150 python3 experiments/bench_steerable.py --device cuda --steps 10 --warmup 2 --compile default \
    --models gated_r12_params
step steerable_graphs 120 python3 experiments/bench_steerable.py --device cuda --steps 10 --warmup 3 \
    --compile reduce-overhead --models gated_r12_params
step gfno_step 90 python3 experiments/bench_gfno_step.py --device cuda --steps 30 --warmup 5 --profile
step cuda_tests 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
step train_compile 150 python3 experiments/bench_train_compile.py --device cuda --epochs 5 --samples 512 --size 64
step symmetry_step 120 python3 experiments/bench_symmetry_step.py --device cuda --repeats 20
step loader 200 python3 experiments/bench_loader.py --device cuda --samples 1024 --size 128 --repeats 2 \
    --fno-samples 512 --fno-width 32 --fno-layers 4 --workers 0 2 4
step quickstart 200 python3 -m fieldsym run configs/quickstart.yaml experiment.out=/tmp/gpu_runs --no-report
TAIL=15 step test_suite 240 python3 -m pytest -q -p no:cacheprovider -x -n 8 --dist loadfile
