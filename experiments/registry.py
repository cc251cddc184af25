"""The one registry of ``mdvi-lab`` commands: adding a command is one entry here.

Each :class:`Command` names its module, config dataclass and run function (imported lazily,
so one experiment's heavy imports never slow another's start), its one-line description for
``mdvi-lab --help``, and, if it has one, the function that makes its section of
``mdvi-lab demo`` (``section(out: Path) -> DemoSection``). The demo tours the sections in the
order of this list.
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    module: str
    config: str
    run: str
    description: str
    demo_section: str | None = "demo_section"
    in_tour: bool = True
    """Whether ``mdvi-lab demo`` runs the section by default; the others run with ``--only NAME``
    or ``--extended`` (sections too slow for the tour's 10-minute budget)."""

    def load(self):
        """``(config class, run function)``."""
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.run)

    def load_demo_section(self):
        return getattr(importlib.import_module(self.module), self.demo_section)


COMMANDS: tuple[Command, ...] = (
    Command("demo", "experiments.demo", "DemoConfig", "run",
            "A tour: one short run per capability, ending in results/demo/REPORT.md.", demo_section=None),
    Command("tabular", "experiments.tabular", "TabularConfig", "run",
            "Exact and sampled MDVI on a tabular MDP; gap per iteration, CSV/JSON/PNG."),
    Command("sample-complexity", "experiments.sample_complexity", "SampleComplexityConfig", "run",
            "N*(H) and N*(d) of tabular, LS-, VWLS- and oracle-weighted MDVI on a linear MDP; "
            "fitted exponents with bootstrap CIs vs theory."),
    Command("minatar", "experiments.minatar", "MinAtarConfig", "run",
            "DQN / M-DQN (+DVW) on a MinAtar game, vmapped seeds, checkpoint/resume."),
    Command("minatar-report", "experiments.minatar", "MinAtarReportConfig", "report",
            "Side-by-side learning curves of finished MinAtar runs.", demo_section=None),
    Command("maze", "experiments.maze", "MazeConfig", "run",
            "Deep MDVI on the DVW paper's pitfall maze: f = 1, f*, DVW x DQN / M-DQN, exact gaps and weight checks."),
    Command("lm-irl", "experiments.lm_irl", "LMIRLConfig", "run",
            "MLE vs IRL-SFT (TD-regularized MLE) on an exact oracle LM; quality vs diversity."),
    Command("fdiv", "experiments.fdiv", "FDivConfig", "run",
            "Cross-entropy vs Fenchel-Young f-losses (alpha = 1.5, chi2) on an exact oracle LM; oracle-impossible samples."),
    Command("warm", "experiments.warm", "WarmConfig", "run",
            "WARM vs prediction ensembles vs single reward models on noisy golden preferences; "
            "accuracy, memorisation, linear path, exact Best-of-N and RLOO over-optimisation.",
            in_tour=False),  # its section took 5-7 min under heavy load (mostly compilation): over the ~40 s of a tour section
    Command("entailment-rl", "experiments.entailment_rl", "EntailmentRLConfig", "run",
            "SFT on hallucinating references, then RLOO against a learned entailment classifier for a "
            "sweep of beta; exact golden consistency, informativeness, extractiveness and length.",
            in_tour=False),  # likewise
    Command("bond", "experiments.bond", "BondExperimentConfig", "run",
            "BOND / J-BOND (Best-of-N distillation) vs RLOO + KL with tabular policies over enumerated completions: "
            "exact KL to pi_BoN, effective N of iterated BOND vs n^M, golden reward against KL."),
            # its demo section (2 seeds, N = 4): 39 s in the tour on a clean clone
    Command("warp", "experiments.warp", "WarpConfig", "run",
            "WARP: RLOO with a fixed vs EMA anchor, SLERP vs LERP of task vectors, LITI eta sweep, two iterations; "
            "golden and proxy reward against exact KL to SFT."),
            # its demo section (2 seeds, one iteration): 42 s
    Command("gkd", "experiments.gkd", "GKDConfig", "run",
            "GKD distillation on an oracle LM: lambda (on-policy fraction) x token divergence; exact golden metric."),
    Command("teacher-hacking", "experiments.teacher_hacking", "TeacherHackingConfig", "run",
            "Teacher hacking: golden vs proxy KL along distillation, offline / more data / fresh / on-policy regimes."),
)

BY_NAME = {command.name: command for command in COMMANDS}


def demo_commands() -> tuple[Command, ...]:
    """Every command with a demo section, in the tour or not."""
    return tuple(command for command in COMMANDS if command.demo_section)
