"""The pump's one-call flush (StackPump.flush with a stack offering `drain_data` and
`timer_moves`): taken when only GRE/TUN output is queued and the timer has not moved; the
full flush (control, events, closes, re-arm) whenever anything else is pending, the timer
moved, or the timer fired. The same fakes as tests/test_runtime_pump.py (tun.read/write)."""

from __future__ import annotations

import asyncio
import os

from test_runtime_pump import EchoStack, FakeGRE, FakeTun, FakeWriter, run, until
from tunnels.runtime.pump import StackPump


class DrainStack(EchoStack):
    """EchoStack with the optional one-call drain; GRE payload b'ev' also queues an event,
    b'ctl' a control message, b'arm' moves the timer."""

    def __init__(self) -> None:
        super().__init__()
        self.timer_moves = 0
        self.drains = 0
        self.full = 0

    def receive_gre(self, src: str, packet: bytes, now: float) -> None:
        self.calls.append(("gre", src, packet, now))
        self.gre.append((src, packet))
        self.tun.append(packet)
        if packet == b"ev":
            self.events.append(("got", packet))
        elif packet == b"ctl":
            self.control.append((0, b"reply"))
        elif packet == b"arm":
            self.timer = now + 0.05
            self.timer_moves += 1

    def drain_data(self):
        if self.control or self.events or self.closing:
            return None
        self.drains += 1
        return self.gre_to_send(), self.datagrams_to_tun()

    def control_to_send(self):
        self.full += 1
        return super().control_to_send()


def make():
    loop = asyncio.get_running_loop()
    gre, stack = FakeGRE(), DrainStack()
    events: list[object] = []
    pump = StackPump(loop, stack, gre, events.append)
    writer = FakeWriter()
    pump.writers[0] = writer
    tun = FakeTun()
    pump.attach_tun(tun)
    return pump, gre, stack, events, tun, writer


def test_data_only_wake_ups_take_one_call_and_the_rest_the_full_flush():
    async def main():
        pump, gre, stack, events, tun, writer = make()
        gre.theirs.send(b"first")  # the first flush is full: nothing armed yet
        await until(lambda: len(tun.written) == 1)
        full = stack.full
        for payload in (b"a", b"b"):
            gre.theirs.send(payload)
            await until(lambda p=payload: tun.written[-1] == p)
        assert stack.full == full and stack.drains >= 2  # data only: the one call
        os.write(tun.feed_fd, b"ip")
        await until(lambda: gre.sent[-1] == ("peer", b"ip"))
        assert stack.full == full
        gre.theirs.send(b"ev")
        await until(lambda: events)
        assert events == [("got", b"ev")] and stack.full == full + 1
        gre.theirs.send(b"ctl")
        await until(lambda: writer.data)
        assert writer.data == [b"reply"] and stack.full == full + 2
        assert pump._timer is None
        gre.theirs.send(b"arm")  # the timer moved: full flush, armed
        await until(lambda: pump._timer is not None)
        assert stack.full == full + 3
        await until(lambda: writer.data[-1] == b"tick")  # fired: handle_timer, full flush
        assert pump._timer is None and stack.full >= full + 4
        assert [p for _, p in gre.sent] == [b"first", b"a", b"b", b"ip", b"ev", b"ctl", b"arm"]
        assert tun.written == [b"first", b"a", b"b", b"ev", b"ctl", b"arm"]
        assert pump.counters["gre_sent"] == 7 and pump.counters["tun_written"] == 6
        pump.close()
        gre.close()

    run(main())


def test_a_stack_without_timer_moves_gets_the_full_flush_every_time():
    async def main():
        loop = asyncio.get_running_loop()
        gre, stack = FakeGRE(), DrainStack()
        del stack.timer_moves
        pump = StackPump(loop, stack, gre, lambda e: None)
        for payload in (b"a", b"b"):
            gre.theirs.send(payload)
            await until(lambda p=payload: gre.sent and gre.sent[-1][1] == p)
        assert stack.drains == 0 and stack.full == 2
        pump.close()
        gre.close()

    run(main())
