"""Every lab runs inside a sandbox the kernel cleans up.

`run_in_sandbox(argv)` starts `argv` under `unshare --net --pid --mount --fork --mount-proc
--kill-child`: the command is PID 1 of a private PID namespace and owns a private network
namespace where Mininet makes its bridges; lab nodes are namespaces inside it. The supervising
process (the one a user sees and may kill) holds the unshare process with PR_SET_PDEATHSIG, so
SIGKILL of the supervisor kills unshare, unshare's --kill-child kills PID 1, and the kernel then
kills every process of the PID namespace and frees every namespace, veth, bridge, TUN device and
iptables rule. The root network namespace is never touched. SIGTERM and SIGINT are forwarded to
PID 1 so a normal stop tears down gracefully (captures flushed, daemons stopped in order).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from testbed.errors import MissingTool, NotInSandbox

SANDBOX_ENV = "VPNLAB_SANDBOX"
_PR_SET_PDEATHSIG = 1


def in_sandbox() -> bool:
    return os.environ.get(SANDBOX_ENV) == "1"


def require_sandbox() -> None:
    if not in_sandbox():
        raise NotInSandbox(
            "a lab must run inside vpnlab's sandbox (private network and PID namespaces): "
            "use the `vpnlab` command or pytest with the vpnlab plugin, as root"
        )


def check_can_sandbox() -> None:
    if os.geteuid() != 0:
        raise MissingTool("root", "run as root (labs create network namespaces)")
    if shutil.which("unshare") is None:
        raise MissingTool("unshare", "apt-get install util-linux")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def sandbox_argv(argv: list[str]) -> list[str]:
    """unshare's command line; sysfs is mounted again so /sys/class/net shows the sandbox's
    interfaces (it shows the namespace of whoever mounted it), then `argv` replaces the shell
    as PID 1."""
    return ["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc",
            "--kill-child=SIGKILL", "--propagation", "private",
            "sh", "-c", 'mount -t sysfs sysfs /sys && exec "$@"', "vpnlab-sandbox", *argv]


def process_start(pid: int) -> str:
    """The start time of a living process (clock ticks since boot), "" if it is gone: with the
    PID, an identity that a recycled PID cannot fake."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    # a zombie (killed, not yet reaped by its parent) is dead: it holds no lab
    return "" if fields[0] in ("Z", "X") else fields[19]


def _child_of(pid: int) -> int | None:
    """The process whose parent is `pid` (unshare has exactly one: the sandbox's PID 1)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            return int(entry.name)
    return None


def run_in_sandbox(argv: list[str]) -> int:
    """Run `argv` as PID 1 of a fresh sandbox; return its exit status."""
    check_can_sandbox()
    # Labs record who supervises them, so `vpnlab down/clean` can tell live from dead.
    env = dict(os.environ, **{SANDBOX_ENV: "1", "VPNLAB_SUPERVISOR_PID": str(os.getpid()),
                              "VPNLAB_SUPERVISOR_START": process_start(os.getpid())})
    proc = subprocess.Popen(sandbox_argv(argv), env=env, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: object) -> None:
        inner = _child_of(proc.pid)
        os.kill(inner if inner else proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return proc.wait()
            except InterruptedError:
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def reexec_in_sandbox() -> int:
    """Run this very command line again inside a sandbox (for `vpnlab` and pytest)."""
    return run_in_sandbox([sys.executable, *_original_argv()])


def _original_argv() -> list[str]:
    orig = getattr(sys, "orig_argv", None)
    if orig:
        return list(orig[1:])
    return sys.argv


def prepare_sandbox() -> None:
    """First steps inside: loopback up; bridged frames not run through the sandbox's iptables."""
    require_sandbox()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    for table in ("iptables", "ip6tables", "arptables"):
        knob = Path(f"/proc/sys/net/bridge/bridge-nf-call-{table}")
        if knob.exists():
            knob.write_text("0\n")
