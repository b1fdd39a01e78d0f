"""Start an MQTT broker for a fleet run or a test: Mosquitto from PATH when installed,
otherwise an embedded amqtt broker in its own Python process (MQTT 3.1.1 only).

    handle = start_broker()            # free port on 127.0.0.1
    handle.url, handle.kind, handle.pid
    handle.restart()                   # same port: clients see the broker go and come back
    handle.stop()

Mosquitto runs in the foreground from a generated config (log to stdout: started as root it
drops to user `mosquitto` and could not write a log file elsewhere). Readiness is a TCP
connect that succeeds; 2.0's stdout is not line-buffered, so its log is no signal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slimedge.errors import SlimEdgeError

__all__ = ["BrokerError", "BrokerHandle", "free_port", "mosquitto_path", "start_broker"]

KINDS = ("mosquitto", "embedded")


class BrokerError(SlimEdgeError):
    """The broker could not be started (or is not of the kind asked for)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class BrokerHandle:
    """A running broker process. `.url` is what every --broker option takes."""

    kind: str
    host: str
    port: int
    workdir: Path
    config_lines: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    _own_workdir: bool = False

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.kind}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _launch(self, timeout: float) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps the descriptor
        try:
            if self.kind == "mosquitto":
                conf = self.workdir / "mosquitto.conf"
                conf.write_text("\n".join(self.config_lines) + "\n")
                argv = [mosquitto_path() or "mosquitto", "-c", str(conf)]
            else:
                argv = [sys.executable, "-m", "slimedge.fleet.broker", "--embedded",
                        "--host", self.host, "--port", str(self.port)]
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"{self.kind} broker exited with code {self.process.returncode}"
                                  f" before listening on {self.host}:{self.port}; its log "
                                  f"({self.log_path}):\n{self._log_tail()}")
            if _accepts(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"{self.kind} broker did not listen on {self.host}:{self.port} within "
                          f"{timeout:g} s; its log:\n{self._log_tail()}")

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the broker by its pid (SIGKILL after `timeout`); idempotent."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout)
        except ProcessLookupError:
            pass

    def restart(self, down_s: float = 0.0, timeout: float = 10.0) -> None:
        """Stop, stay down `down_s` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self._launch(timeout)

    def close(self) -> None:
        """Stop and remove the generated work folder (if this handle made it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_broker(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    kind: str = "auto",
    config_extras: Sequence[str] = (),
    workdir: str | os.PathLike | None = None,
    timeout: float = 10.0,
) -> BrokerHandle:
    """Start a broker on `host:port` (a free port when None) and wait until it accepts.

    kind: "auto" (Mosquitto if on PATH, else embedded), "mosquitto" or "embedded".
    config_extras: extra mosquitto.conf lines (password_file, acl_file, TLS listener
    options...); the embedded broker accepts none. workdir: where the config and log go
    (a temporary folder, removed by `close()`, when None).
    """
    if kind not in (*KINDS, "auto"):
        raise BrokerError(f"kind: expected auto, mosquitto or embedded, got {kind!r}")
    if kind == "auto":
        kind = "mosquitto" if mosquitto_path() else "embedded"
    if kind == "mosquitto" and not mosquitto_path():
        raise BrokerError("mosquitto is not installed (apt-get install -y mosquitto)")
    if kind == "embedded" and config_extras:
        raise BrokerError("config_extras: the embedded broker takes no Mosquitto config "
                          f"(got {list(config_extras)[:2]}...)")
    own = workdir is None
    # Absolute: the broker runs with the folder as its working directory, so a relative
    # config path would be resolved twice (a relative --work failed this way).
    work = Path(tempfile.mkdtemp(prefix="slimedge-broker-") if own else workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    lines = [
        f"listener {port} {host}",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "persistence false",
        # root drops to user mosquitto before reading password/ACL files: stay root so files
        # in private (0700) folders stay readable
        "user root",
    ]
    extras = list(config_extras)
    if not any(x.strip().startswith(("password_file", "allow_anonymous")) for x in extras):
        lines.append("allow_anonymous true")
    handle = BrokerHandle(kind, host, port, work, lines + extras, _own_workdir=own)
    handle._launch(timeout)
    return handle


# ---- the embedded broker's own process ------------------------------------------------------

def _serve_embedded(host: str, port: int) -> None:
    import asyncio

    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "auth": {"allow-anonymous": True},
        "topic-check": {"enabled": False},
    }

    async def main() -> None:
        broker = Broker(config)  # needs a running event loop
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m slimedge.fleet.broker",
                                 description="Run the embedded (amqtt) MQTT broker.")
    ap.add_argument("--embedded", action="store_true", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    _serve_embedded(args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
