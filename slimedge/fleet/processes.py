"""Child processes of a local fleet run, started and stopped by pid.

Each process writes stdout and stderr to `<run>/logs/<name>.log` (a restarted process appends
to the same log, after a marker line). Every start, kill, stop and exit is appended to
`<run>/processes.jsonl` with its wall-clock time, so a run can be read back without this
process. Children get their own session: a Ctrl-C in the terminal reaches `fleet up` only,
which then stops each child by its pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from slimedge.fleet.schedule import FleetUpError

PROCESS_LOG = "processes.jsonl"
LOGS_DIR = "logs"


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log: IO[bytes]
    started_ns: int
    reported: bool = False  # its end is recorded (exit, kill or stop)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None


class Supervisor:
    """Starts named children, kills or stops them, and records what happened."""

    def __init__(self, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.logs = self.run_dir / LOGS_DIR
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.children: dict[str, Child] = {}  # the current process of each name
        self._retired: list[Child] = []  # killed or replaced ones (their logs to close)
        self._record = open(self.run_dir / PROCESS_LOG, "a", encoding="utf-8")  # noqa: SIM115

    def _note(self, event: str, child: Child, **extra: Any) -> None:
        row = {"t_ns": time.time_ns(), "event": event, "name": child.name, "pid": child.pid,
               **extra}
        self._record.write(json.dumps(row) + "\n")
        self._record.flush()

    def start(self, name: str, argv: Sequence[str]) -> Child:
        old = self.children.get(name)
        if old is not None and old.running():
            raise FleetUpError(f"process {name} (pid {old.pid}) is still running: stop it "
                               "before starting another")
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed in close())
        log.write(f"--- start {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        try:
            popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     start_new_session=True)
        except OSError as exc:
            log.close()
            raise FleetUpError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        child = Child(name, list(argv), popen, log, time.time_ns())
        if old is not None:
            self._retired.append(old)
        self.children[name] = child
        self._note("start", child, argv=list(argv))
        return child

    def kill(self, name: str) -> int:
        """SIGKILL (a crash, as far as the fleet can tell); returns the kill time in ns."""
        child = self.children[name]
        t = time.time_ns()
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.popen.wait()
        child.reported = True  # its end is this kill, not an exit of its own
        self._note("kill", child, returncode=child.popen.returncode, kill_ns=t)
        return t

    def hang(self, name: str) -> int:
        """SIGSTOP: the process is frozen with its sockets open (a hung board); returns the
        time in ns. `stop` and `kill` still end it."""
        child = self.children[name]
        t = time.time_ns()
        os.kill(child.pid, signal.SIGSTOP)
        self._note("hang", child, hang_ns=t)
        return t

    def stop(self, name: str, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit status."""
        child = self.children[name]
        if not child.running():
            return child.popen.returncode
        child.reported = True
        try:
            os.kill(child.pid, signal.SIGTERM)
            os.kill(child.pid, signal.SIGCONT)  # a stopped (hung) process must run to exit
            child.popen.wait(timeout=grace_s)
            how = "stop"
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.popen.wait()
            how = "stop-forced"
        except ProcessLookupError:
            child.popen.wait()
            how = "stop"
        self._note(how, child, returncode=child.popen.returncode)
        return child.popen.returncode

    def exited(self) -> list[Child]:
        """Children that ended by themselves (not through kill/stop), each reported once."""
        out = []
        for child in self.children.values():
            if not child.running() and not child.reported:
                child.reported = True
                self._note("exit", child, returncode=child.popen.returncode)
                out.append(child)
        return out

    def stop_all(self, grace_s: float = 10.0, order: Sequence[str] | None = None) -> None:
        """Stop every running child (in `order` first, then the rest), by pid."""
        names = list(order or []) + [n for n in self.children if n not in (order or [])]
        for name in names:
            if name in self.children:
                self.stop(name, grace_s)

    def close(self) -> None:
        self.stop_all()
        for child in [*self._retired, *self.children.values()]:
            child.log.close()
        self._record.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a child's log, for an error message."""
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
