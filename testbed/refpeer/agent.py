"""PID 1 of a reference peer after init.sh: reaps orphans, collects syslog, runs the role, then
runs the host's commands. Runs inside user-mode Linux under the host's python3: stdlib only.

The state directory (the host's, mounted at /run/vpnlab) is the only channel:
- `role.sh` runs first, output in role.log; then `ready` is written (JSON: uptime, role exit).
- the host drops `cmd/ID.json` ({"argv": [...], "timeout": s}); the agent renames it to
  `ID.run`, runs it with output in `ID.out` and writes `ID.rc` ({"rc": n}) when it exits. Several
  commands may run at once (a dialling pppd does not block the next command).
- `cmd/poweroff` (any content): SIGTERM to every process (pppd hangs up), then power off.
- syslog datagrams on /dev/log are appended to `syslog`.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

_RB_POWER_OFF = 0x4321FEDC


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _user_processes() -> list[int]:
    """Processes other than us (kernel threads have an empty command line)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read(1):
                        out.append(int(entry))
            except OSError:
                continue
    return out


def _write_json(path: str, data: dict) -> None:
    """Written, synced, then renamed: the host never reads half a file through hostfs."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Agent:
    def __init__(self, state: str):
        self.state = state
        self.cmd_dir = os.path.join(state, "cmd")
        os.makedirs(self.cmd_dir, exist_ok=True)
        self.running: dict[int, tuple[str, float, object]] = {}  # pid -> (id, deadline, out)
        self.exited: dict[int, int] = {}
        self.syslog = open(os.path.join(state, "syslog"), "ab", buffering=0)  # noqa: SIM115
        if os.path.exists("/dev/log"):
            os.unlink("/dev/log")
        self.log_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.log_sock.bind("/dev/log")
        os.chmod("/dev/log", 0o666)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited[pid] = os.waitstatus_to_exitcode(status)

    def spawn(self, argv: list[str], out_path: str) -> int:
        out = open(out_path, "wb")  # noqa: SIM115 - closed when the command is finished
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd="/")
        out.close()
        return proc.pid

    def run_role(self) -> None:
        role = os.path.join(self.state, "role.sh")
        rc = 0
        if os.path.exists(role):
            pid = self.spawn(["sh", role], os.path.join(self.state, "role.log"))
            while pid not in self.exited:
                self.pump_syslog(0.05)
                self.reap()
            rc = self.exited.pop(pid)
        _write_json(os.path.join(self.state, "ready"), {"uptime": _uptime(), "role_rc": rc})

    def pump_syslog(self, timeout: float) -> None:
        readable, _, _ = select.select([self.log_sock], [], [], timeout)
        if readable:
            data = self.log_sock.recv(65536)
            self.syslog.write(b"%.3f " % _uptime() + data.rstrip(b"\n\0") + b"\n")

    def take_commands(self) -> None:
        for entry in sorted(os.listdir(self.cmd_dir)):
            if entry == "poweroff":
                self.poweroff()
            if not entry.endswith(".json"):
                continue
            ident = entry[:-5]
            base = os.path.join(self.cmd_dir, ident)
            os.rename(base + ".json", base + ".run")
            try:
                with open(base + ".run") as f:
                    request = json.load(f)
                pid = self.spawn(list(request["argv"]), base + ".out")
            except (OSError, ValueError, KeyError) as exc:
                with open(base + ".out", "w") as f:
                    f.write(f"agent: cannot run {entry}: {exc}\n")
                _write_json(base + ".rc", {"rc": 127})
                continue
            self.running[pid] = (ident, time.monotonic() + float(request.get("timeout", 60)),
                                 None)

    def finish_commands(self) -> None:
        now = time.monotonic()
        for pid, (ident, deadline, _) in list(self.running.items()):
            base = os.path.join(self.cmd_dir, ident)
            if pid in self.exited:
                rc = self.exited.pop(pid)
            elif now > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                continue  # reaped on a later round, reported then (as -9)
            else:
                continue
            with open(base + ".out", "ab") as f:
                os.fsync(f.fileno())
            del self.running[pid]
            _write_json(base + ".rc", {"rc": rc})
        self.exited.clear()  # orphans reparented to us: nobody waits for them

    def poweroff(self) -> None:
        """Daemons get SIGTERM (pppd sends LCP Terminate-Request), a second to go, then off."""
        os.kill(-1, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and _user_processes():
            self.reap()
            time.sleep(0.02)
        os.kill(-1, signal.SIGKILL)
        self.syslog.close()
        os.sync()
        ctypes.CDLL(None, use_errno=True).reboot(_RB_POWER_OFF)
        sys.exit(0)  # not reached: the kernel halts

    def loop(self) -> None:
        while True:
            self.pump_syslog(0.05)
            self.reap()
            self.take_commands()
            self.finish_commands()


def main() -> None:
    agent = Agent(sys.argv[1])
    agent.run_role()
    agent.loop()


if __name__ == "__main__":
    main()
