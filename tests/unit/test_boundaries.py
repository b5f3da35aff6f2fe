"""The import boundaries of DESIGN.md, read from the source (AST), so no heavy library has to be installed.

- Ray is imported only in `pipelines/jobs/`, `actors/` and `cluster/`: every other
  module under `pipelines/` runs (and is unit-tested) without a cluster.
- `schemas/` imports none of ray, vllm or torch.
- A step room of `pipelines/` never imports an actor, the cluster layer or the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"
UPWARD = ("potstill.actors", "potstill.cluster", "potstill.cli")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offenders(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    found = []
    for path in files:
        hits = sorted(m for m in imported_modules(path) if any(m == b or m.startswith(b + ".") for b in banned))
        if hits:
            found.append(f"{path.relative_to(REPO)} imports {', '.join(hits)}")
    return found


def step_room_modules() -> list[Path]:
    return sorted(p for p in PIPELINES.rglob("*.py") if "jobs" not in p.relative_to(PIPELINES).parts)


def test_only_jobs_import_ray_under_pipelines():
    assert offenders(step_room_modules(), ("ray",)) == []


def test_schemas_import_no_heavy_library():
    assert offenders(sorted((REPO / "schemas").rglob("*.py")), ("ray", "vllm", "torch")) == []


def test_step_rooms_never_import_upward():
    assert offenders(step_room_modules(), UPWARD) == []


@pytest.mark.parametrize("source, banned, caught", [
    ("def f():\n    import ray\n", ("ray",), True),
    ("from ray.util import placement_group\n", ("ray",), True),
    ("import rayon\n", ("ray",), False),
    ("from potstill.actors.replica_actor import TeacherReplica\n", UPWARD, True),
])
def test_the_check_sees_function_level_and_from_imports(tmp_path, source, banned, caught):
    module = tmp_path / "module.py"
    module.write_text(source)
    found = [m for m in imported_modules(module) if any(m == b or m.startswith(b + ".") for b in banned)]
    assert bool(found) is caught
