#!/usr/bin/env bash
# One prepared GPU check (run from the repository root on a machine with a GPU): trains DQN,
# DQN+DVW, M-DQN and M-DQN+DVW on one game, many vmapped seeds each, for as many steps as fit
# in the time budget, and prints aggregate steps per second and final returns.
# Usage: benchmarks/gpu_minatar.sh [--game breakout] [--seeds 16] [--minutes 7.5]
# Dependencies: see benchmarks/setup_env.sh (carried wheels in .whl/ when the machine lacks them).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/setup_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"
"$PYTHON" benchmarks/gpu_minatar.py "$@"
