"""The wheel a container image installs: every module and asset is in it, and it runs from outside the checkout.

    .venv/bin/pytest tests/unit/test_packaging.py -q

`pip wheel --no-deps .` builds from a copy of the checkout's files (so a stale
`build/` folder cannot hide a module the package list misses). The first test
reads the folder-to-package map from `pyproject.toml` and asserts every file
under each mapped folder (modules, `potstill/assets/`, shipped configs, any
template a package reads at run time) is in the wheel. The second installs the wheel, non-editable,
into a scratch virtual environment whose only link to the test environment is a
`.pth` line naming its site-packages (for the dependencies: torch, vLLM, Ray;
`.pth` files inside that folder, the editable install's finder among them, are
not processed), and runs `potstill --help` and `potstill teacher demo --n 20`
from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
# What setuptools reads besides the package folders.
BUILD_FILES = ("pyproject.toml", "README.md")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")


def mapped_folders() -> dict[str, Path]:
    """Top-level package name -> its folder in the checkout (`package-dir` of pyproject.toml)."""
    return {package: REPO / folder for package, folder in SETUPTOOLS["package-dir"].items()}


def expected_files() -> set[str]:
    """Wheel paths of every file under the mapped folders: modules, the shipped model, configs and templates."""
    expected: set[str] = set()
    for package, folder in mapped_folders().items():
        for path in folder.rglob("*"):
            rel = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                expected.add("/".join(package.split(".") + list(rel.parts)))
    return expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel --no-deps .` builds from a fresh copy of the checkout's package folders."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    for folder in sorted({str(f.relative_to(REPO)) for f in mapped_folders().values()}):
        shutil.copytree(REPO / folder, src / folder, ignore=SKIP, symlinks=False)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(out), "."],
        cwd=src, check=True, capture_output=True, text=True,
    )
    (built,) = out.glob("potstill-*.whl")
    return built


def test_the_wheel_holds_every_module_and_asset(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    expected = expected_files()
    assert {"potstill/assets/arithmetic-teacher/model.safetensors", "potstill/configs/arithmetic.yaml",
            "potstill/pipelines/jobs/evaluate.py", "potstill/schemas/trace.py"} <= expected
    missing = sorted(expected - names)
    assert missing == [], (f"{len(missing)} files are not in the wheel (add their package to [tool.setuptools] packages "
                           f"or their pattern to [tool.setuptools.package-data] in pyproject.toml): {missing[:20]}")
    assert "potstill = potstill.cli:main" in entry_points
    # Nothing outside the namespace: a generic top-level `schemas` or `pipelines` would clash in site-packages.
    assert {n.split("/")[0] for n in names if not n.startswith("potstill-")} == {"potstill"}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    packages = set(SETUPTOOLS["packages"])
    folders = mapped_folders()
    listed = set()
    for package, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            listed.add(".".join([package, *rel.parts]) if rel.parts else package)
    # Every folder holding an __init__.py is a package pyproject.toml lists (what the wheel test relies on).
    assert sorted(listed - packages) == []


def _scratch_env(tmp: Path, wheel: Path) -> Path:
    """A virtual environment with the wheel installed (not editable) and the test environment's site-packages
    on its path for the dependencies; returns its bin folder."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "-q", str(wheel)], check=True, capture_output=True, text=True)
    scratch_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(scratch_site) / "potstill_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv / "bin"


@pytest.mark.slow
def test_the_installed_wheel_runs_the_teacher_demo_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    bin_dir = _scratch_env(tmp_path, wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # where a command without an output folder keeps its log

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import potstill.cli, potstill.pipelines.jobs.teacher_demo as t, "
         "potstill.configs as c; print(t.__file__); print(c.GENERATION_DEMO.is_file() and c.TRAINING_DEMO.is_file())"],
        cwd=work, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert Path(where[0]).is_relative_to(tmp_path / "venv") and not Path(where[0]).is_relative_to(REPO), where
    assert where[1] == "True"

    helped = subprocess.run([str(bin_dir / "potstill"), "--help"], cwd=work, env=env, capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    for command in ("generate", "train", "demo", "eval", "teacher", "export"):
        assert command in helped.stdout

    demo = subprocess.run([str(bin_dir / "potstill"), "teacher", "demo", "--n", "20", "--json"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-4000:]
    result = json.loads(demo.stdout)
    assert result["n"] == 20 and result["model"] == "potstill:arithmetic-teacher"
    assert result["correct"] >= 15, result  # the shipped teacher answers most fresh problems
    # vLLM's start-up went to the command's log file; the terminal shows its path and potstill's own lines only.
    log = Path(re.search(r"log: (\S+\.log)", demo.stderr).group(1))
    assert log.is_relative_to(tmp_path / "cache") and "vllm" in log.read_text()
    assert not re.search(r"\b(DEBUG|INFO|WARNING)\b", demo.stderr), demo.stderr[-3000:]
