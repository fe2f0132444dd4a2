"""The one generic pump between a sans-I/O stack and the kernel (style.md 11).

Reads the raw GRE socket and the TUN device, hands bytes to the stack with
`now = loop.time()`, flushes what the stack wants sent, hands events to the daemon, and re-arms
one timer from `stack.get_timer()`. It makes no protocol decision.

Fault isolation: one input that makes the stack raise (a bug met by a malformed packet) is
counted in `counters["stack_errors"]`, the first few are reported through `on_error`, and the
pump goes on with the next input; outputs already queued are still flushed. A daemon never dies
of one packet, and one call's trouble never stops the socket shared by all calls.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from tunnels.runtime.tun import TunDevice

_BATCH = 64  # reads per readiness callback before yielding to the loop
_REPORTED_ERRORS = 5  # tracebacks reported in full; later ones only counted


class PacketSocket(Protocol):
    """What the pump needs from the GRE socket (a stand-in in unit tests)."""

    def fileno(self) -> int: ...
    def receive(self) -> tuple[str, bytes] | None: ...
    def send(self, dst: str, packet: bytes) -> None: ...


class StackPump:
    def __init__(self, loop: asyncio.AbstractEventLoop, stack: Any, gre: PacketSocket,
                 on_event: Callable[[Any], None],
                 on_error: Callable[[str], None] | None = None):
        self.loop = loop
        self.stack = stack
        self.gre = gre
        self.on_event = on_event
        self.on_error = on_error
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.tun: TunDevice | None = None
        self.counters = {"gre_read": 0, "tun_read": 0, "tun_written": 0, "gre_sent": 0,
                         "control_sent": 0, "stack_errors": 0, "event_errors": 0}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        # the one-call flush (see flush()), for a stack that offers it
        self._drain_data: Callable[[], Any] | None = (
            getattr(stack, "drain_data", None) if hasattr(stack, "timer_moves") else None)
        self._timer_moves: int | None = None  # stack.timer_moves at the last re-arm
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
            self._timer = None

    def now(self) -> float:
        return self.loop.time()

    # -- inputs ----------------------------------------------------------------------------
    def feed(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Call one stack input; a raise is counted and reported, never propagated."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - isolation is the point: count, report, go on
            self._error("stack_errors", f"{what}: {traceback.format_exc(limit=6)}")

    def _error(self, counter: str, detail: str) -> None:
        self.counters[counter] += 1
        if self.on_error is not None and self.counters[counter] <= _REPORTED_ERRORS:
            self.on_error(detail)

    # The two data-path readers are feed() unrolled: the same per-input isolation (a raise is
    # counted and reported, the next input goes on), without a call and tuple per packet.
    def _gre_readable(self) -> None:
        now = self.now()
        receive, stack_receive = self.gre.receive, self.stack.receive_gre
        n = 0
        for _ in range(_BATCH):
            got = receive()
            if got is None:
                break
            n += 1
            try:
                stack_receive(got[0], got[1], now)
            except Exception:  # noqa: BLE001 - isolation is the point: count, report, go on
                self._error("stack_errors", f"receive_gre: {traceback.format_exc(limit=6)}")
        self.counters["gre_read"] += n
        self.flush()

    def _tun_readable(self) -> None:
        if self.tun is None:
            return
        now = self.now()
        read, send = self.tun.read, self.stack.send_datagram
        n = 0
        for _ in range(_BATCH):
            packet = read()
            if packet is None:
                break
            n += 1
            try:
                send(packet, now)
            except Exception:  # noqa: BLE001 - isolation is the point: count, report, go on
                self._error("stack_errors", f"send_datagram: {traceback.format_exc(limit=6)}")
        self.counters["tun_read"] += n
        self.flush()

    def _on_timer(self) -> None:
        # asyncio may fire up to one clock resolution early; a deadline handed in as "not yet
        # due" would spin. Like aioquic: now = max(deadline, loop.time()).
        now = max(self._armed_at or 0.0, self.now())
        self._timer, self._armed_at = None, None
        self._timer_moves = None  # the timer is spent: this flush re-arms, whatever moved
        self.feed("handle_timer", self.stack.handle_timer, now)
        self.flush()

    # -- outputs ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Drain every output of the stack, then re-arm the one timer.

        A stack may offer `drain_data() -> (gre, tun) | None` and `timer_moves` (an int that
        changes whenever its next deadline may have): when the timer has not moved since the
        last re-arm and `drain_data` says only GRE and TUN output is queued (None otherwise,
        taking nothing), that one call is the whole flush. Most wake-ups carry one or two data
        packets, and the five calls and the timer re-arm of the full flush cost more than
        they do."""
        stack = self.stack
        drain = self._drain_data
        if drain is not None and stack.timer_moves == self._timer_moves:
            data = drain()
            if data is not None:
                self._send_data(*data)
                return
        for conn_id, data in stack.control_to_send():
            writer = self.writers.get(conn_id)
            if writer is not None and not writer.is_closing():
                writer.write(data)
                self.counters["control_sent"] += 1
        self._send_data(stack.gre_to_send(), stack.datagrams_to_tun())
        while (event := stack.next_event()) is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - a daemon's handler bug must not stop the pump
                self._error("event_errors", f"event {event!r}: {traceback.format_exc(limit=6)}")
        for conn_id in stack.connections_to_close():
            writer = self.writers.pop(conn_id, None)
            if writer is not None:
                writer.close()
        self._arm()

    def _send_data(self, out: list[tuple[str, bytes]], packets: list[bytes]) -> None:
        if out:
            send = self.gre.send
            for dst, packet in out:
                send(dst, packet)
            self.counters["gre_sent"] += len(out)
        if self.tun is not None and packets:
            write = self.tun.write
            for packet in packets:
                write(packet)
            self.counters["tun_written"] += len(packets)

    def _arm(self) -> None:
        if self._drain_data is not None:
            self._timer_moves = self.stack.timer_moves  # read before the deadline it covers
        deadline = self.stack.get_timer()
        if deadline == self._armed_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
