"""Where vLLM binds its ZeroMQ IPC sockets, and removing the ones dead engines left behind.

    use_potstill_ipc_folder()     # before an engine starts: vLLM's sockets go to one folder, stale ones are swept

vLLM's frontend and engine core talk over Unix sockets it creates as files in
`VLLM_RPC_BASE_PATH` (default: the root of the temp folder) and unlinks only
when the engine closes cleanly. A replica that is killed (a replacement, a
preempted node, a scale-down) never closes, so every engine that dies that way
leaves its socket files in /tmp. potstill points vLLM at a folder of its own
and, before each engine starts, removes the sockets there that no process
listens on any more. A `VLLM_RPC_BASE_PATH` the user set is left alone.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import time
from pathlib import Path

SOCKET_PATH_MAX = 107
"""The longest path a Unix socket can bind (`sun_path` less its terminating NUL); vLLM names its sockets by uuid4."""
UUID_NAME_LEN = 36
STALE_AFTER_S = 60.0
"""A socket file younger than this is never swept: another engine on this host may have bound it a moment ago and
not be listening yet."""


def potstill_ipc_folder() -> Path:
    """The per-user folder potstill's vLLM engines bind their sockets in."""
    return Path(tempfile.gettempdir()) / f"potstill-vllm-ipc-{os.getuid()}"


def use_potstill_ipc_folder() -> Path | None:
    """Point vLLM's IPC sockets at `potstill_ipc_folder()` and sweep it; returns the folder (None: the user set one,
    or the temp folder's path is so long that a socket inside ours could not bind)."""
    if os.environ.get("VLLM_RPC_BASE_PATH"):
        return None
    folder = potstill_ipc_folder()
    if len(str(folder)) + 1 + UUID_NAME_LEN > SOCKET_PATH_MAX:
        return None
    folder.mkdir(mode=0o700, exist_ok=True)
    sweep_stale_sockets(folder)
    os.environ["VLLM_RPC_BASE_PATH"] = str(folder)
    return folder


def sweep_stale_sockets(folder: Path, stale_after_s: float = STALE_AFTER_S) -> int:
    """Unlink the Unix socket files in `folder` older than `stale_after_s` that refuse a connection; returns how many."""
    removed = 0
    now = time.time()
    for entry in os.scandir(folder):
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(info.st_mode) or now - info.st_mtime < stale_after_s or is_listening(entry.path):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def is_listening(path: str) -> bool:
    """Whether a process accepts connections on the Unix socket at `path` (a dead one's file refuses them)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError as exc:
        return exc.errno != errno.ECONNREFUSED  # anything else (a full backlog, a timeout): leave it
    finally:
        probe.close()
