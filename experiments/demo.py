"""``mdvi-lab demo``: a tour with one short run per capability, ending in ``REPORT.md``.

Each capability registers a section function ``section(out: Path) -> DemoSection`` in
:data:`SECTIONS`; the tour runs them in order on embedded defaults (no server, no download)
and links every figure and table they made from ``results/demo/REPORT.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import traceback
from pathlib import Path

from experiments.results import manifest, write_json


@dataclasses.dataclass
class DemoSection:
    title: str
    text: str
    figures: list[Path] = dataclasses.field(default_factory=list)
    files: list[Path] = dataclasses.field(default_factory=list)


# (module, function) pairs, run in this order. Imported lazily so one capability's heavy
# imports do not slow the others.
SECTIONS: list[tuple[str, str]] = [
    ("experiments.tabular", "demo_section"),
    ("experiments.sample_complexity", "demo_section"),
    ("experiments.minatar", "demo_section"),
    ("experiments.lm_irl", "demo_section"),
]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The lab's tour: one short run per capability, then ``REPORT.md``."""

    out: Path = Path("results/demo")
    """Output folder of the tour."""
    only: tuple[str, ...] = ()
    """Run only the sections whose module name contains one of these strings."""


def run(config: DemoConfig) -> Path:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# mdvi-lab demo report", ""]
    timings = []
    failures = []
    started = time.perf_counter()
    for module_name, function_name in SECTIONS:
        if config.only and not any(tag in module_name for tag in config.only):
            continue
        print(f"== demo: {module_name}.{function_name}", flush=True)
        t0 = time.perf_counter()
        try:
            section = getattr(importlib.import_module(module_name), function_name)(out)
        except Exception:  # noqa: BLE001 - report, keep touring, fail at the end
            failures.append(module_name)
            lines += [f"## {module_name}: FAILED", "", "```", traceback.format_exc(), "```", ""]
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
    report.write_text("\n".join(lines))
    write_json(out / "manifest.json", manifest())
    print(f"demo report: {report} ({total:.0f} s)")
    if failures:
        raise SystemExit(f"demo sections failed: {', '.join(failures)}")
    return report
