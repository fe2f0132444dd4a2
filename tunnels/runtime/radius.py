"""The asyncio runtime of the sans-I/O RadiusClient: one UDP socket, one timer, callbacks.

The socket is bound in the server's network namespace (the process's own) to an ephemeral
port, on `bind_address` (any address by default); replies from every server and port come back
to it and the client matches them. The server never awaits: `submit_access(attributes,
callback)` calls `callback(event)` from the event loop when AccessAccepted, AccessRejected,
AccessChallenged or RequestFailed arrives; `submit_accounting(attributes)` is fire and forget
(failures counted). A callback that raises is counted and reported in `last_error`, never
propagated into the loop. `counters()` is for the server's status.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from tunnels.radius.attributes import Attributes
from tunnels.radius.client import (
    AccessAccepted,
    AccessChallenged,
    AccessRejected,
    AccountingAcknowledged,
    RadiusClient,
    RequestFailed,
)

AccessEvent = AccessAccepted | AccessRejected | AccessChallenged | RequestFailed
Callback = Callable[[AccessEvent], Any]


class RadiusRuntime:
    def __init__(self, loop: asyncio.AbstractEventLoop, client: RadiusClient,
                 bind_address: str = "0.0.0.0"):
        self.loop = loop
        self.client = client
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((bind_address, 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.local_address: tuple[str, int] = self.sock.getsockname()
        self._access: dict[int, tuple[Callback, float]] = {}
        self._accounting: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._closed = False
        self.stats = {"access_submitted": 0, "access_accepted": 0, "access_rejected": 0,
                      "access_challenged": 0, "access_failed": 0, "accounting_submitted": 0,
                      "accounting_acknowledged": 0, "accounting_failed": 0, "send_errors": 0,
                      "receive_errors": 0, "callback_errors": 0, "submit_errors": 0}
        self.last_error = ""
        self.last_access_rtt: float | None = None
        loop.add_reader(self.sock.fileno(), self._readable)

    # API -------------------------------------------------------------------------------------

    def submit_access(self, attributes: Attributes, callback: Callback) -> int:
        """Send an Access-Request; `callback(event)` runs later, from the loop. Our caller's
        mistakes (attributes RFC 2865 §4.1 forbids) raise LocalProtocolError here."""
        request_id = self.client.authenticate(attributes, self.loop.time())
        self._access[request_id] = (callback, self.loop.time())
        self.stats["access_submitted"] += 1
        self._flush()
        return request_id

    def submit_accounting(self, attributes: Attributes) -> int | None:
        """Send an Accounting-Request and forget it; None (counted) when it could not be
        made."""
        try:
            request_id = self.client.account(attributes, self.loop.time())
        except Exception as exc:  # noqa: BLE001 - accounting never stops a session
            self.stats["submit_errors"] += 1
            self.last_error = f"accounting request: {exc}"
            return None
        self._accounting.add(request_id)
        self.stats["accounting_submitted"] += 1
        self._flush()
        return request_id

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.stats, **{f"client_{k}": v for k, v in
                                               self.client.counters.items()}}
        out.update(pending=len(self._access) + len(self._accounting),
                   local_address=f"{self.local_address[0]}:{self.local_address[1]}",
                   last_error=self.last_error, last_access_rtt=self.last_access_rtt)
        return out

    def close(self) -> None:
        """Stop reading and drop what is pending (no callbacks after close); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self._access.clear()
        self._accounting.clear()

    # pump ------------------------------------------------------------------------------------

    def _readable(self) -> None:
        for _ in range(64):  # a batch, then back to the loop
            try:
                data, src = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error reported on a later call
                self._error("receive_errors", exc)
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                continue
            self.client.receive_datagram(src, data, self.loop.time())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        # asyncio may fire up to one clock resolution early: the deadline is "now"
        now = max(self._deadline or 0.0, self.loop.time())
        self._deadline = None
        self.client.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        if self._closed:
            return
        for dest, datagram in self.client.datagrams_to_send():
            try:
                self.sock.sendto(datagram, dest)
            except OSError as exc:  # one datagram lost; the retransmission timer covers it
                self._error("send_errors", exc)
        while (event := self.client.next_event()) is not None:
            self._dispatch(event)
        self._arm()

    def _dispatch(self, event: object) -> None:
        request_id = getattr(event, "request_id", None)
        if request_id in self._accounting:
            self._accounting.discard(request_id)
            ok = isinstance(event, AccountingAcknowledged)
            self.stats["accounting_acknowledged" if ok else "accounting_failed"] += 1
            if not ok:
                self.last_error = f"accounting: {getattr(event, 'reason', event)}"
            return
        entry = self._access.pop(request_id, None)  # type: ignore[arg-type]
        if entry is None:
            return
        callback, sent = entry
        name = {AccessAccepted: "access_accepted", AccessRejected: "access_rejected",
                AccessChallenged: "access_challenged"}.get(type(event), "access_failed")
        self.stats[name] += 1
        if not isinstance(event, RequestFailed):
            self.last_access_rtt = self.loop.time() - sent
        try:
            callback(event)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - one verdict cannot kill the daemon
            self._error("callback_errors", exc)

    def _arm(self) -> None:
        deadline = self.client.get_timer()
        if deadline == self._deadline and (self._timer is not None or deadline is None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _error(self, counter: str, exc: BaseException) -> None:
        self.stats[counter] += 1
        self.last_error = f"{counter.replace('_', ' ')[:-1]}: {exc}"
