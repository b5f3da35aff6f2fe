"""What every long command shares around its work: a log file in the run's folder, a terminal that shows
only potstill's own output, and an orderly teardown.

    with command_session("generate", out=uri, json_out=json_out, verbose=verbose) as session:
        with session.phase("starting teacher", unit="prompts", done_label="generated") as phase:
            run_generation(cfg, on_progress=lambda p: phase.update(...))
        session.print(summary_line)

On entry the log file `<out>/logs/<command>-<UTC time>.log` is opened and its
path printed once (for an s3:// output the file is local, under
~/.cache/potstill/logs, and a copy goes to `<out>/logs/` at the end). Then:

- unless verbose, descriptors 1 and 2 are pointed at the log file (the
  terminal's stderr is kept for the console; `--json` keeps the real stdout
  for the summary), so everything below Python lands there too: vLLM's
  engine processes, Ray's own processes, C++ logs, interpreter shutdown;
- sys.stdout and sys.stderr become a `LogRouter`: every line (this process's
  log records, the Ray workers' output Ray forwards, tqdm, prints) goes into
  the file, redacted. A line that is one of potstill's own warnings or errors
  (a replica replaced, a memory claim that cannot be met) is shown on the
  terminal once, as `warning: ...`. With `--verbose`, or when
  POTSTILL_LOG_LEVEL is set, every line is shown, and the descriptors are
  left on the terminal;
- `configure_logging` routes potstill's, Ray's and vLLM's records through one
  redacting handler at POTSTILL_LOG_LEVEL (pipelines/observe/logs.py); `config`
  (a config's `model_dump()`) adds its secret values to what is redacted.

On exit the live phase is closed, the verifier processes of a scoring are
stopped, and the Ray this process started is shut down
(`cluster.connect.shutdown_ray`: the jobs have already retired their engines,
replicas and trainers) while the output still goes to the log, so a command
returns with no process of its own left behind. Ctrl-C exits with 130 and says
that committed work is kept.
"""

from __future__ import annotations

import io
import os
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import typer
from rich.text import Text

from potstill.cli.common import console, fail, reserve_stdout_for_json
from potstill.cli.display import Phase
from potstill.pipelines.observe.log_router import LogRouter
from potstill.pipelines.observe.logs import LEVEL_ENV, log_level, point_logging_at, potstill_warning
from potstill.pipelines.observe.redact import configure_logging, redact
from potstill.pipelines.output.run_record import COMMAND_LOGS
from potstill.pipelines.output.storage import is_remote

LOG_SUBDIR = COMMAND_LOGS
REAP_S = 10.0
"""How long the processes a command started get to exit after its teardown before they are ended."""


def local_log_dir(out: str | None) -> Path:
    """Where a command writing to `out` keeps its log file on this machine."""
    if out and not is_remote(out):
        return Path(out).expanduser().resolve() / LOG_SUBDIR
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "potstill" / LOG_SUBDIR


def wants_verbose(flag: bool) -> bool:
    """`--verbose`, or POTSTILL_LOG_LEVEL set: the engine, Ray and worker logs also go to the terminal."""
    return flag or bool(os.environ.get(LEVEL_ENV))


class CommandSession:
    """The log file, the terminal and the teardown of one command (see the module docstring)."""

    def __init__(self, command: str, out: str | None = None, *, json_out: bool = False, verbose: bool = False,
                 storage: Any = None, config: Any = None):
        self.config = config
        self.command = command
        self.out = out
        self.storage = storage
        self.json_out = json_out
        self.verbose = wants_verbose(verbose)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.log_path = local_log_dir(out) / f"{command}-{stamp}-{os.getpid()}.log"
        self.console = console
        self.phases: list[Phase] = []
        self._seen: set[str] = set()
        self._saved: dict[str, Any] = {}
        self.router: LogRouter | None = None

    # -- entry and exit ---------------------------------------------------------------------------
    def __enter__(self) -> "CommandSession":
        try:
            log_level()  # a bad POTSTILL_LOG_LEVEL is said on the terminal, before anything moves to the log file
        except ValueError as exc:
            fail(str(exc))
        if self.json_out:
            reserve_stdout_for_json()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "a", buffering=1, encoding="utf-8", errors="replace")
        self._saved = {"stdout": sys.stdout, "stderr": sys.stderr, "console": console._file}
        self.console.file = self._terminal()
        if not self.verbose and self._redirect_descriptors(log_file):
            fileno: int | None = log_file.fileno()
        else:
            fileno = self._saved_fd("stderr")
        self.router = LogRouter(log_file, on_line=self._on_line, fileno=fileno)
        sys.stdout = sys.stderr = self.router
        configure_logging(self.config)
        self.print(f"[dim]log: {self.log_path}[/]")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for phase in self.phases:
            phase.close(ok=exc_type is None)
        crashed = exc_type is not None and not issubclass(exc_type, (typer.Exit, SystemExit, KeyboardInterrupt))
        if crashed and self.router is not None:  # the traceback goes to the log, the terminal gets one line
            self.router.file.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))
        try:
            children = _descendants()
            _close_verifiers()
            _shutdown_ray()
            self._reap(children)
        finally:
            self._restore()
        self._copy_log_to_output()
        if exc_type is KeyboardInterrupt:
            self.print("[yellow]interrupted:[/] committed shards and checkpoints are kept; re-run the same command "
                       "to resume")
            raise typer.Exit(130)
        if crashed:
            self.print(f"[bold red]error:[/] {redact(f'{exc_type.__name__}: {exc}')}\nthe traceback is in "
                       f"{self.log_path}")
            raise typer.Exit(1)

    # -- what the command shows -------------------------------------------------------------------
    def print(self, markup: str | Text) -> None:
        """One line (rich markup, or a Text) on the terminal; a long one wraps where the terminal wraps it."""
        self.console.print(markup, highlight=False, soft_wrap=True)

    def phase(self, label: str, unit: str, done_label: str | None = None, total: int | None = None) -> Phase:
        """A live line for the next phase (use it as a context manager; see display.Phase)."""
        phase = Phase(self.console, label, unit, done_label, total)
        self.phases.append(phase)
        return phase

    def next_phase(self, label: str, unit: str, done_label: str | None = None, total: int | None = None) -> Phase:
        """End the phase on screen (as done) and start a live line for the next one."""
        self.end_phase()
        return self.phase(label, unit, done_label, total).__enter__()

    def end_phase(self) -> None:
        """End the phase on screen, if any, as done."""
        for phase in self.phases:
            phase.close()

    def warn(self, message: str) -> None:
        """A warning for the user, in potstill's words, shown once."""
        if message not in self._seen:
            self._seen.add(message)
            self.console.print(Text.assemble(("warning: ", "bold yellow"), message), highlight=False)

    def _on_line(self, line: str) -> None:
        if self.verbose:
            self.console.print(Text(line, style="dim"), highlight=False, soft_wrap=True)  # a log line stays one line
            return
        message = potstill_warning(line)
        if message:
            self.warn(message)

    # -- plumbing ---------------------------------------------------------------------------------
    def _terminal(self) -> TextIO:
        """A stream to the terminal (the real stderr) that stays there when descriptor 2 moves."""
        err = sys.stderr
        try:
            fd = err.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return err  # captured in-process (CliRunner): print where the capture reads
        self._saved["stderr_fd"] = os.dup(fd)
        return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(err, "encoding", None) or "utf-8",
                         errors="replace")

    def _saved_fd(self, name: str) -> int | None:
        return self._saved.get(f"{name}_fd")

    def _redirect_descriptors(self, log_file: TextIO) -> bool:
        """Descriptors 1 and 2 write to the log file (False when this process has none, e.g. under CliRunner)."""
        if "stderr_fd" not in self._saved:
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
        except OSError:
            return False
        self._saved["redirected"] = True
        return True

    def _restore(self) -> None:
        """The Python streams and the console as they were; the descriptors stay on the log file, so output
        written while the interpreter shuts down lands there too."""
        sys.stdout, sys.stderr = self._saved.get("stdout", sys.stdout), self._saved.get("stderr", sys.stderr)
        point_logging_at(sys.stderr)
        if self.router is not None:
            self.router.close()
        if "stdout" in self._saved and not self._saved.get("redirected"):
            self.console.file = self._saved["console"]

    def _reap(self, processes: list[Any]) -> None:
        """Wait for the processes this command started to exit; end any still there after REAP_S, and say so
        in the log (each one is a teardown that went wrong)."""
        import psutil

        processes = [p for p in processes if not _exits_with_us(p)]
        _, alive = psutil.wait_procs(processes, timeout=REAP_S)
        for proc in alive:
            try:
                print(f"potstill: {_describe(proc)} was still running {REAP_S:.0f} s after the command's teardown; "
                      "ending it", file=sys.stderr)
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(alive, timeout=REAP_S)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass

    def _copy_log_to_output(self) -> None:
        """For an s3:// output, a redacted copy of the log file at `<out>/logs/`; best effort."""
        if not (self.out and is_remote(self.out)):
            return
        try:
            from potstill.pipelines.output.storage import Storage

            text = redact(self.log_path.read_text(encoding="utf-8", errors="replace"))
            Storage(self.out, self.storage).put(f"{LOG_SUBDIR}/{self.log_path.name}", text.encode())
        except Exception as exc:  # noqa: BLE001 - the run's outcome stands; say where the log is instead
            self.print(f"[dim]the log stays at {self.log_path} ({type(exc).__name__} copying it to {self.out})[/]")


def command_session(command: str, out: str | None = None, *, json_out: bool = False, verbose: bool = False,
                    storage: Any = None, config: Any = None) -> CommandSession:
    """A `CommandSession` for `command` writing to `out` (see the module docstring)."""
    return CommandSession(command, out, json_out=json_out, verbose=verbose, storage=storage, config=config)


def _descendants() -> list[Any]:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _exits_with_us(proc: Any) -> bool:
    """Python's multiprocessing helpers (the shared-memory resource tracker, a forkserver) end when this process
    does and must outlive its last shared-memory call."""
    import psutil

    try:
        return "from multiprocessing." in " ".join(proc.cmdline()) and proc.ppid() == os.getpid()
    except psutil.Error:
        return True


def _describe(proc: Any) -> str:
    import psutil

    try:
        return f"{' '.join(proc.cmdline())[:80] or proc.name()} (pid {proc.pid})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _close_verifiers() -> None:
    if "potstill.pipelines.verify.isolated" in sys.modules:  # the verifier processes a scoring started
        from potstill.pipelines.verify.isolated import close_shared_checkers

        close_shared_checkers()


def _shutdown_ray() -> None:
    if "ray" in sys.modules:  # a command that never started Ray does not import it now
        from potstill.cluster.connect import shutdown_ray

        shutdown_ray()
