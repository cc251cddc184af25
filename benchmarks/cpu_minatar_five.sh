#!/usr/bin/env bash
# The reduced five-game reproduction for a CPU-only machine (2 cores, at most about two hours):
# the four agents on all five games, paper protocol, 2 vmapped seeds and 200k environment steps
# per seed (the paper: 5 seeds, 10M steps), evaluation every 20k steps over 8 greedy episodes,
# epsilon decaying over the first 10% of the 200k steps. Resumable: rerun the same command.
# Run it in the background:  nohup benchmarks/cpu_minatar_five.sh > cpu_minatar_five.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
"$PYTHON" benchmarks/minatar_five.py --out results/minatar-cpu --seeds 2 --steps 200000 \
    --eval-every 20000 --eval-episodes 8 "$@"
