"""`potstill.schemas` and `potstill.pipelines` import without vllm, torch or ray."""

import subprocess
import sys

HEAVY = ("vllm", "torch", "ray")

SCRIPT = """
import importlib, pkgutil, sys
import potstill, potstill.schemas, potstill.pipelines
for pkg in (potstill.schemas, potstill.pipelines):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print(",".join(loaded))
"""


def test_schemas_and_pipelines_do_not_import_heavy_libraries():
    out = subprocess.run([sys.executable, "-c", SCRIPT % (HEAVY,)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing potstill.schemas/pipelines loaded: {out.stdout.strip()}"


def test_cli_help_is_light():
    code = "import sys; from potstill.cli import app; print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))"
    out = subprocess.run([sys.executable, "-c", code % (HEAVY,)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
