# Sourced by the GPU scripts (run from the repository root): makes the lab importable on a
# machine whose Python lacks its pure-Python dependencies, from carried wheels in .whl/ (no
# network needed), and sets PYTHON, PYTHONPATH and PYTHONUNBUFFERED.
# Preparing .whl/ on a machine with network (Python 3.12 image):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     dm-haiku==0.0.17 jmp==0.0.4 rlax==0.1.9 distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 \
#     dm-tree==0.1.10 gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6 dm_env==1.6 \
#     tyro==1.0.16 docstring-parser==0.18.0 typeguard==4.6.1 gast==0.7.0 cloudpickle==3.1.3 \
#     decorator==5.3.1 tabulate==0.10.0
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import haiku, rlax, gymnax, tyro, orbax.checkpoint" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mdvi-site .whl/*.whl
        export PYTHONPATH=/tmp/mdvi-site:${PYTHONPATH:-}
    else
        echo "missing packages (haiku, rlax, gymnax, tyro) and no .whl/ folder to install them from" >&2
        exit 1
    fi
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
