"""docs/KUBERNETES.md stays true: the files it names exist, its `-l` selectors select what the overlays label,
and every `potstill` command and option it uses exists.

    .venv/bin/pytest tests/unit/cluster/test_kubernetes_doc.py -q
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer.main

from potstill.cli import app
from potstill.cluster.kuberay_manifests import template

REPO = Path(__file__).resolve().parents[3]
DOC = (REPO / "docs" / "KUBERNETES.md").read_text()


def _commands() -> list[list[str]]:
    """Every `potstill ...` line of the doc's code blocks, continuation lines joined, split like a shell."""
    blocks = [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", DOC, re.S) if lang in ("", "bash")]
    text = "\n".join(blocks).replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        for part in re.split(r"\|\s*|&&|--\s(?=potstill)", line):
            part = part.split("#")[0].strip()
            if part.startswith("potstill "):
                found.append(shlex.split(part.replace("$(", "").replace(")", "")))
    return found


def test_paths_named_in_the_doc_exist():
    paths = set(re.findall(r"\b((?:k8s|examples|docs|cluster)/[\w./-]+\w)", DOC))
    assert paths, "the doc names files"
    missing = sorted(p for p in paths if not (REPO / p).exists() and not (REPO / p.rstrip("/")).exists())
    assert missing == []


def test_selectors_select_the_labelled_resources():
    for flavor in ("cpu", "gpu"):
        components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in template(flavor)}
        assert None not in components, f"{flavor}: every resource has a component label, so `-l` selects it"
        assert {"generate", "train", "cluster", "config"} <= components
    for selected in re.findall(r"app\.kubernetes\.io/component=(\w+)", DOC):
        assert selected in ("generate", "train")


def test_every_potstill_command_and_option_in_the_doc_exists():
    root = typer.main.get_command(app)
    commands = _commands()
    assert {c[1] for c in commands} >= {"submit", "logs", "stop", "inspect", "scale", "status"}
    for argv in commands:
        name = argv[1]
        command = root.commands[name]
        known = {o for p in command.params for o in getattr(p, "opts", [])}
        used = {a.split("=")[0] for a in argv[2:] if a.startswith("--")}
        assert used <= known, f"`{' '.join(argv)}`: {sorted(used - known)} are not options of potstill {name}"
