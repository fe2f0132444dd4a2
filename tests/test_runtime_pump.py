"""The generic pump with stand-in stack, socket and TUN: no root, no kernel devices.

What is checked is the pump's contract (style.md 11): inputs go to the stack with
`now = loop.time()`, every output is drained after each input, exactly one timer follows
`stack.get_timer()`, and one failing input (or event handler) is counted, never propagated.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from tunnels.runtime.pump import StackPump
from tunnels.runtime.rawgre import strip_ip_header


class FakeGRE:
    """A datagram socketpair standing in for the raw GRE socket."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.sent: list[tuple[str, bytes]] = []

    def fileno(self) -> int:
        return self.ours.fileno()

    def receive(self) -> tuple[str, bytes] | None:
        try:
            return "192.0.2.9", self.ours.recv(65535)
        except BlockingIOError:
            return None

    def send(self, dst: str, packet: bytes) -> None:
        self.sent.append((dst, packet))

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


class FakeTun:
    def __init__(self) -> None:
        self.fd, self.feed_fd = os.pipe()
        os.set_blocking(self.fd, False)
        self.written: list[bytes] = []
        self.closed = False

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 65535)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        self.written.append(packet)

    def close(self) -> None:
        self.closed = True
        os.close(self.fd)
        os.close(self.feed_fd)


class EchoStack:
    """Echoes GRE back to its source, TUN packets to 'peer', and GRE payloads to the TUN;
    payload b'boom' raises (a bug met by a malformed packet)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.gre: list[tuple[str, bytes]] = []
        self.tun: list[bytes] = []
        self.control: list[tuple[int, bytes]] = []
        self.events: list[object] = []
        self.timer: float | None = None
        self.closing: list[int] = []

    def receive_gre(self, src: str, packet: bytes, now: float) -> None:
        self.calls.append(("gre", src, packet, now))
        if packet == b"boom":
            raise ValueError("stack bug")
        self.gre.append((src, packet))
        self.tun.append(packet)
        self.events.append(("got", packet))

    def send_datagram(self, packet: bytes, now: float) -> None:
        self.calls.append(("tun", packet, now))
        self.gre.append(("peer", packet))

    def handle_timer(self, now: float) -> None:
        self.calls.append(("timer", now))
        self.timer = None
        self.control.append((0, b"tick"))

    def get_timer(self) -> float | None:
        return self.timer

    def control_to_send(self) -> list[tuple[int, bytes]]:
        out, self.control = self.control, []
        return out

    def gre_to_send(self) -> list[tuple[str, bytes]]:
        out, self.gre = self.gre, []
        return out

    def datagrams_to_tun(self) -> list[bytes]:
        out, self.tun = self.tun, []
        return out

    def next_event(self) -> object | None:
        return self.events.pop(0) if self.events else None

    def connections_to_close(self) -> list[int]:
        out, self.closing = self.closing, []
        return out


class FakeWriter:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def until(predicate, timeout: float = 2.0) -> None:
    """Readiness wait on the loop, never a fixed sleep."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def make(on_event=None, on_error=None):
    loop = asyncio.get_running_loop()
    gre, stack = FakeGRE(), EchoStack()
    events: list[object] = []
    errors: list[str] = []
    pump = StackPump(loop, stack, gre, on_event or events.append, on_error or errors.append)
    return pump, gre, stack, events, errors


def test_gre_in_goes_to_the_stack_and_every_output_is_drained():
    async def main():
        pump, gre, stack, events, errors = make()
        tun = FakeTun()
        pump.attach_tun(tun)
        before = pump.now()
        gre.theirs.send(b"one")
        gre.theirs.send(b"two")
        await until(lambda: len(gre.sent) == 2)
        assert [c[2] for c in stack.calls] == [b"one", b"two"]
        assert all(c[3] >= before for c in stack.calls)  # now = loop.time()
        assert gre.sent == [("192.0.2.9", b"one"), ("192.0.2.9", b"two")]
        assert tun.written == [b"one", b"two"]
        assert events == [("got", b"one"), ("got", b"two")]
        assert pump.counters["gre_read"] == 2 and pump.counters["tun_written"] == 2
        pump.close()
        gre.close()
        assert tun.closed and not errors

    run(main())


def test_tun_in_goes_to_send_datagram():
    async def main():
        pump, gre, stack, events, errors = make()
        tun = FakeTun()
        pump.attach_tun(tun)
        os.write(tun.feed_fd, b"ip-packet")
        await until(lambda: gre.sent)
        assert gre.sent == [("peer", b"ip-packet")] and stack.calls[0][0] == "tun"
        pump.detach_tun()
        assert tun.closed and pump.tun is None
        pump.close()
        gre.close()

    run(main())


def test_one_failing_input_is_counted_and_the_rest_still_flows():
    async def main():
        pump, gre, stack, events, errors = make()
        for payload in (b"a", b"boom", b"b"):
            gre.theirs.send(payload)
        await until(lambda: len(gre.sent) == 2)
        assert gre.sent == [("192.0.2.9", b"a"), ("192.0.2.9", b"b")]
        assert pump.counters["stack_errors"] == 1
        assert len(errors) == 1 and "ValueError: stack bug" in errors[0]
        for _ in range(10):  # reported a few times, counted always
            gre.theirs.send(b"boom")
        await until(lambda: pump.counters["stack_errors"] == 11)
        assert len(errors) == 5
        pump.close()
        gre.close()

    run(main())


def test_an_event_handler_bug_does_not_stop_the_pump():
    def bad_handler(event):
        raise RuntimeError("daemon bug")

    async def main():
        errors: list[str] = []
        pump, gre, stack, _, _ = make(on_event=bad_handler, on_error=errors.append)
        gre.theirs.send(b"x")
        gre.theirs.send(b"y")
        await until(lambda: pump.counters["event_errors"] == 2)
        assert len(gre.sent) == 2 and "daemon bug" in errors[0]
        pump.close()
        gre.close()

    run(main())


def test_one_timer_follows_get_timer():
    async def main():
        pump, gre, stack, events, errors = make()
        writer = FakeWriter()
        pump.writers[0] = writer
        stack.timer = pump.now() + 10
        pump.flush()
        first = pump._timer
        stack.timer = deadline = pump.now() + 0.02  # earlier: re-armed, old one cancelled
        pump.flush()
        second = pump._timer
        assert second is not first and first is not None and first.cancelled()
        pump.flush()  # same deadline: the same timer stays
        assert pump._timer is second
        await until(lambda: writer.data == [b"tick"])  # handle_timer's output was flushed
        fired = [c for c in stack.calls if c[0] == "timer"]
        assert len(fired) == 1 and fired[0][1] >= deadline  # now = loop.time() at firing
        assert pump._timer is None  # get_timer() now says None: nothing armed
        pump.close()
        gre.close()

    run(main())


def test_connections_to_close_close_their_writer_and_closed_writers_get_nothing():
    async def main():
        pump, gre, stack, events, errors = make()
        w0, w1 = FakeWriter(), FakeWriter()
        pump.writers.update({0: w0, 1: w1})
        stack.control += [(0, b"a"), (1, b"b")]
        stack.closing.append(1)
        pump.flush()
        assert w0.data == [b"a"] and w1.data == [b"b"] and w1.closed and 1 not in pump.writers
        stack.control.append((1, b"late"))
        pump.flush()
        assert w1.data == [b"b"]
        pump.close()
        gre.close()

    run(main())


@pytest.mark.parametrize("data, expected", [
    (bytes([0x45, 0, 0, 24]) + bytes(16) + b"GRE!", b"GRE!"),
    (bytes([0x46, 0, 0, 28]) + bytes(20) + b"GRE!", b"GRE!"),  # with 4 bytes of options
    (bytes([0x45, 0, 0, 22]) + bytes(16) + b"GRE!", b"GR"),  # total length trims padding
    (bytes([0x45, 0, 0, 99]) + bytes(16) + b"GRE!", b"GRE!"),  # implausible length: ignored
    (bytes([0x44, 0, 0, 24]) + bytes(16) + b"GRE!", None),  # IHL below 5
    (bytes([0x65, 0, 0, 24]) + bytes(16) + b"GRE!", None),  # not IPv4
    (bytes(10), None),
], ids=["plain", "options", "trim", "bad-total", "short-ihl", "ipv6", "truncated"])
def test_strip_ip_header(data, expected):
    assert strip_ip_header(data) == expected
