"""Models shipped inside the package: resolve their names to folders, hash their contents, pin a run's teacher.

    pinned = pin_teacher(cfg.teacher)                      # once per run (the controller), recorded in run.json
    check_teacher(cfg.teacher.model, pinned)               # each replica, before its engine loads: stat only

`potstill:arithmetic-teacher` names the tiny teacher in `potstill/assets/`
(rebuilt by `python -m potstill.pipelines.arithmetic.teacher_build`); any other name
(a local path, a hub id) passes through unchanged.

A run's teacher revision is computed in one place, once: the configured
`teacher.revision`, else a content hash of the local model folder (every
byte of every weight file). With it the run records each file's size and
mtime; a re-run or a replica compares the folder with that listing (stat
calls, no reads) and re-hashes only when nothing but mtimes differ (a copy of
the folder on another node). A folder whose files changed is refused, naming
the files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import potstill
from potstill.schemas.generation import SHIPPED_TEACHER, TeacherConfig
from potstill.schemas.manifest import TeacherRecord

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


class TeacherChangedError(RuntimeError):
    """The teacher model folder differs from the one the run pinned."""


def _model_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def folder_listing(path: str | Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file of a model folder, sorted: its cheap identity (stat only)."""
    root = Path(path)
    out = []
    for file in _model_files(root):
        st = os.stat(file)
        out.append((file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def model_revision(path: str | Path) -> str:
    """A short, stable content hash of a model folder: sha256 over each file's relative path and bytes."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"model path {str(root)!r} is not a folder; pass a local model folder or set teacher.revision")
    digest = hashlib.sha256()
    for file in _model_files(root):
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


def pin_teacher(teacher: TeacherConfig, known: TeacherRecord | None = None) -> TeacherRecord:
    """The run's teacher: configured revision or content hash, plus the folder listing replicas check by stat.

    `known` is what the run recorded before (a re-run): when the folder's
    listing is unchanged its revision is reused instead of re-hashing every
    weight file.
    """
    path = Path(resolve_model(teacher.model))
    if not path.is_dir():
        return TeacherRecord(model=teacher.model, revision=teacher.revision or None)
    listing = folder_listing(path)
    if teacher.revision:
        revision = teacher.revision
    elif known is not None and known.files is not None and [tuple(f) for f in known.files] == listing:
        revision = known.revision
    else:
        revision = model_revision(path)
    return TeacherRecord(model=teacher.model, revision=revision, files=listing)


def teacher_difference(before: TeacherRecord, now: TeacherRecord) -> str | None:
    """What changed between two pins of a teacher, in words (None: the same teacher).

    Files added, removed or resized count even under the same (configured)
    revision: the label stayed, the weights did not.
    """
    if before.model != now.model:
        return f"teacher.model was {before.model!r}, now {now.model!r}"
    changes = []
    if before.files is not None and now.files is not None:
        old = {f[0]: f[1] for f in before.files}
        new = {f[0]: f[1] for f in now.files}
        changes += [f"{n} removed" for n in sorted(old.keys() - new.keys())]
        changes += [f"{n} added" for n in sorted(new.keys() - old.keys())]
        changes += [f"{n} {old[n]} -> {new[n]} bytes" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    if before.revision == now.revision and not changes:
        return None
    if not changes and before.files is not None and now.files is not None:
        changes.append("same files and sizes, different bytes")
    shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
    return f"teacher revision was {before.revision!r}, now {now.revision!r}" + (f" ({shown})" if shown else "")


def check_teacher(teacher: TeacherConfig, pinned: TeacherRecord) -> None:
    """Raise TeacherChangedError unless this machine's copy of the teacher is the one the run pinned.

    By stat when the folder listing matches (no bytes read); when names and
    sizes match but mtimes differ (another node's copy), by content hash, or
    by the configured `teacher.revision`, which the user vouches for.
    """
    if pinned.files is None:
        return  # not a local folder when pinned (a hub id, or one only the replicas see): nothing to compare
    path = Path(resolve_model(teacher.model))
    if not path.is_dir():
        raise TeacherChangedError(f"teacher.model: {path} is not a folder on this node, but the run pinned a local "
                                  f"folder of {len(pinned.files)} files (revision {pinned.revision!r}); make the same "
                                  "model folder available at that path on every node")
    listing = folder_listing(path)
    pinned_files = [tuple(f) for f in pinned.files]
    if listing == pinned_files:
        return
    if [f[:2] for f in listing] == [f[:2] for f in pinned_files] and (
            teacher.revision or model_revision(path) == pinned.revision):
        return
    now = TeacherRecord(model=pinned.model, revision="(changed)", files=listing)
    raise TeacherChangedError(f"the teacher folder {path} changed since the run started: "
                              f"{teacher_difference(pinned, now)}. Restore the folder the run started with, or start "
                              "a new run (new --run-id and --out) for the new teacher")
