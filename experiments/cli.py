"""The ``mdvi-lab`` command line: one subcommand per experiment, typed by tyro.

Each entry maps a subcommand to ``(config dataclass, run function)``; ``--help`` on any
subcommand lists its options with their documentation.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, config class, run function); modules are imported lazily.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("experiments.demo", "DemoConfig", "run"),
    "tabular": ("experiments.tabular", "TabularConfig", "run"),
    "sample-complexity": ("experiments.sample_complexity", "SampleComplexityConfig", "run"),
    "minatar": ("experiments.minatar", "MinAtarConfig", "run"),
    "minatar-report": ("experiments.minatar", "MinAtarReportConfig", "report"),
    "lm-irl": ("experiments.lm_irl", "LMIRLConfig", "run"),
}

DESCRIPTIONS = {
    "demo": "A tour: one short run per capability, ending in results/demo/REPORT.md.",
    "tabular": "Exact and sampled MDVI on a tabular MDP; gap per iteration, CSV/JSON/PNG.",
    "sample-complexity": "N*(H) and N*(d) of tabular, LS-, VWLS- and oracle-weighted MDVI on a linear MDP; "
    "fitted exponents with bootstrap CIs vs theory.",
    "minatar": "DQN / M-DQN (+DVW) on a MinAtar game, vmapped seeds, checkpoint/resume.",
    "minatar-report": "Side-by-side learning curves of finished MinAtar runs.",
    "lm-irl": "MLE vs IRL-SFT (TD-regularized MLE) on an exact oracle LM; quality vs diversity.",
}


def main(argv: list[str] | None = None):
    import tyro

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mdvi-lab {" + ",".join(COMMANDS) + "} [options]\n")
        for name in COMMANDS:
            print(f"  {name:<20} {DESCRIPTIONS.get(name, '')}")
        print("\nRun `mdvi-lab <command> --help` for a command's options.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"mdvi-lab: unknown command {name!r}; known commands: {known}", file=sys.stderr)
        return 2
    module_name, config_name, run_name = COMMANDS[name]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    config = tyro.cli(config_cls, args=rest, prog=f"mdvi-lab {name}", description=DESCRIPTIONS.get(name))
    try:
        getattr(module, run_name)(config)
    except ValueError as error:
        print(f"mdvi-lab {name}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
