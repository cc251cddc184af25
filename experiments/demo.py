"""``mdvi-lab demo``: a tour with one short run per capability, ending in ``REPORT.md``.

Each command of :mod:`experiments.registry` with a ``demo_section`` adds one section
(``section(out: Path) -> DemoSection``); the tour runs them in order on embedded defaults (no server, no download)
and links every figure and table they made from ``results/demo/REPORT.md``.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path

from experiments import registry
from experiments.results import manifest, write_json, write_text_atomic


@dataclasses.dataclass
class DemoSection:
    title: str
    text: str
    figures: list[Path] = dataclasses.field(default_factory=list)
    files: list[Path] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The lab's tour: one short run per capability, then ``REPORT.md``."""

    out: Path = Path("results/demo")
    """Output folder of the tour."""
    only: tuple[str, ...] = ()
    """Run only the sections of these commands (e.g. ``--only tabular lm-irl``), in the tour or not."""
    extended: bool = False
    """Also run the sections kept out of the default tour (too slow for its 10-minute budget)."""


def run(config: DemoConfig) -> Path:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# mdvi-lab demo report", ""]
    timings = []
    failures = []
    started = time.perf_counter()
    sections = registry.demo_commands()
    unknown = sorted(set(config.only) - {command.name for command in sections})
    if unknown:
        raise ValueError(f"--only: no demo section named {', '.join(unknown)}; known: {', '.join(c.name for c in sections)}")
    for command in sections:
        if config.only and command.name not in config.only:
            continue
        if not (config.only or config.extended or command.in_tour):
            continue
        print(f"== demo: {command.name}", flush=True)
        t0 = time.perf_counter()
        try:
            section = command.load_demo_section()(out)
        except Exception:  # noqa: BLE001 - report, keep touring, fail at the end
            failures.append(command.name)
            lines += [f"## {command.name}: FAILED", "", "```", traceback.format_exc(), "```", ""]
            traceback.print_exc()
            continue
        seconds = time.perf_counter() - t0
        timings.append({"section": section.title, "seconds": round(seconds, 1)})
        lines += [f"## {section.title}", "", f"_{seconds:.0f} s_", "", section.text, ""]
        for figure in section.figures:
            rel = Path(figure).resolve().relative_to(out.resolve())
            lines += [f"![{rel}]({rel})", ""]
        if section.files:
            links = ", ".join(f"[{Path(f).name}]({Path(f).resolve().relative_to(out.resolve())})" for f in section.files)
            lines += [f"Data: {links}", ""]
    total = time.perf_counter() - started
    lines += ["## Timing", ""] + [f"- {t['section']}: {t['seconds']} s" for t in timings]
    lines += [f"- total: {total:.0f} s", ""]
    report = out / "REPORT.md"
    write_text_atomic(report, "\n".join(lines))
    write_json(out / "manifest.json", manifest())
    print(f"demo report: {report} ({total:.0f} s)")
    if failures:
        raise SystemExit(f"demo sections failed: {', '.join(failures)}")
    return report
