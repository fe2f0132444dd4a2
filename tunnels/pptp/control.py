"""PPTP control connection and calls (RFC 2637 §3), one module for both roles.

In remote access the client is the PNS (it sends Outgoing-Call-Request, as Windows clients and
pptp-linux do: see the captures in tests/data/pptp) and the server is the PAC. The role only
decides who speaks first; the transitions live in `_HANDLERS`, a table from (state, message
type) to a handler, citing the RFC. A message with no entry in the current state is answered as
§3.1 says: ignored with a counter, or, if it breaks the connection, a StopCCRQ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from tunnels.errors import RemoteProtocolError
from tunnels.pptp import messages as m


class ControlState(Enum):
    IDLE = "idle"
    WAIT_CTL_REPLY = "wait_ctl_reply"
    ESTABLISHED = "established"
    WAIT_STOP_REPLY = "wait_stop_reply"
    CLOSED = "closed"


class CallState(Enum):
    WAIT_REPLY = "wait_reply"  # §3.2.1 PNS after OCRQ; §3.3.2 PAC after ICRQ
    WAIT_CONNECT = "wait_connect"  # §3.3.1 PNS after ICRP, until ICCN
    ESTABLISHED = "established"
    CLEARING = "clearing"
    CLOSED = "closed"


@dataclass
class Call:
    call_id: int
    serial: int
    state: CallState
    peer_call_id: int = 0
    peer_window: int = 64
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """Something the stack acts on: kind is one of connected, call-established, call-cleared,
    closed, echo-timeout; `call_id` for call events; `reason` a person can read."""

    kind: str
    call_id: int | None = None
    reason: str = ""


@dataclass
class ControlConnection:
    is_pac: bool
    host_name: str = "vpnlab"
    echo_interval: float = 60.0
    echo_timeout: float = 60.0
    max_calls: int = 0  # 0: no limit (PAC side)
    clear_timeout: float = 10.0  # how long a PNS waits for CDN after its CCRQ
    allocate_call_id: Callable[[], int] | None = None
    state: ControlState = ControlState.IDLE
    calls: dict[int, Call] = field(default_factory=dict)
    peer_vendor: str = ""
    peer_host: str = ""
    reason: str = ""
    _out: list[bytes] = field(default_factory=list)
    _events: list[ControlEvent] = field(default_factory=list)
    _echo_due: float | None = None
    _echo_sent: float | None = None
    _echo_id: int = 0
    _clear_deadline: float | None = None
    _serial: int = 0
    counters: dict[str, int] = field(default_factory=lambda: {"ignored": 0, "malformed": 0})

    # -- API ---------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """PNS: open the control connection (§3.1.1)."""
        self._send(m.StartControlConnectionRequest(host_name=self.host_name))
        self.state = ControlState.WAIT_CTL_REPLY
        self._echo_due = now + self.echo_interval

    def place_call(self, call_id: int, window: int = 64) -> None:
        """PNS: Outgoing-Call-Request (§2.7)."""
        self._serial = (self._serial + 1) & 0xFFFF
        self.calls[call_id] = Call(call_id, self._serial, CallState.WAIT_REPLY)
        self._send(m.OutgoingCallRequest(call_id=call_id, call_serial_number=self._serial,
                                         packet_receive_window=window))

    def incoming_call(self, call_id: int, window: int = 64) -> None:
        """PAC: Incoming-Call-Request (§2.9, §3.3.2), e.g. a dial-in arriving at the PAC."""
        self._serial = (self._serial + 1) & 0xFFFF
        self.calls[call_id] = Call(call_id, self._serial, CallState.WAIT_REPLY)
        self._send(m.IncomingCallRequest(call_id=call_id, call_serial_number=self._serial))

    def clear_call(self, call_id: int, reason: str, now: float = 0.0) -> None:
        """PNS asks with Call-Clear-Request; a PAC notifies with Call-Disconnect-Notify."""
        call = self.calls.get(call_id)
        if call is None or call.state is CallState.CLOSED:
            return
        call.reason = reason
        if self.is_pac:
            self._send(m.CallDisconnectNotify(call_id=call_id,
                                              result_code=m.DisconnectResult.ADMIN_SHUTDOWN,
                                              call_statistics=reason[:128]))
            self._call_closed(call, reason)
        else:
            call.state = CallState.CLEARING
            self._send(m.CallClearRequest(call_id=call_id))
            if self._clear_deadline is None:
                self._clear_deadline = now + self.clear_timeout

    def stop(self, reason: str, code: int = m.StopReason.NONE) -> None:
        if self.state in (ControlState.CLOSED, ControlState.WAIT_STOP_REPLY):
            return
        self.reason = reason
        self._send(m.StopControlConnectionRequest(reason=code))
        self.state = ControlState.WAIT_STOP_REPLY

    def receive(self, data: bytes, stream: m.ControlStream, now: float) -> None:
        try:
            messages = stream.feed(data)
        except RemoteProtocolError as exc:
            self.counters["malformed"] += 1
            self._fail(f"malformed control message: {exc}", m.StopReason.STOP_PROTOCOL)
            return
        for message in messages:
            self._echo_due = now + self.echo_interval  # any message proves the peer alive
            self._echo_sent = None
            handler = _HANDLERS.get((self.state, message.TYPE))
            if handler is None:
                self.counters["ignored"] += 1
            else:
                handler(self, message, now)

    def get_timer(self) -> float | None:
        if self._echo_sent is not None:
            echo = self._echo_sent + self.echo_timeout
        else:
            echo = self._echo_due if self.state is ControlState.ESTABLISHED else None
        if self._clear_deadline is None or self.state is ControlState.CLOSED:
            return echo
        return self._clear_deadline if echo is None else min(echo, self._clear_deadline)

    def handle_timer(self, now: float) -> None:
        if self._clear_deadline is not None and now >= self._clear_deadline:
            self._clear_deadline = None
            for call in [c for c in self.calls.values() if c.state is CallState.CLEARING]:
                call.reason += (f" (no Call-Disconnect-Notify within {self.clear_timeout:g}s,"
                                " cleared locally)")
                self._call_closed(call, call.reason)
        if self._echo_sent is not None and now >= self._echo_sent + self.echo_timeout:
            self._echo_sent = None
            self._fail(f"no answer to the control connection's Echo-Request within "
                       f"{self.echo_timeout:g}s: the peer or the path is gone", None)
        elif (self.state is ControlState.ESTABLISHED and self._echo_due is not None
              and now >= self._echo_due):
            self._echo_id += 1
            self._send(m.EchoRequest(identifier=self._echo_id))
            self._echo_sent = now

    def messages_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ControlEvent]:
        out, self._events = self._events, []
        return out

    # -- internals ---------------------------------------------------------------------------
    def _send(self, message: m.ControlMessage) -> None:
        self._out.append(message.encode())

    def _fail(self, reason: str, stop_code: int | None) -> None:
        if stop_code is not None and self.state not in (ControlState.CLOSED,):
            self._send(m.StopControlConnectionRequest(reason=stop_code))
        self._closed(reason)

    def _closed(self, reason: str) -> None:
        for call in list(self.calls.values()):
            self._call_closed(call, reason)
        if self.state is not ControlState.CLOSED:
            self.state = ControlState.CLOSED
            self.reason = self.reason or reason
            self._events.append(ControlEvent("closed", reason=self.reason))

    def _call_closed(self, call: Call, reason: str) -> None:
        if call.state is not CallState.CLOSED:
            call.state = CallState.CLOSED
            call.reason = call.reason or reason
            self._events.append(ControlEvent("call-cleared", call.call_id, call.reason))
        self.calls.pop(call.call_id, None)
        if not any(c.state is CallState.CLEARING for c in self.calls.values()):
            self._clear_deadline = None

    def _on_sccrq(self, msg: m.StartControlConnectionRequest, now: float) -> None:
        """§3.1.2: a PAC answers; a version other than 1.0 gets result 5 and the close."""
        if msg.protocol_version != m.PROTOCOL_VERSION:
            self._send(m.StartControlConnectionReply(
                result_code=m.StartResult.BAD_PROTOCOL_VERSION, host_name=self.host_name))
            self._closed(f"peer's protocol version {msg.protocol_version:#06x} not supported")
            return
        self.peer_vendor, self.peer_host = msg.vendor_string, msg.host_name
        self._send(m.StartControlConnectionReply(host_name=self.host_name))
        self.state = ControlState.ESTABLISHED
        self._events.append(ControlEvent("connected"))

    def _on_second_sccrq(self, msg: m.ControlMessage, now: float) -> None:
        """A second SCCRQ on an established connection: result 3, "already exists"."""
        self._send(m.StartControlConnectionReply(result_code=m.StartResult.ALREADY_EXISTS,
                                                 host_name=self.host_name))

    def _on_sccrp(self, msg: m.StartControlConnectionReply, now: float) -> None:
        if msg.result_code != m.StartResult.SUCCESSFUL:
            name = m.StartResult(msg.result_code).name if msg.result_code in \
                m.StartResult._value2member_map_ else str(msg.result_code)
            self._closed(f"server refused the control connection: result {name}")
            return
        self.peer_vendor, self.peer_host = msg.vendor_string, msg.host_name
        self.state = ControlState.ESTABLISHED
        self._events.append(ControlEvent("connected"))

    def _on_stopccrq(self, msg: m.ControlMessage, now: float) -> None:
        self._send(m.StopControlConnectionReply())
        reason = getattr(msg, "reason", m.StopReason.NONE)
        why = _STOP_REASONS.get(reason, f"reason {reason}") if reason != m.StopReason.NONE \
            else None
        self._closed("peer stopped the control connection" + (f" ({why})" if why else ""))

    def _on_stopccrp(self, msg: m.ControlMessage, now: float) -> None:
        self._closed(self.reason or "control connection stopped")

    def _on_echo_request(self, msg: m.EchoRequest, now: float) -> None:
        self._send(m.EchoReply(identifier=msg.identifier))

    def _on_echo_reply(self, msg: m.ControlMessage, now: float) -> None:
        pass  # receive() already reset the keepalive

    def _on_ocrq(self, msg: m.OutgoingCallRequest, now: float) -> None:
        """§3.2.2 (PAC): answer with our Call ID, or busy/no-resources when full."""
        if not self.is_pac:
            self.counters["ignored"] += 1
            return
        call_id = self._accept_call_id()  # 0: the server's ports are all in use
        if not call_id:
            self._send(m.OutgoingCallReply(peer_call_id=msg.call_id,
                                           result_code=m.CallResult.BUSY,
                                           error_code=m.GeneralError.NO_RESOURCE))
            return
        call = Call(call_id, msg.call_serial_number, CallState.ESTABLISHED, msg.call_id,
                    msg.packet_receive_window)
        self.calls[call_id] = call
        self._send(m.OutgoingCallReply(call_id=call_id, peer_call_id=msg.call_id))
        self._events.append(ControlEvent("call-established", call_id))

    def _on_ocrp(self, msg: m.OutgoingCallReply, now: float) -> None:
        call = self.calls.get(msg.peer_call_id)
        if call is None or call.state is not CallState.WAIT_REPLY:
            self.counters["ignored"] += 1
            return
        if msg.result_code != m.CallResult.CONNECTED:
            result = m.CallResult(msg.result_code).name if msg.result_code in \
                m.CallResult._value2member_map_ else str(msg.result_code)
            self._call_closed(call, f"server refused the call: result {result}")
            return
        call.peer_call_id, call.peer_window = msg.call_id, msg.packet_receive_window
        call.state = CallState.ESTABLISHED
        self._send(m.SetLinkInfo(peer_call_id=msg.call_id, send_accm=0, receive_accm=0))
        self._events.append(ControlEvent("call-established", call.call_id))

    def _accept_call_id(self) -> int:
        """A fresh Call ID, or 0 when we take no (more) calls (§3.2.2 / §3.3.1)."""
        if self.allocate_call_id is None or (self.max_calls and
                                             len(self.calls) >= self.max_calls):
            return 0
        return self.allocate_call_id()

    def _on_icrq(self, msg: m.IncomingCallRequest, now: float) -> None:
        """§3.3.1 (PNS): accept with ICRP and wait for ICCN, or refuse "do not accept"."""
        if self.is_pac:
            self.counters["ignored"] += 1
            return
        call_id = self._accept_call_id()
        if not call_id:
            self._send(m.IncomingCallReply(peer_call_id=msg.call_id,
                                           result_code=m.IncomingCallResult.DO_NOT_ACCEPT,
                                           error_code=m.GeneralError.NO_RESOURCE))
            return
        self.calls[call_id] = Call(call_id, msg.call_serial_number, CallState.WAIT_CONNECT,
                                   msg.call_id)
        self._send(m.IncomingCallReply(call_id=call_id, peer_call_id=msg.call_id))

    def _on_icrp(self, msg: m.IncomingCallReply, now: float) -> None:
        """§3.3.2 (PAC): the PNS accepted (send ICCN, call up) or refused (call gone)."""
        call = self.calls.get(msg.peer_call_id)
        if not self.is_pac or call is None or call.state is not CallState.WAIT_REPLY:
            self.counters["ignored"] += 1
            return
        if msg.result_code != m.IncomingCallResult.CONNECT:
            self._call_closed(call, f"peer refused the incoming call: result {msg.result_code}")
            return
        call.peer_call_id, call.peer_window = msg.call_id, msg.packet_receive_window
        call.state = CallState.ESTABLISHED
        self._send(m.IncomingCallConnected(peer_call_id=msg.call_id))
        self._events.append(ControlEvent("call-established", call.call_id))

    def _on_iccn(self, msg: m.IncomingCallConnected, now: float) -> None:
        """§3.3.1 (PNS): the PAC says the incoming call is connected."""
        call = self.calls.get(msg.peer_call_id)
        if self.is_pac or call is None or call.state is not CallState.WAIT_CONNECT:
            self.counters["ignored"] += 1
            return
        call.peer_window = msg.packet_receive_window
        call.state = CallState.ESTABLISHED
        self._events.append(ControlEvent("call-established", call.call_id))

    def _on_ccrq(self, msg: m.CallClearRequest, now: float) -> None:
        """§2.12 (PAC): the PNS hangs up; the PAC answers with Call-Disconnect-Notify."""
        for call in list(self.calls.values()):
            if call.peer_call_id == msg.call_id:
                self._send(m.CallDisconnectNotify(call_id=call.call_id,
                                                  result_code=m.DisconnectResult.REQUEST))
                self._call_closed(call, "client cleared the call")

    def _on_cdn(self, msg: m.CallDisconnectNotify, now: float) -> None:
        """§3.2.6: the CDN carries the PAC's Call ID. Linux's NAT PPTP helper rewrites that
        field as if it were ours (nf_nat_pptp.c pptp_inbound_pkt: for CALL_DISCONNECT_NOTIFY
        `pcid = &disc.callID`, the PNS's Call ID put back), so behind such a NAT the CDN
        names our own Call ID: accepted too, and counted."""
        calls = [c for c in self.calls.values() if c.peer_call_id == msg.call_id]
        if not calls and msg.call_id in self.calls:
            calls = [self.calls[msg.call_id]]
            self.counters["cdn_with_own_call_id"] = self.counters.get("cdn_with_own_call_id",
                                                                      0) + 1
        for call in calls:
            self._call_closed(call, f"server disconnected the call (result "
                                    f"{msg.result_code}): {msg.call_statistics}".rstrip(": "))

    def _on_ignored(self, msg: m.ControlMessage, now: float) -> None:
        pass  # SLI, WEN: informational for a PPP-over-IP call


_Handler = Callable[[ControlConnection, m.ControlMessage, float], None]
T, C = m.ControlMessageType, ControlState
_HANDLERS: dict[tuple[ControlState, m.ControlMessageType], _Handler] = {
    (C.IDLE, T.SCCRQ): ControlConnection._on_sccrq,  # §3.1.2 listener
    (C.WAIT_CTL_REPLY, T.SCCRP): ControlConnection._on_sccrp,  # §3.1.1 originator
    (C.WAIT_CTL_REPLY, T.StopCCRQ): ControlConnection._on_stopccrq,
    (C.ESTABLISHED, T.SCCRQ): ControlConnection._on_second_sccrq,
    (C.ESTABLISHED, T.StopCCRQ): ControlConnection._on_stopccrq,
    (C.ESTABLISHED, T.ECHORQ): ControlConnection._on_echo_request,
    (C.ESTABLISHED, T.ECHORP): ControlConnection._on_echo_reply,
    (C.ESTABLISHED, T.OCRQ): ControlConnection._on_ocrq,  # §3.2.2 PAC
    (C.ESTABLISHED, T.OCRP): ControlConnection._on_ocrp,  # §3.2.1 PNS
    (C.ESTABLISHED, T.ICRQ): ControlConnection._on_icrq,  # §3.3.1 PNS
    (C.ESTABLISHED, T.ICRP): ControlConnection._on_icrp,  # §3.3.2 PAC
    (C.ESTABLISHED, T.ICCN): ControlConnection._on_iccn,  # §3.3.1 PNS
    (C.ESTABLISHED, T.CCRQ): ControlConnection._on_ccrq,
    (C.ESTABLISHED, T.CDN): ControlConnection._on_cdn,
    (C.ESTABLISHED, T.SLI): ControlConnection._on_ignored,
    (C.ESTABLISHED, T.WEN): ControlConnection._on_ignored,
    (C.WAIT_STOP_REPLY, T.StopCCRP): ControlConnection._on_stopccrp,
    (C.WAIT_STOP_REPLY, T.StopCCRQ): ControlConnection._on_stopccrq,
    (C.WAIT_STOP_REPLY, T.ECHORQ): ControlConnection._on_echo_request,
}


# RFC 2637 §2.3's StopCCRQ Reasons, in the words a call's end is reported with
_STOP_REASONS = {m.StopReason.STOP_PROTOCOL: "reason 2: protocol version not supported",
                 m.StopReason.STOP_LOCAL_SHUTDOWN: "reason 3: the peer is shutting down"}
