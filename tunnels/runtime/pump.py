"""The one generic pump between a sans-I/O stack and the kernel (style.md 11).

Reads sockets and the TUN device, hands bytes to the stack with `now = loop.time()`, flushes
what the stack wants sent, hands events to the daemon, and re-arms one timer from
`stack.get_timer()`. It makes no protocol decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tunnels.runtime.rawgre import GRESocket
from tunnels.runtime.tun import TunDevice

_BATCH = 64


class StackPump:
    def __init__(self, loop: asyncio.AbstractEventLoop, stack: Any, gre: GRESocket,
                 on_event: Callable[[Any], None]):
        self.loop = loop
        self.stack = stack
        self.gre = gre
        self.on_event = on_event
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.tun: TunDevice | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        loop.add_reader(gre.fileno(), self._gre_readable)

    def attach_tun(self, tun: TunDevice) -> None:
        self.tun = tun
        self.loop.add_reader(tun.fd, self._tun_readable)

    def detach_tun(self) -> None:
        if self.tun is not None:
            self.loop.remove_reader(self.tun.fd)
            self.tun.close()
            self.tun = None

    def close(self) -> None:
        self.loop.remove_reader(self.gre.fileno())
        self.detach_tun()
        if self._timer is not None:
            self._timer.cancel()

    def now(self) -> float:
        return self.loop.time()

    def _gre_readable(self) -> None:
        now = self.now()
        for _ in range(_BATCH):
            got = self.gre.receive()
            if got is None:
                break
            self.stack.receive_gre(got[0], got[1], now)
        self.flush()

    def _tun_readable(self) -> None:
        if self.tun is None:
            return
        now = self.now()
        for _ in range(_BATCH):
            packet = self.tun.read()
            if packet is None:
                break
            self.stack.send_datagram(packet, now)
        self.flush()

    def _on_timer(self) -> None:
        self._timer, self._armed_at = None, None
        self.stack.handle_timer(self.now())
        self.flush()

    def flush(self) -> None:
        stack = self.stack
        for conn_id, data in stack.control_to_send():
            writer = self.writers.get(conn_id)
            if writer is not None and not writer.is_closing():
                writer.write(data)
        for dst, packet in stack.gre_to_send():
            self.gre.send(dst, packet)
        packets = stack.datagrams_to_tun()
        if self.tun is not None:
            for packet in packets:
                self.tun.write(packet)
        while (event := stack.next_event()) is not None:
            self.on_event(event)
        for conn_id in stack.connections_to_close():
            writer = self.writers.pop(conn_id, None)
            if writer is not None:
                writer.close()
        self._arm()

    def _arm(self) -> None:
        deadline = self.stack.get_timer()
        if deadline == self._armed_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
