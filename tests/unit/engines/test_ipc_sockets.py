"""Sweeping vLLM's IPC socket files: a dead engine's go, a listening one's and a just-bound one's stay."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time

from potstill.pipelines.engines.ipc_sockets import sweep_stale_sockets, use_potstill_ipc_folder


def _bound(path: str, listen: bool) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    if listen:
        s.listen(1)
    return s


def _age(path: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_only_old_sockets_nobody_listens_on_are_removed(tmp_path):
    dead, live, fresh, plain = (str(tmp_path / n) for n in ("dead", "live", "fresh", "plain"))
    _bound(dead, listen=False).close()  # the file stays, as after a SIGKILL
    listener = _bound(live, listen=True)
    _bound(fresh, listen=False).close()
    open(plain, "w").close()
    for path in (dead, live, plain):
        _age(path, 600)
    try:
        assert sweep_stale_sockets(tmp_path) == 1
        assert sorted(os.listdir(tmp_path)) == ["fresh", "live", "plain"]
    finally:
        listener.close()


def test_vllm_is_pointed_at_the_folder_unless_the_user_chose_one_or_its_path_is_too_long(monkeypatch):
    short = tempfile.mkdtemp(prefix="ipc-", dir="/tmp")  # pytest's tmp_path can be too long for a socket path
    monkeypatch.setattr("tempfile.gettempdir", lambda: short)
    monkeypatch.setenv("VLLM_RPC_BASE_PATH", "")  # empty counts as unset; the test's end restores the real value
    try:
        folder = use_potstill_ipc_folder()
        assert folder is not None and str(folder.parent) == short and os.environ["VLLM_RPC_BASE_PATH"] == str(folder)
        assert (folder.stat().st_mode & 0o777) == 0o700
    finally:
        shutil.rmtree(short)
    monkeypatch.setenv("VLLM_RPC_BASE_PATH", "")
    monkeypatch.setattr("tempfile.gettempdir", lambda: "/tmp/" + "x" * 80)
    assert use_potstill_ipc_folder() is None, "a socket in the folder could not bind: vLLM's default stays"
    monkeypatch.setenv("VLLM_RPC_BASE_PATH", "/somewhere/else")
    assert use_potstill_ipc_folder() is None and os.environ["VLLM_RPC_BASE_PATH"] == "/somewhere/else"
