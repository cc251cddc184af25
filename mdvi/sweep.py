"""Hyperparameter sweeps as one compiled program: a grid of values, vmapped.

Every experiment's grid goes through these two helpers: :func:`grid` lays a Cartesian product
of named values flat (one leading axis, so a single ``vmap`` covers it and a traced
hyperparameter never triggers a recompile), and :func:`nested_vmap` stacks ``vmap`` levels
(e.g. grid points outside, seeds inside) from a list of ``in_axes``, outermost first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Grid(NamedTuple):
    """A flattened Cartesian product: ``values[name][i]`` is point ``i``'s value of ``name``."""

    names: tuple[str, ...]
    values: dict  # name -> [num_points] array
    shape: tuple[int, ...]  # the grid's shape, one axis per name, in order
    points: tuple[dict, ...]  # point i as {name: python value}

    @property
    def size(self) -> int:
        return len(self.points)

    def unflatten(self, array):
        """Reshape a leading ``[num_points]`` axis back to the grid's shape."""
        return jax.tree.map(lambda x: x.reshape(self.shape + x.shape[1:]), array)


def grid(dtypes: dict | None = None, **axes: Sequence) -> Grid:
    """The Cartesian product of ``axes`` (``name=values``), first name outermost.

    ``dtypes`` maps a name to the dtype of its array (default: float32 for floats, int32 for
    integers, as JAX would choose without x64).
    """
    if not axes:
        raise ValueError("grid needs at least one axis")
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"grid axis {name!r} is empty")
    names = tuple(axes)
    points = tuple(dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names)))
    dtypes = dtypes or {}
    values = {}
    for name in names:
        column = np.asarray([p[name] for p in points])
        values[name] = jnp.asarray(column, dtype=dtypes.get(name))
    return Grid(names, values, tuple(len(axes[n]) for n in names), points)


def nested_vmap(fn: Callable, *in_axes_levels) -> Callable:
    """``vmap`` of ``vmap`` of ... ``fn``; ``in_axes_levels[0]`` is the outermost level's ``in_axes``."""
    if not in_axes_levels:
        raise ValueError("nested_vmap needs at least one level of in_axes")
    for in_axes in reversed(in_axes_levels):
        fn = jax.vmap(fn, in_axes=in_axes)
    return fn
