#!/usr/bin/env bash
# The GPU measurements of the paper configuration as one prepared run (no Ray, no datasets, no weights needed):
#   1. one UDA iteration in fp32, tf32, bf16, bf16+channels_last, bf16+channels_last under torch.compile and
#      with optim.reference_param_groups: ms/iteration, peak memory, bf16 against fp32 loss values;
#   2. packing: 1, 2 and 4 processes of bf16+channels_last on the one GPU, trial-iterations/s.
# Usage: PYTHON=.venv/bin/python bash benchmarks/gpu_session.sh [OUT_DIR]   (default results/benchmarks)
# More compiled modes: COMPILE="all" (each compiled mode adds minutes of compilation).
set -euo pipefail
python=${PYTHON:-python}
out=${1:-results/benchmarks}
"$python" benchmarks/uda_iteration.py --device cuda --compile ${COMPILE:-bf16+channels_last} \
    --report "$out/uda_iteration_gpu.md"
"$python" benchmarks/uda_iteration.py --device cuda --processes 1 2 4 --seconds 30 \
    --report "$out/uda_packing_gpu.md"
