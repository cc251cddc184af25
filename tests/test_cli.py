"""The mdvi-lab command line: outputs of `tabular`, clear errors, the demo registry."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import cli, registry


def test_tabular_command_writes_csv_json_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        [
            "tabular", "--env", "chain", "--num-states", "8", "--iterations", "12",
            "--samples-per-pair", "2", "8", "--seeds", "6", "--chunk", "5",
            "--out", str(out), "--no-progress",
        ]
    )
    assert code == 0
    for name in ("metrics.csv", "config.json", "manifest.json", "summary.json", "gap.png"):
        assert (out / name).exists(), name
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {"variant", "seed", "step", "metric", "value"}
    # exact: 12 rows; each sampled M: 6 seeds x 12 iterations
    assert len(rows) == 12 + 2 * 6 * 12
    summary = json.loads((out / "summary.json").read_text())
    calls = {v["variant"]: v["calls_per_run"] for v in summary["variants"]}
    assert calls["M=8"] == 12 * 8 * 2 * 8  # K * S * A * M
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["packages"]["jax"] and "commit" in manifest["git"]
    assert json.loads((out / "config.json").read_text())["num_states"] == 8
    assert "gap" in capsys.readouterr().out


def test_bad_discount_is_reported_not_traced(tmp_path, capsys):
    code = cli.main(["tabular", "--discount", "1.0", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "discount must lie in [0, 1)" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert cli.main(["tabularr"]) == 2
    assert "unknown command 'tabularr'" in capsys.readouterr().err


def test_parser_errors_are_one_line(capsys):
    assert cli.main(["tabular", "--env", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice 'nowhere'" in err and len(err.splitlines()) == 1
    # a nested config's own validation (raised while tyro builds it) is folded to one line too
    assert cli.main(["lm-irl", "--lm.steps", "-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "steps must be a positive integer" in err and len(err.splitlines()) == 1


def test_every_command_and_demo_section_resolves():
    from experiments.registry import COMMANDS

    for command in COMMANDS:
        config_cls, run = command.load()
        assert callable(run) and isinstance(config_cls, type), command.name
        if command.demo_section:
            assert callable(command.load_demo_section()), command.name


def test_an_existing_run_is_refused_without_overwrite(tmp_path, capsys):
    args = ["tabular", "--env", "chain", "--num-states", "5", "--iterations", "3", "--samples-per-pair", "2",
            "--seeds", "2", "--chunk", "3", "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(args) == 0
    before = (tmp_path / "run" / "metrics.csv").read_bytes()
    capsys.readouterr()
    assert cli.main([*args[:-3], "--env", "gridworld", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == before
    assert cli.main([*args, "--overwrite"]) == 0


def test_an_unusable_output_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "below"):
        code = cli.main(["tabular", "--iterations", "2", "--seeds", "2", "--out", str(out), "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert "file" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "settings",
    [["--num-states", "30000", "--num-actions", "4"], ["--seeds", "100000000"]],
    ids=["30000 states", "1e8 seeds"],
)
def test_an_oversized_tabular_run_is_refused_up_front(tmp_path, capsys, settings):
    out = tmp_path / "big"
    code = cli.main(["tabular", *settings, "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "of memory" in err and "GiB" in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before anything was built or written


def test_check_memory_compares_the_estimate_with_what_is_available():
    from experiments.resources import check_memory, format_bytes

    check_memory(7 * 1024**3, "a run", available=10 * 1024**3)  # 7 GiB of the 8 GiB allowed
    with pytest.raises(ValueError, match=r"a run needs about 9\.0 GiB of memory"):
        check_memory(9 * 1024**3, "a run", available=10 * 1024**3)
    assert format_bytes(1536) == "1.5 KiB"


def test_tabular_with_no_states_names_the_states(tmp_path, capsys):
    code = cli.main(["tabular", "--env", "chain", "--num-states", "0", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "at least one state" in capsys.readouterr().err


def test_demo_tour_skips_out_of_tour_sections_unless_named(tmp_path, monkeypatch):
    """The default tour runs in-tour sections only; --only and --extended reach the others."""
    from experiments import demo
    from experiments.demo import DemoConfig, DemoSection

    ran = []

    def fake(name):
        def section(out):
            ran.append(name)
            return DemoSection(title=name, text="", figures=[], files=[])

        return section

    commands = (
        registry.Command("a", "m", "C", "run", "in the tour"),
        registry.Command("b", "m", "C", "run", "out of the tour", in_tour=False),
    )
    monkeypatch.setattr(registry, "COMMANDS", commands)
    monkeypatch.setattr(registry.Command, "load_demo_section", lambda self: fake(self.name))
    demo.run(DemoConfig(out=tmp_path / "tour"))
    assert ran == ["a"]
    demo.run(DemoConfig(out=tmp_path / "only", only=("b",)))
    assert ran == ["a", "b"]
    demo.run(DemoConfig(out=tmp_path / "extended", extended=True))
    assert ran == ["a", "b", "a", "b"]
