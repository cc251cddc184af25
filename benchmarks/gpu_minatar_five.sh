#!/usr/bin/env bash
# The five-game reproduction on accelerators (run from the repository root): the four agents
# (dqn, dqn+dvw, mdqn, mdqn+dvw) on all five MinAtar games, paper protocol, vmapped seeds,
# sharded over every device when there are several (mdvi-lab minatar --shard), every run sized
# to fit the time budget; then the five-panel report beside the paper's 10M-step returns.
# Resumable: rerun the same command. Several hosts: see benchmarks/minatar_five.py.
# Usage: benchmarks/gpu_minatar_five.sh --minutes 60 [--seeds 5] [--out results/minatar-five]
#        [any other option of benchmarks/minatar_five.py]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/setup_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
DEVICES=$("$PYTHON" -c "import jax; print(jax.device_count())")
echo "devices: $DEVICES ($("$PYTHON" -c "import jax; print(jax.default_backend())"))"
"$PYTHON" benchmarks/minatar_five.py --seeds 5 --out results/minatar-five --shard auto "$@"
