"""Models shipped inside the package: resolve their names to folders and hash their contents.

`potstill:arithmetic-teacher` names the tiny teacher in `potstill/assets/`
(rebuilt by `python -m potstill.pipelines.arithmetic.teacher_build`); any other name
(a local path, a hub id) passes through unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import potstill
from potstill.schemas.generation import SHIPPED_TEACHER

SHIPPED_PREFIX = "potstill:"
ASSETS_DIR = Path(potstill.__file__).resolve().parent / "assets"
SHIPPED_MODELS = {SHIPPED_TEACHER: "arithmetic-teacher"}


def resolve_model(name: str) -> str:
    """The absolute folder of a shipped model (`potstill:...`), or `name` unchanged."""
    if not name.startswith(SHIPPED_PREFIX):
        return name
    if name not in SHIPPED_MODELS:
        raise ValueError(f"model {name!r} is not a shipped potstill model; use one of {sorted(SHIPPED_MODELS)} or a path")
    path = ASSETS_DIR / SHIPPED_MODELS[name]
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {name!r}: {path} has no config.json; rebuild it with "
            f"`python -m potstill.pipelines.arithmetic.teacher_build --out {path} --seed 0`"
        )
    return str(path)


def model_revision(path: str | Path) -> str:
    """A short, stable content hash of a model folder: sha256 over each file's relative path and bytes."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"model path {str(root)!r} is not a folder; pass a local model folder or set teacher.revision")
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        file_hash = hashlib.sha256()
        with open(file, "rb") as f:  # streamed: a teacher's safetensors shards are many GB each
            for block in iter(lambda: f.read(1 << 22), b""):
                file_hash.update(block)
        digest.update(file_hash.digest())
    return digest.hexdigest()[:12]


def teacher_revision(model: str, revision: str | None) -> str | None:
    """The revision recorded with traces: the configured one, else a content hash of a local folder."""
    if revision:
        return revision
    path = Path(resolve_model(model))
    return model_revision(path) if path.is_dir() else None
