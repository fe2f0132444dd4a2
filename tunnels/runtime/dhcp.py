"""The asyncio runtime of the DHCP address pool (`tunnels.dhcp.leases.DHCPAddressSource`).

One UDP socket on 0.0.0.0:68, bound to the intranet interface (SO_BINDTODEVICE: the
broadcasts leave there and only its replies come in) with SO_BROADCAST; datagrams go where the
core says (255.255.255.255:67, the configured server, or unicast to the server id). The pump
is the generic one in miniature (style.md 11): read, `receive_datagram(src, data, now)`, flush,
hand events to `on_event`, re-arm one `loop.call_at` timer. No protocol decision is made here.

For the server:

    pool = DHCPAddressPool.open(loop, "eth1", "vpnsrv", block=10, low_water=2,
                                reserve_server_address=True, on_event=handle)
    await pool.ready(10, timeout=10)   # DHCPUnavailable names the interface and the server
    pool.server_address                # the server's own end of every tunnel
    address = pool.take()              # None when no leased address is free
    pool.give_back(address)
    pool.close()                       # DHCPRELEASE for everything, socket closed

`handle` gets the core's events (`AddressLost.in_use`: hang that call up). Binding port 68 and
SO_BINDTODEVICE need root (CAP_NET_BIND_SERVICE, CAP_NET_RAW); nothing else on the host may
hold port 68 on that interface (a DHCP client such as dhclient does).
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import traceback
from collections.abc import Callable
from typing import Any

from tunnels.dhcp.leases import AcquireFailed, DHCPAddressSource, Event
from tunnels.dhcp.messages import CLIENT_PORT
from tunnels.runtime.udp import UDPSocket

_SIOCGIFHWADDR = 0x8927
_BATCH = 64


class DHCPUnavailable(RuntimeError):
    """The pool did not get its first addresses in time."""


def interface_mac(interface: str) -> bytes:
    """The hardware address of `interface` in our network namespace (an ioctl: /sys may show
    another namespace's interfaces)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        info = fcntl.ioctl(probe.fileno(), _SIOCGIFHWADDR,
                           struct.pack("256s", interface.encode()[:15]))
    except OSError as exc:
        raise DHCPUnavailable(f"no interface {interface!r}: {exc.strerror}") from None
    finally:
        probe.close()
    return info[18:24]


class DHCPSocket(UDPSocket):
    """UDP 0.0.0.0:68 on one interface; errors are counted and affect one datagram."""

    def __init__(self, interface: str, port: int = CLIENT_PORT):
        self.interface = interface
        try:
            super().__init__("0.0.0.0", port, device=interface, broadcast=True)
        except OSError as exc:
            raise DHCPUnavailable(f"cannot open UDP port {port} on {interface}: "
                                  f"{exc.strerror or exc}") from None


class DHCPAddressPool:
    """The core on a socket and the loop's clock; `on_event` sees every core event."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: DHCPAddressSource,
                 sock: DHCPSocket, on_event: Callable[[Event], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.loop, self.source, self.sock = loop, source, sock
        self.on_event, self.on_error = on_event, on_error
        self.counters = {"core_errors": 0, "event_errors": 0}
        self.failures: list[AcquireFailed] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False
        loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, interface: str, server_name: str, *,
             server: str | None = None, on_event: Callable[[Event], None] | None = None,
             **options: Any) -> DHCPAddressPool:
        """A pool on `interface` (its MAC as chaddr); `options` go to DHCPAddressSource."""
        source = DHCPAddressSource(interface_mac(interface), server_name, server=server,
                                   **options)
        return cls(loop, source, DHCPSocket(interface), on_event)

    # API ------------------------------------------------------------------------------------
    @property
    def server_address(self) -> str | None:
        return self.source.server_address

    def acquire(self, count: int) -> None:
        self._feed(self.source.acquire, count, self.loop.time())

    def take(self) -> str | None:
        address = self.source.take()
        self._flush()
        return address

    def give_back(self, address: str) -> None:
        self.source.give_back(address, self.loop.time())
        self._flush()

    async def ready(self, count: int, timeout: float) -> None:
        """Wait until `count` addresses are free (and the server's own, when reserved),
        acquiring what is missing; DHCPUnavailable after `timeout` s or when every
        acquisition was given up."""
        missing = count - self.source.free_count() - self.source.acquiring_count()
        if missing > 0 or (self.source.reserve_server_address and self.server_address is None
                           and not self.source.acquiring_count()):
            self.acquire(max(missing, 0))
        if self._satisfied(count):
            return
        future: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append((count, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise DHCPUnavailable(self._unavailable(count, f" after {timeout:g} s")) from None
        finally:
            self._waiters = [(n, f) for n, f in self._waiters if f is not future]

    def close(self, release: bool = True) -> None:
        """DHCPRELEASE every address (unless `release` is False), then close the socket."""
        if self._closed:
            return
        self._closed = True
        if release:
            self._feed(self.source.release_all, self.loop.time())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(DHCPUnavailable("the DHCP address pool was closed"))

    def status(self) -> dict[str, Any]:
        return {**self.source.status(), "interface": self.sock.interface,
                "socket": dict(self.sock.counters), "runtime": dict(self.counters)}

    # the pump -------------------------------------------------------------------------------
    def _feed(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one bad input must not stop the pool
            self._error("core_errors", traceback.format_exc(limit=6))
        self._flush()

    def _readable(self) -> None:
        now = self.loop.time()
        for _ in range(_BATCH):
            got = self.sock.receive()
            if got is None:
                break
            try:
                self.source.receive_datagram(got[0], got[1], now)
            except Exception:  # noqa: BLE001 - the core never should; count, report, go on
                self._error("core_errors", traceback.format_exc(limit=6))
        self._flush()

    def _on_timer(self) -> None:
        now = max(self._armed_at or 0.0, self.loop.time())  # asyncio may fire a bit early
        self._timer, self._armed_at = None, None
        self._feed(self.source.handle_timer, now)

    def _flush(self) -> None:
        if self._closed and self.sock.sock.fileno() < 0:
            self.source.datagrams_to_send()
            return
        for dst, data in self.source.datagrams_to_send():
            self.sock.send(dst, data)
        while (event := self.source.next_event()) is not None:
            if isinstance(event, AcquireFailed):
                self.failures.append(event)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:  # noqa: BLE001 - a handler bug must not stop the pool
                    self._error("event_errors", traceback.format_exc(limit=6))
        self._wake()
        if not self._closed:
            self._arm()

    def _arm(self) -> None:
        deadline = self.source.get_timer()
        if deadline == self._armed_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = None, deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _error(self, counter: str, detail: str) -> None:
        self.counters[counter] += 1
        if self.on_error is not None and self.counters[counter] <= 5:
            self.on_error(detail)

    # readiness ------------------------------------------------------------------------------
    def _satisfied(self, count: int) -> bool:
        server_ok = not self.source.reserve_server_address or self.server_address is not None
        return server_ok and self.source.free_count() >= count

    def _wake(self) -> None:
        for count, future in self._waiters:
            if future.done():
                continue
            if self._satisfied(count):
                future.set_result(None)
            elif not self.source.acquiring_count():
                future.set_exception(DHCPUnavailable(self._unavailable(
                    count, ", then every acquisition was given up")))

    def _unavailable(self, count: int, when: str) -> str:
        dst = self.source.destination
        offers = self.source.counters["offers"]
        got = self.source.free_count()
        what = (f"no DHCP server answered on {self.sock.interface} ({dst[0]}:{dst[1]})"
                if not offers else f"the DHCP server reached on {self.sock.interface} "
                f"({dst[0]}:{dst[1]}) leased {got} of {count} addresses")
        last = f"; last: {self.failures[-1].reason}" if self.failures else ""
        sock = f"; socket: {self.sock.last_error}" if self.sock.last_error else ""
        return f"{what}{when}{last}{sock}"
