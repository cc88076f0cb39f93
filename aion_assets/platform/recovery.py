"""Who owns a CLI run, whether that owner is still alive, and how the CLI stops on a signal. Pure: no dagster.

The CLI executes its runs in its own process (`execute_in_process`), so a run that is still STARTED while the
process that started it is gone is dead: nobody will ever finish it or give back its pool slots. Each CLI run
carries its owner as run tags (pid, host, and the process's start time, so a recycled pid is not mistaken for
the owner); a later CLI invocation reads them to tell a dead run from one a live process still runs.

Runs without these tags (launched by the UI, the daemon, a sensor) are never judged here: their owner is a run
worker this module knows nothing about, and Dagster's run monitoring is the one that watches them.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

OWNER_PID_TAG = "aion/owner_pid"
OWNER_HOST_TAG = "aion/owner_host"
OWNER_STARTED_TAG = "aion/owner_started"  # the process's start time in clock ticks since boot (/proc/PID/stat)


@dataclass(frozen=True)
class ProcessOwner:
    pid: int
    host: str
    started: str  # "" where the platform does not tell (no /proc): then the pid alone identifies the process

    def as_tags(self) -> dict[str, str]:
        return {OWNER_PID_TAG: str(self.pid), OWNER_HOST_TAG: self.host, OWNER_STARTED_TAG: self.started}


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may itself hold spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def process_start_time(pid: int) -> str:
    """The process's start time (field 22 of /proc/PID/stat), "" where unknown."""
    fields = _proc_stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def current_owner() -> ProcessOwner:
    pid = os.getpid()
    return ProcessOwner(pid=pid, host=socket.gethostname(), started=process_start_time(pid))


def owner_from_tags(tags: Mapping[str, str]) -> ProcessOwner | None:
    """The owner a run's tags name; None for a run the CLI did not start (or a malformed tag)."""
    try:
        return ProcessOwner(int(tags[OWNER_PID_TAG]), tags[OWNER_HOST_TAG], tags.get(OWNER_STARTED_TAG, ""))
    except (KeyError, ValueError):
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def owner_is_alive(owner: ProcessOwner) -> bool:
    """Whether the owning process may still be running. Another host's process cannot be checked from here, so
    it counts as alive: a run is failed only when its death is certain."""
    if owner.host != socket.gethostname():
        return True
    if not _pid_exists(owner.pid):
        return False
    fields = _proc_stat_fields(owner.pid)
    if fields is None:  # no /proc (macOS): the pid exists, which is all we can know
        return True
    if fields[0] in ("Z", "X"):  # killed and not yet reaped by its parent: it will never run again
        return False
    return not owner.started or fields[19] == owner.started  # a different start time: the pid was reused


def raise_keyboard_interrupt_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt), so `kill PID` unwinds the run and marks it failed
    instead of killing the process mid-write. Dagster's own interrupt capture maps SIGTERM to its SIGINT handler
    during a run, so the two signals stay alike there too. Only the main thread may install handlers."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


class InterruptWitness:
    """Remembers a SIGINT or SIGTERM this process received, whichever Python handler was installed then.

    During a run Dagster swaps in its own handler; an interrupt that lands between two of its checkpoints (an
    event write after a step) is forgotten when the run then completes, and the CLI would go on to the next
    partition as if nobody had asked it to stop. The interpreter's C-level handler writes the number of every
    signal it catches to the wakeup fd, which Dagster never touches, so the CLI reads it after each run.
    Enter it on the main thread (the only one that may set the wakeup fd)."""

    _STOPPING = frozenset({signal.SIGINT, signal.SIGTERM})

    def __enter__(self) -> InterruptWitness:
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._seen = False
        return self

    def received(self) -> bool:
        """Whether SIGINT or SIGTERM arrived since this witness was entered."""
        while not self._seen:
            try:
                caught = os.read(self._read, 512)
            except BlockingIOError:  # nothing more to read
                break
            self._seen = any(signo in self._STOPPING for signo in caught)
        return self._seen

    def __exit__(self, *_exc: object) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


def run_stoppable_child(argv: list[str], env: Mapping[str, str], grace_s: float = 5.0) -> int:
    """Run ``argv`` (e.g. `dagster dev`) in its own process group and return its exit status. SIGINT or SIGTERM
    to this process is passed to the whole group (the webserver, the daemon, the code servers); a group still
    there ``grace_s`` seconds later is killed, so the command stops within seconds even where a child ignores
    the signal."""
    import subprocess
    import time

    child = subprocess.Popen(argv, env=dict(env), start_new_session=True)
    stop_requested_at: list[float] = []

    def _pass_on(_signo: int, _frame: object) -> None:
        stop_requested_at.append(time.monotonic())
        _signal_group(child.pid, signal.SIGINT)  # dagster dev shuts its children down cleanly on SIGINT

    previous = {signo: signal.signal(signo, _pass_on) for signo in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if stop_requested_at and time.monotonic() - stop_requested_at[0] > grace_s:
                    _signal_group(child.pid, signal.SIGKILL)
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)
        _signal_group(child.pid, signal.SIGKILL)  # nothing of the group outlives the command


def _signal_group(pgid: int, signo: int) -> None:
    try:
        os.killpg(pgid, signo)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass
