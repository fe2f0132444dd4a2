"""Commands and daemons inside a node's namespaces: argv lists, exit codes, timeouts, readiness.

Never text typed into a shell and scraped for a prompt (style.md 15): `run` returns the exit
status and both outputs; `Daemon` starts with a readiness check on its log and stops by PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import CommandFailed, TestbedError


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def in_namespace(pid: int, argv: list[str]) -> list[str]:
    """Prefix that runs argv in the network and mount namespaces of process `pid`."""
    return ["mnexec", "-a", str(pid), *argv]


def run(node: str, pid: int, argv: list[str], timeout: float = 30.0, check: bool = False,
        input: str | None = None) -> Result:
    try:
        done = subprocess.run(in_namespace(pid, argv), capture_output=True, text=True,
                              timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise TestbedError(f"on {node}: `{' '.join(argv)}` did not finish in {timeout}s; "
                           f"output so far: {out[-300:]}") from None
    result = Result(done.returncode, done.stdout, done.stderr)
    if check and not result.ok:
        raise CommandFailed(node, argv, result.returncode, result.stderr or result.stdout)
    return result


Ready = Callable[[str], bool] | str | None


class Daemon:
    """A long-running process in a node, its output in `log_path`, stopped by PID."""

    def __init__(self, node: str, name: str, pid_ns: int, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None):
        self.node = node
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(in_namespace(pid_ns, argv), stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True,
                                      env=None if env is None else {**os.environ, **env})

    @property
    def pid(self) -> int:
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, ready: Ready, timeout: float) -> None:
        """Wait until `ready` (a regex searched in the log, or a predicate on it) holds."""
        if ready is None:
            return
        check = (lambda text: re.search(ready, text, re.M) is not None) if isinstance(
            ready, str) else ready
        deadline = time.monotonic() + timeout
        delay = 0.005
        while time.monotonic() < deadline:
            if check(self.output()):
                return
            if not self.running():
                raise TestbedError(
                    f"{self.name} on {self.node} exited with status {self.returncode} before it "
                    f"was ready; log {self.log_path}:\n{self.output()[-1500:]}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        raise TestbedError(f"{self.name} on {self.node} not ready after {timeout}s; log "
                           f"{self.log_path}:\n{self.output()[-1500:]}")

    def wait(self, timeout: float) -> int:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestbedError(
                f"{self.name} on {self.node} still running after {timeout}s") from None

    def send_signal(self, signum: int) -> None:
        if self.running():
            os.kill(self._proc.pid, signum)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Ask politely, then SIGKILL; idempotent."""
        try:
            if self.running():
                os.kill(self._proc.pid, sig)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self._proc.pid, signal.SIGKILL)
                    self._proc.wait(5)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
        return self._proc.returncode
