"""Where a live run's cluster is, for `potstill status` / `potstill scale` in another terminal.

    address = resolve_address(run_id, None)     # --address, else RAY_ADDRESS, else what the run's driver recorded

A driver that starts its own local Ray (a laptop run without --address)
records that cluster's address under `~/.cache/potstill/live/<run_id>.json`
(`POTSTILL_STATE_DIR` overrides the folder) and removes it when it exits;
a record whose driver process is gone is ignored. Runs on a remote cluster
need no record: `--address` or RAY_ADDRESS names it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class NoClusterAddress(ValueError):
    """Nothing says which cluster runs the run."""


def state_dir() -> Path:
    return Path(os.environ.get("POTSTILL_STATE_DIR") or Path.home() / ".cache" / "potstill" / "live")


def record(run_id: str, address: str) -> Path:
    """Note that this process drives `run_id` on the local cluster at `address`."""
    path = state_dir() / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}))
    os.replace(tmp, path)
    return path


def forget(path: Path) -> None:
    """Remove this process's record (only if it is still ours)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def lookup(run_id: str) -> str | None:
    """The recorded local cluster of `run_id`, if its driver still runs."""
    try:
        data = json.loads((state_dir() / f"{run_id}.json").read_text())
        os.kill(int(data["pid"]), 0)
        return str(data["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_address(run_id: str, address: str | None) -> str:
    """The cluster to look for `run_id` on: `address`, RAY_ADDRESS, or the local record; else a clear error."""
    found = address or os.environ.get("RAY_ADDRESS") or lookup(run_id)
    if not found:
        raise NoClusterAddress(
            f"which Ray cluster runs {run_id!r}? Pass --address (e.g. the head's 10.0.0.5:6379, or `auto` on a "
            f"cluster node) or set RAY_ADDRESS; a run started on this machine without --address is found only while "
            f"its `potstill generate` is running (record in {state_dir()})")
    return found
