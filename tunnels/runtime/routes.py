"""Client routes: the server through the original gateway first, then the tunnel.

The host route comes first so the tunnel never carries its own carrier traffic; teardown puts
the original default route back. Commands are argv lists; failures raise with the command.
"""

from __future__ import annotations

import subprocess


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


class ClientRoutes:
    def __init__(self, server: str, interface: str, mode: str, split: tuple[str, ...]):
        self.server, self.interface, self.mode, self.split = server, interface, mode, split
        self.saved_default = ""
        self.added: list[list[str]] = []

    def install(self) -> None:
        words = _ip("route", "get", self.server).split()
        via = ["via", words[words.index("via") + 1]] if "via" in words else []
        dev = ["dev", words[words.index("dev") + 1]]
        self._add(["route", "replace", f"{self.server}/32", *via, *dev])
        if self.mode == "default":
            self.saved_default = _ip("route", "show", "default").strip()
            self._add(["route", "replace", "default", "dev", self.interface])
        else:
            for prefix in self.split:
                self._add(["route", "replace", prefix, "dev", self.interface])

    def _add(self, argv: list[str]) -> None:
        _ip(*argv)
        self.added.append(argv)

    def remove(self) -> None:
        """Undo in reverse; routes through the TUN device vanish with it anyway."""
        for argv in reversed(self.added):
            _ip("route", "del", *argv[2:], check=False)
        self.added.clear()
        if self.saved_default:
            _ip("route", "replace", *self.saved_default.split(), check=False)
            self.saved_default = ""
