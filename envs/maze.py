"""The pitfall maze of Kitamura et al. (2023, arXiv 2305.13185, Section 7.2.1), as a tabular MDP.

A ``size x size`` grid (the paper: 25 x 25) with random absorbing pitfalls that pay nothing,
the start in the top-left corner and the goal in the bottom-right corner. The goal pays 1 per
step spent in it (every action) and is not absorbing. Five actions: noop, up, down, left,
right. Slip rule (the paper's released maze code): from a cell that is neither a pitfall nor a
wall, *each* feasible move (noop included; a move is feasible when it stays on the grid and
does not enter a wall) gets probability ``slip``, and the rest, ``1 - slip * #feasible``, goes
to the chosen move; a chosen move that is blocked leaves the agent in place. Pitfalls (and
walls, which are unreachable) are absorbing. The agent observes a fixed ``feature_dim``-
dimensional standard Gaussian vector per state.

Because the model is a :class:`~envs.tabular.TabularMDP`, ``V*``, ``Q*``, ``q^pi`` and
``Var_P V*`` are all exact.

Deviation from the released generator: there, the pitfall cells are drawn *with* replacement
(so a maze may have fewer than 8); here they are distinct. Like there, the start's and the
goal's neighbours are kept free so that the goal stays reachable.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.tabular import TabularMDP

EMPTY, WALL, PITFALL, START, GOAL = range(5)
TILE_CHARS = {".": EMPTY, "#": WALL, "D": PITFALL, "S": START, "G": GOAL}

NOOP, UP, DOWN, LEFT, RIGHT = range(5)
ACTION_NAMES = ("noop", "up", "down", "left", "right")
MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (d_row, d_col) of each action


def state_index(row: int, col: int, size: int) -> int:
    """Row-major state index of cell ``(row, col)``."""
    return row * size + col


def layout_from_string(text: str) -> np.ndarray:
    """A square layout from rows of ``.`` (empty), ``#`` (wall), ``D`` (pitfall), ``S``, ``G``.

    Rows are separated by newlines or ``/``; exactly one ``G`` is required.
    """
    rows = [row.strip() for row in text.replace("/", "\n").strip().splitlines() if row.strip()]
    size = len(rows)
    if size < 2 or any(len(row) != size for row in rows):
        raise ValueError(f"layout must be a square of side >= 2, got row lengths {[len(r) for r in rows]}")
    unknown = sorted({c for row in rows for c in row} - set(TILE_CHARS))
    if unknown:
        raise ValueError(f"layout has unknown tile characters {unknown}; use {''.join(TILE_CHARS)}")
    layout = np.array([[TILE_CHARS[c] for c in row] for row in rows], dtype=np.int8)
    if (layout == GOAL).sum() != 1:
        raise ValueError(f"layout needs exactly one goal G, got {(layout == GOAL).sum()}")
    return layout


def pitfall_layout(size: int, num_pitfalls: int, seed: int) -> np.ndarray:
    """The paper's random maze: start (0, 0), goal (size-1, size-1), ``num_pitfalls`` distinct pitfalls.

    Pitfalls avoid the start, the goal and their neighbours.
    """
    if size < 3:
        raise ValueError(f"size must be >= 3, got {size}")
    layout = np.full((size, size), EMPTY, dtype=np.int8)
    layout[0, 0] = START
    layout[-1, -1] = GOAL
    reserved = np.zeros((size, size), bool)
    reserved[:2, :2] = True
    reserved[-2:, -2:] = True
    free = np.flatnonzero(~reserved)
    if not 0 <= num_pitfalls <= free.size:
        raise ValueError(f"num_pitfalls must lie in [0, {free.size}] for size {size}, got {num_pitfalls}")
    chosen = np.random.default_rng(seed).choice(free, size=num_pitfalls, replace=False)
    layout.flat[chosen] = PITFALL
    return layout


def maze_transitions(layout: np.ndarray, slip: float) -> np.ndarray:
    """``P[S, 5, S]`` of the slip rule in the module docstring."""
    layout = np.asarray(layout)
    size = layout.shape[0]
    if layout.shape != (size, size):
        raise ValueError(f"layout must be square, got shape {layout.shape}")
    if not 0.0 <= slip <= 1.0 / len(MOVES):
        raise ValueError(f"slip must lie in [0, {1 / len(MOVES)}] (5 moves share it), got {slip}")
    S = size * size
    P = np.zeros((S, len(MOVES), S))
    for row in range(size):
        for col in range(size):
            s = state_index(row, col, size)
            if layout[row, col] in (PITFALL, WALL):
                P[s, :, s] = 1.0
                continue
            targets = []  # where each move leads (s itself if blocked), and whether it is feasible
            for d_row, d_col in MOVES:
                r, c = row + d_row, col + d_col
                feasible = 0 <= r < size and 0 <= c < size and layout[r, c] != WALL
                targets.append((state_index(r, c, size) if feasible else s, feasible))
            feasible_count = sum(feasible for _, feasible in targets)
            for a in range(len(MOVES)):
                for target, feasible in targets:
                    if feasible:
                        P[s, a, target] += slip
                P[s, a, targets[a][0]] += 1.0 - slip * feasible_count
    return P


def random_features(num_states: int, dim: int, seed: int) -> np.ndarray:
    """The fixed observation: one standard Gaussian ``dim``-vector per state (float32)."""
    if dim < 1:
        raise ValueError(f"feature_dim must be >= 1, got {dim}")
    return np.random.default_rng(seed).standard_normal((num_states, dim)).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Maze:
    """A maze: its ``layout`` (tile codes), exact ``mdp`` and observation ``features[S, d]``."""

    layout: np.ndarray
    mdp: TabularMDP
    features: np.ndarray

    @property
    def size(self) -> int:
        return self.layout.shape[0]

    @property
    def start(self) -> int:
        return int(self.mdp.initial.argmax())

    @property
    def goal(self) -> int:
        return int(np.flatnonzero(self.layout.ravel() == GOAL)[0])


def maze_from_layout(
    layout: np.ndarray,
    slip: float = 0.1,
    discount: float = 0.995,
    feature_dim: int = 5,
    feature_seed: int = 0,
    name: str = "maze",
) -> Maze:
    """The MDP of a layout: reward 1 in the goal (any action), start distribution on ``S`` (else (0, 0))."""
    layout = np.asarray(layout, dtype=np.int8)
    size = layout.shape[0]
    S = size * size
    rewards = np.zeros((S, len(MOVES)))
    rewards[(layout.ravel() == GOAL)] = 1.0
    initial = (layout.ravel() == START).astype(np.float64)
    if initial.sum() == 0:
        initial[0] = 1.0
    mdp = TabularMDP(maze_transitions(layout, slip), rewards, discount, initial / initial.sum(), name=name)
    layout.setflags(write=False)
    return Maze(layout=layout, mdp=mdp, features=random_features(S, feature_dim, feature_seed))


def make_maze(
    size: int = 25,
    num_pitfalls: int = 8,
    slip: float = 0.1,
    discount: float = 0.995,
    feature_dim: int = 5,
    seed: int = 0,
    feature_seed: int = 0,
) -> Maze:
    """The paper's random pitfall maze number ``seed`` (features from ``feature_seed``, shared by default)."""
    return maze_from_layout(
        pitfall_layout(size, num_pitfalls, seed), slip, discount, feature_dim, feature_seed,
        name=f"maze-{size}x{size}-p{num_pitfalls}-s{seed}",
    )
