"""Up-front resource checks: refuse a run the machine cannot hold, before it starts.

An experiment estimates the bytes its largest arrays need (its own ``required_bytes``) and
calls :func:`check_memory`; a run that would not fit fails at once with a one-line
``ValueError`` (which the CLI prints as such) instead of an out-of-memory crash minutes in.
"""

from __future__ import annotations

import os

GIB = 1024**3

# Share of the available memory a run may plan to use: the estimates count the largest
# arrays only, and XLA keeps temporaries and copies beside them.
DEFAULT_FRACTION = 0.8


def available_bytes() -> int:
    """Memory available to a new allocation: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else the physical memory from ``sysconf``."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def format_bytes(count: float) -> str:
    """``count`` bytes in the largest unit that keeps the number >= 1 (B up to TiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def check_memory(required: int, what: str, *, available: int | None = None, fraction: float = DEFAULT_FRACTION) -> None:
    """Raise ``ValueError`` if ``required`` bytes exceed ``fraction`` of the available memory.

    Args:
      required: the run's estimate of its peak memory in bytes.
      what: names the run and the settings that drive the size (in the message).
      available: bytes available (default: :func:`available_bytes`).
      fraction: share of the available memory the run may use.
    """
    available = available_bytes() if available is None else available
    if required > fraction * available:
        raise ValueError(
            f"{what} needs about {format_bytes(required)} of memory, more than the "
            f"{format_bytes(fraction * available)} this machine can give it "
            f"({format_bytes(available)} available); choose smaller settings"
        )
