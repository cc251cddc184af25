"""Shared test fixtures: float64 on demand, hypothesis profile."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "lab",
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("lab")

# A persistent compilation cache shared by the test processes (and subprocesses they start):
# many tests compile the same training programs, which dominates their run time on a CPU.
_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def x64():
    """Run the test in float64 (the tabular solvers' precision)."""
    with jax.enable_x64(True):
        yield
