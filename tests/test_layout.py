"""The package layout's dependency rule, checked on the source: no upward imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# package -> packages it must not import
FORBIDDEN = {
    "mdvi": {"agents", "experiments"},
    "theory": {"mdvi", "agents", "experiments"},
    "envs": {"mdvi", "agents", "experiments"},
    "agents": {"experiments"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_dependencies_flow_one_way():
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _imported_top_levels(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_no_absolute_machine_paths_in_code():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "results" in path.parts:
            continue
        text = path.read_text()
        # spelled in pieces so that this file does not contain the markers it looks for
        for marker in ("/" + name + "/" for name in ("work", "root", "home")):
            if marker in text:
                offenders.append(f"{path.relative_to(ROOT)}: {marker}")
    assert not offenders, offenders
