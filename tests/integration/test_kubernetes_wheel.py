"""The images install potstill from its wheel, not the source tree: build the wheel the way the Dockerfiles'
wheel stage does (from only the files that stage copies), install it on its own (as the image's `pip install --no-deps potstill-*.whl`), and run
the installed `potstill` entry point the RayJobs call; `--render-k8s` works from the wheel alone (its
templates are package data) and prints what the source checkout prints.

    .venv/bin/pytest tests/integration/test_kubernetes_wheel.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "k8s" / "overlays" / "cpu" / "configs" / "generate.yaml"


def wheel_stage_sources() -> list[str]:
    """What the Dockerfile's wheel stage copies into its build folder (`COPY SRC DEST` lines before the second FROM)."""
    lines = (REPO / "k8s" / "images" / "Dockerfile.cpu").read_text().split("\nFROM ")[1].splitlines()
    return [src for line in lines if line.startswith("COPY ") for src in line.split()[1:-1]]


def test_wheel_installs_and_its_entry_point_renders_the_rayjob(tmp_path):
    src, dist, target = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    src.mkdir()
    for name in wheel_stage_sources():
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                            str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("potstill-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("potstill/cluster/k8s_templates/cpu.yaml", "potstill/cluster/k8s_templates/gpu.yaml",
                   "potstill/cluster/kuberay_manifests.py", "potstill/cluster/job_submission.py",
                   "potstill/cli/submit.py", "potstill/cli/logs.py", "potstill/cli/stop.py",
                   "potstill/assets/arithmetic-teacher/model.safetensors"):
        assert needed in names, f"{needed} is not in the wheel"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    # Only the wheel's potstill: PYTHONPATH goes before the checkout's editable finder; cwd is not the checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import potstill, potstill.cluster.kuberay_manifests as m; "
                            "print(potstill.__file__); print(m.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout

    entry = target / "bin" / "potstill"
    assert entry.is_file(), "the wheel's console script (the RayJob entrypoint `potstill ...`)"
    rendered = subprocess.run([sys.executable, str(entry), "submit", str(CONFIG), "--render-k8s", "--flavor", "cpu"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    source = subprocess.run([sys.executable, "-m", "potstill.cli", "submit", str(CONFIG), "--render-k8s", "--flavor", "cpu"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert source.returncode == 0, source.stderr
    assert rendered.stdout == source.stdout and "kind: RayJob" in rendered.stdout
    version = subprocess.run([sys.executable, str(entry), "version"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == "0.1.0"
