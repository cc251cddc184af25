"""Shared test fixtures: float64 on demand, hypothesis profile."""

from __future__ import annotations

import os

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


@pytest.fixture
def x64():
    """Run the test in float64 (the tabular solvers' precision)."""
    with jax.enable_x64(True):
        yield
