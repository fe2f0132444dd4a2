"""A LAC placing two calls in one tunnel, run inside a lab node for the conformance cases.

The client daemon places one call per tunnel, as Windows does; a LAC concentrating several
dial-in users places several (RFC 2661 §3). This drives our `L2TPClient` stack (an endpoint,
not an oracle: the cases judge the result from the capture with tshark) on a plain UDP socket
with no TUN device: each session sends an ICMP echo to the intranet host from its own PPP
address, then both calls are hung up, which ends the tunnel. Prints one JSON line.

    python -m conformance.l2tp_lac SERVER USER PASSWORD AUTH TARGET
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

from tunnels.l2tp.control import TunnelConfig
from tunnels.icmp import echo_request, is_echo_reply
from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.stacks.l2tp import L2TPClient
from tunnels.stacks.pptp import SessionDown, SessionUp


class LAC:
    def __init__(self, server: str, user: str, password: str, auth: str):
        cfg = PPPConfig(False, (AuthMethod(auth),), username=user, password=password,
                        encryption=EncryptionLevel.NONE)
        self.stack = L2TPClient(cfg, server, TunnelConfig(host_name="vpnlab-lac"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("", 0))
        self.up: dict[int, str] = {}  # session ID -> PPP address
        self.down: list[int] = []
        self.tun: list[bytes] = []

    def run_until(self, done, timeout: float) -> bool:
        """Move datagrams, timers and events until `done()` or the timeout."""
        deadline = time.monotonic() + timeout
        stack = self.stack
        while not done():
            now = time.monotonic()
            if now > deadline:
                return False
            for dst, data in stack.datagrams_to_send():
                self.sock.sendto(data, dst)
            timer = stack.get_timer()
            wait = 0.05 if timer is None else max(0.0, min(0.05, timer - now))
            if select.select([self.sock], [], [], wait)[0]:
                data, src = self.sock.recvfrom(65535)
                stack.receive_datagram(src, data, time.monotonic())
            timer = stack.get_timer()
            if timer is not None and timer <= time.monotonic():
                stack.handle_timer(time.monotonic())
            while (event := stack.next_event()) is not None:
                if isinstance(event, SessionUp):
                    self.up[event.call_id] = event.local_address
                elif isinstance(event, SessionDown):
                    self.down.append(event.call_id)
            self.tun += stack.datagrams_to_tun()
        for dst, data in stack.datagrams_to_send():
            self.sock.sendto(data, dst)
        return True

    def second_call(self) -> None:
        entry = self.stack.tunnels[self.stack.tunnel_id]
        entry.tunnel.place_call(time.monotonic())
        self.stack._after_tunnel(entry, time.monotonic())

    def ping(self, target: str) -> dict[int, bool]:
        """One echo through each session, from its own address; which got a reply."""
        now = time.monotonic()
        for i, (sid, session) in enumerate(self.stack.sessions.items(), 1):
            session.ppp.send_datagram(echo_request(self.up[sid], target, 0x4C00 + i), now)
            self.stack._pump(session, now)
        want = len(self.stack.sessions)
        self.run_until(lambda: sum(is_echo_reply(p, 0x4C00 + i) for p in self.tun
                                   for i in range(1, want + 1)) >= want, 5)
        return {sid: any(is_echo_reply(p, 0x4C00 + i) for p in self.tun)
                for i, sid in enumerate(self.stack.sessions, 1)}

    def hang_up(self) -> None:
        now = time.monotonic()
        for session in list(self.stack.sessions.values()):
            session.ppp.close(now, "user hung up")
            self.stack._pump(session, now)
        self.run_until(lambda: self.stack.done, 10)


def main(argv: list[str]) -> int:
    server, user, password, auth, target = argv
    lac = LAC(server, user, password, auth)
    lac.stack.start(time.monotonic())
    first = lac.run_until(lambda: len(lac.up) == 1, 15)
    if first:
        lac.second_call()
    both = first and lac.run_until(lambda: len(lac.up) == 2, 15)
    replies = lac.ping(target) if both else {}
    tunnel_id = lac.stack.tunnel_id
    lac.hang_up()
    print(json.dumps({"port": lac.sock.getsockname()[1], "tunnel_id": tunnel_id,
                      "sessions": {str(k): v for k, v in lac.up.items()},
                      "replies": {str(k): v for k, v in replies.items()},
                      "down": lac.down, "done": lac.stack.done, "reason": lac.stack.reason}))
    return 0 if both else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
