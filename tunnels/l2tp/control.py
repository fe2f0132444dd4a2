"""One L2TP tunnel (control connection) and its sessions (RFC 2661 §5, §7), both roles.

Role is configuration, not a fork (style.md 4): `initiator` says who sends SCCRQ; which side
places a call and how (`TunnelConfig.call_mode`: Incoming-Call, as real LACs do, or the
chapter's Outgoing-Call-Request from the client) is a per-session choice. The transitions live
in two tables, `_TUNNEL` and `_SESSION`, from (state, message type) to a handler, citing
§7.2-§7.5. A message with no entry in the current state is an FSM error (§7.2: StopCCN result 7
for tunnel messages; CDN for session messages); an unknown mandatory AVP tears down what the
message belongs to with error 8 (§4.1); an unknown optional one is ignored (counted).

Reliable delivery (§5.8) is `ReliableChannel`: this module hands it payloads and receives them
back in order; it never sees a retransmission. Nothing here reads a clock or touches a socket:
`receive_control(packet, now)`, `handle_timer(now)`, then `packets_to_send(now)` and `events()`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.l2tp.avp import AVP, AVPType, CDNResult, GeneralError, ResultCode, StopCCNResult
from tunnels.l2tp.messages import (TUNNEL_MESSAGES, ControlMessage, ControlPacket,
                                   MessageType)
from tunnels.l2tp.reliable import ReliableChannel

PROTOCOL_VERSION = 0x0100  # §4.4.3: version 1, revision 0
FRAMING_SYNC, FRAMING_ASYNC = 1, 2  # §4.4.3 Framing Capabilities / §4.4.5 Framing Type
BEARER_DIGITAL, BEARER_ANALOG = 1, 2
# AVPs we hide (§4.3) when asked to: the call's identity and parameters, never the AVPs the
# RFC requires in clear (Message Type, Random Vector) or those a peer needs before it can
# know the secret is shared (Protocol Version, Host Name, Challenge, Challenge Response).
HIDEABLE = frozenset({AVPType.ASSIGNED_TUNNEL_ID, AVPType.ASSIGNED_SESSION_ID,
                      AVPType.CALL_SERIAL_NUMBER, AVPType.CALLING_NUMBER,
                      AVPType.CALLED_NUMBER, AVPType.TX_CONNECT_SPEED, AVPType.FRAMING_TYPE,
                      AVPType.BEARER_TYPE, AVPType.RESULT_CODE})


class TunnelState(Enum):
    IDLE = "idle"
    WAIT_CTL_REPLY = "wait-ctl-reply"  # §7.2 initiator after SCCRQ
    WAIT_CTL_CONN = "wait-ctl-conn"  # §7.2 responder after SCCRP
    ESTABLISHED = "established"
    CLOSING = "closing"  # StopCCN sent or received; lingering for retransmissions (§5.7)
    CLOSED = "closed"


class SessionState(Enum):
    WAIT_TUNNEL = "wait-tunnel"  # §7.4/§7.5 wait-tunnel: the call waits for the tunnel
    WAIT_REPLY = "wait-reply"  # originator after ICRQ / OCRQ
    WAIT_CONNECT = "wait-connect"  # ICRQ answerer after ICRP; OCRQ originator after OCRP
    ESTABLISHED = "established"
    CLOSED = "closed"


class CallMode(Enum):
    INCOMING = "incoming"  # ICRQ/ICRP/ICCN (§5.2.1): what Windows and xl2tpd LACs send
    OUTGOING = "outgoing"  # OCRQ/OCRP/OCCN (§5.2.2), the chapter's Table 9.6


@dataclass(frozen=True)
class TunnelConfig:
    host_name: str = "vpnlab"
    vendor_name: str = "vpnlab"
    secret: bytes | None = None  # tunnel authentication (§5.1.1) and hidden AVPs (§4.3)
    hide_avps: bool = False
    receive_window: int = 16
    hello_interval: float = 60.0  # §6.5: a Hello after this long without a message
    retransmit_initial: float = 1.0
    retransmit_cap: float = 8.0
    max_retransmits: int = 5
    ack_delay: float = 0.1
    linger: float = 31.0  # §5.7: hold a closed tunnel's state for one retransmission cycle
    call_mode: CallMode = CallMode.INCOMING
    data_sequencing: bool = False  # ask the peer for sequenced data (Sequencing Required)
    max_sessions: int = 0  # 0: no limit

    def __post_init__(self) -> None:
        if self.hide_avps and not self.secret:
            raise LocalProtocolError("TunnelConfig.hide_avps: hidden AVPs need a tunnel secret")
        if not 1 <= self.receive_window <= 0xFFFF:
            raise LocalProtocolError(f"TunnelConfig.receive_window={self.receive_window}: "
                                     "expected 1..65535")


@dataclass(frozen=True, slots=True)
class TunnelEvent:
    """What the stack acts on. kind: tunnel-up, tunnel-down, session-up, session-down,
    session-refused (an incoming request we turned away), link-info (SLI), call-errors (WEN)."""

    kind: str
    session_id: int | None = None
    reason: str = ""
    detail: tuple = ()


@dataclass
class Session:
    session_id: int  # ours
    originator: bool
    mode: CallMode
    state: SessionState
    serial: int = 0
    peer_session_id: int = 0
    sequencing: bool = False  # send Ns/Nr on data (the peer asked, or we did)
    reason: str = ""
    data_ns: int = 0  # next data Ns we send
    data_nr: int = 0  # next data Ns we expect
    called_number: str = ""  # OCRQ's Called Number
    counters: dict[str, int] = field(default_factory=lambda: {
        "data_in": 0, "data_out": 0, "data_out_of_order": 0})


class Tunnel:
    """A control connection: the FSMs of §7.2 (tunnel) and §7.4/§7.5 (sessions)."""

    def __init__(self, config: TunnelConfig, tunnel_id: int, initiator: bool,
                 allocate_session_id: Callable[[], int] | None = None,
                 random: Callable[[int], bytes] = os.urandom):
        self.config = config
        self.tunnel_id = tunnel_id
        self.initiator = initiator
        self.random = random
        self.allocate_session_id = allocate_session_id or self._random_session_id
        self.state = TunnelState.IDLE
        self.peer_tunnel_id = 0
        self.peer_host = ""
        self.peer_vendor = ""
        self.peer_framing = 0
        self.sessions: dict[int, Session] = {}  # by our Session ID
        self.reason = ""
        self.channel = ReliableChannel(config.receive_window, 4, config.retransmit_initial,
                                       config.retransmit_cap, config.max_retransmits,
                                       config.ack_delay)
        self._events: list[TunnelEvent] = []
        self._challenge: bytes | None = None  # the one we sent, awaiting a response
        self._hello_due: float | None = None
        self._linger_until: float | None = None
        self.stopped_by_peer = False  # its StopCCN ended the tunnel: ours to re-ack (§5.7)
        self._serial = 0
        self._spoken = False  # we sent SCCRQ or heard the peer: a StopCCN has someone to go to
        self.counters = {"messages_in": 0, "unknown_optional_avp": 0, "malformed": 0,
                         "fsm_errors": 0, "hello_sent": 0, "unknown_session": 0}

    # -- API ---------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Initiator: SCCRQ (§5.1, §7.2)."""
        avps = self._start_avps()
        if self.config.secret:
            self._challenge = self.random(16)
            avps.append(AVP.raw(AVPType.CHALLENGE, self._challenge))
        avps.append(AVP.u64(AVPType.TIE_BREAKER,
                            int.from_bytes(self.random(8), "big"), mandatory=False))
        self._send(MessageType.SCCRQ, avps, now)
        self._spoken = True
        self.state = TunnelState.WAIT_CTL_REPLY

    def place_call(self, now: float, mode: CallMode | None = None,
                   called_number: str = "") -> int:
        """Originate a session: ICRQ or OCRQ, once the tunnel is up (queued until then)."""
        session_id = self.allocate_session_id()
        if not session_id:
            raise LocalProtocolError("no free session ID")
        self._serial = (self._serial + 1) & 0xFFFFFFFF
        session = Session(session_id, True, mode or self.config.call_mode,
                          SessionState.WAIT_TUNNEL, self._serial, called_number=called_number)
        self.sessions[session_id] = session
        if self.state is TunnelState.ESTABLISHED:
            self._send_call_request(session, now)
        return session_id

    def close_session(self, session_id: int, reason: str, now: float,
                      result: int = CDNResult.ADMINISTRATIVE,
                      error: int | None = None) -> None:
        """CDN (§5.6) and the session is gone."""
        session = self.sessions.get(session_id)
        if session is None or session.state is SessionState.CLOSED:
            return
        if session.state is not SessionState.WAIT_TUNNEL and self.state is \
                TunnelState.ESTABLISHED:
            self._send_cdn(session.peer_session_id, session_id, result, error, reason, now)
        self._session_closed(session, reason)

    def stop(self, reason: str, now: float, result: int = StopCCNResult.GENERAL_REQUEST,
             error: int | None = None) -> None:
        """StopCCN (§5.7): every session goes with the tunnel."""
        if self.state in (TunnelState.CLOSING, TunnelState.CLOSED):
            return
        if self.state is not TunnelState.IDLE or self._spoken:
            self._send(MessageType.StopCCN, [
                AVP.u16(AVPType.ASSIGNED_TUNNEL_ID, self.tunnel_id),
                AVP.raw(AVPType.RESULT_CODE,
                        ResultCode(result, error, reason[:128]).encode())], now)
        self._closing(reason, now)

    def send_link_info(self, session_id: int, send_accm: int, receive_accm: int,
                       now: float) -> None:
        """SLI (§6.14): an LNS tells the LAC the ACCM PPP negotiated."""
        session = self.sessions.get(session_id)
        if session is not None and session.state is SessionState.ESTABLISHED:
            value = (b"\0\0" + send_accm.to_bytes(4, "big") + receive_accm.to_bytes(4, "big"))
            self._send(MessageType.SLI, [AVP.raw(AVPType.ACCM, value)], now,
                       session.peer_session_id)

    def receive_control(self, packet: ControlPacket, now: float) -> None:
        # The header's Session ID travels with the payload through reordering (§3.1).
        data = _tag(packet.session_id) + packet.payload if packet.payload else b""
        for tagged in self.channel.receive(packet.ns, packet.nr, data, now):
            if self.state is TunnelState.CLOSED:
                break
            self._hello_due = now + self.config.hello_interval
            self._spoken = True
            session_id, payload = _untag(tagged)
            self._deliver(payload, session_id, now)
        self._check_channel(now)

    def packets_to_send(self, now: float) -> list[bytes]:
        return [ControlPacket(self.peer_tunnel_id, out.session_id, out.ns, out.nr,
                              out.payload).encode()
                for out in self._outbound(now)]

    def events(self) -> list[TunnelEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        deadlines = [d for d in (self.channel.get_timer(), self._hello_deadline(),
                                 self._linger_until) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        if self._linger_until is not None and now >= self._linger_until:
            self._linger_until = None
            self.state = TunnelState.CLOSED
            return
        self._check_channel(now)
        hello = self._hello_deadline()
        if hello is not None and now >= hello and not self.channel.failed:
            # §6.5: a keepalive; if it is never acknowledged the channel fails and the
            # tunnel is torn down (§5.8)
            self._hello_due = now + self.config.hello_interval
            if self.channel.idle():
                # §6.5: a Hello only when nothing is in flight; an unacknowledged message
                # already proves or disproves the peer (the channel fails after §5.8's cycle)
                self.counters["hello_sent"] += 1
                self._send(MessageType.HELLO, [], now)
        self._check_channel(now)

    @property
    def closed(self) -> bool:
        return self.state is TunnelState.CLOSED

    def status(self) -> dict:
        return {"tunnel_id": self.tunnel_id, "peer_tunnel_id": self.peer_tunnel_id,
                "state": self.state.value, "peer_host": self.peer_host,
                "peer_vendor": self.peer_vendor, "sessions": len(self.sessions),
                "reason": self.reason, "counters": dict(self.counters),
                "channel": dict(self.channel.counters)}

    # -- sending -------------------------------------------------------------------------------
    def _start_avps(self) -> list[AVP]:
        c = self.config
        avps = [AVP.u16(AVPType.PROTOCOL_VERSION, PROTOCOL_VERSION),
                AVP.u32(AVPType.FRAMING_CAPABILITIES, FRAMING_SYNC | FRAMING_ASYNC),
                AVP.u32(AVPType.BEARER_CAPABILITIES, 0),
                AVP.u16(AVPType.FIRMWARE_REVISION, 0x0100, mandatory=False),
                AVP.string(AVPType.HOST_NAME, c.host_name),
                AVP.string(AVPType.VENDOR_NAME, c.vendor_name, mandatory=False),
                AVP.u16(AVPType.ASSIGNED_TUNNEL_ID, self.tunnel_id),
                AVP.u16(AVPType.RECEIVE_WINDOW_SIZE, c.receive_window)]
        return avps

    def _send(self, message_type: MessageType, avps: list[AVP], now: float,
              session_id: int = 0) -> None:
        if self.config.hide_avps:
            avps = [AVP(a.attr_type, a.value, a.mandatory, True, a.vendor_id)
                    if a.vendor_id == 0 and a.attr_type in HIDEABLE else a for a in avps]
        payload = ControlMessage(message_type, tuple(avps)).encode(self.config.secret,
                                                                   self.random)
        # The header's Session ID goes with the payload: §3.1 sets it per message.
        self.channel.send(_tag(session_id) + payload, now)

    def _outbound(self, now: float):
        for out in self.channel.outbound(now):
            session_id, payload = _untag(out.payload)
            yield _Out(out.ns, out.nr, session_id, payload)

    def _send_call_request(self, session: Session, now: float) -> None:
        serial = AVP.u32(AVPType.CALL_SERIAL_NUMBER, session.serial)
        sid = AVP.u16(AVPType.ASSIGNED_SESSION_ID, session.session_id)
        if session.mode is CallMode.INCOMING:
            self._send(MessageType.ICRQ, [sid, serial,
                                          AVP.u32(AVPType.BEARER_TYPE, BEARER_DIGITAL)], now)
        else:
            self._send(MessageType.OCRQ, [
                sid, serial, AVP.u32(AVPType.MINIMUM_BPS, 0),
                AVP.u32(AVPType.MAXIMUM_BPS, 100_000_000),
                AVP.u32(AVPType.BEARER_TYPE, BEARER_DIGITAL),
                AVP.u32(AVPType.FRAMING_TYPE, FRAMING_SYNC),
                AVP.string(AVPType.CALLED_NUMBER, session.called_number)], now)
        session.state = SessionState.WAIT_REPLY

    def _connected_avps(self) -> list[AVP]:
        avps = [AVP.u32(AVPType.TX_CONNECT_SPEED, 100_000_000),
                AVP.u32(AVPType.FRAMING_TYPE, FRAMING_SYNC)]
        if self.config.data_sequencing:
            avps.append(AVP.raw(AVPType.SEQUENCING_REQUIRED, b""))
        return avps

    def _send_cdn(self, peer_session_id: int, session_id: int, result: int,
                  error: int | None, reason: str, now: float) -> None:
        self._send(MessageType.CDN, [
            AVP.raw(AVPType.RESULT_CODE, ResultCode(result, error, reason[:128]).encode()),
            AVP.u16(AVPType.ASSIGNED_SESSION_ID, session_id)], now, peer_session_id)

    # -- receiving -----------------------------------------------------------------------------
    def _deliver(self, tagged: bytes, header_session_id: int, now: float) -> None:
        self.counters["messages_in"] += 1
        try:
            message = ControlMessage.decode(tagged, self.config.secret)
        except RemoteProtocolError as exc:
            self.counters["malformed"] += 1
            self._answer_error(exc, header_session_id, now)
            return
        unknown = message.unknown_mandatory()
        if unknown is not None:
            text = (f"unknown mandatory AVP {unknown.attr_type} (vendor {unknown.vendor_id}) "
                    f"in {_name(message.message_type)}")
            self._reject(message, header_session_id, text, GeneralError.UNKNOWN_MANDATORY_AVP,
                         now)
            return
        missing = message.missing_required()
        if missing:
            text = (f"{_name(message.message_type)} without required AVP "
                    f"{', '.join(a.name for a in missing)}")
            self._reject(message, header_session_id, text, GeneralError.BAD_LENGTH, now)
            return
        mtype = message.message_type
        if mtype in TUNNEL_MESSAGES:
            handler = _TUNNEL.get((self.state, mtype))
            if handler is None:
                self._fsm_error(message, now)
            else:
                handler(self, message, now)
            return
        self._on_session_message(message, header_session_id, now)

    def _answer_error(self, exc: RemoteProtocolError, header_session_id: int,
                      now: float) -> None:
        answer = exc.wire_answer
        if answer is None or answer.kind == "discard":
            return
        rc = answer.detail if isinstance(answer.detail, ResultCode) else \
            ResultCode(StopCCNResult.GENERAL_ERROR, GeneralError.OUT_OF_RANGE, str(exc))
        session = self._session_by_header(header_session_id)
        if answer.kind == "cdn" and session is not None:
            self.close_session(session.session_id, rc.message or str(exc), now,
                               CDNResult.GENERAL_ERROR, rc.error)
        elif answer.kind in ("stop-ccn", "cdn"):
            self.stop(f"malformed control message: {exc}", now, StopCCNResult.GENERAL_ERROR,
                      rc.error)

    def _reject(self, message: ControlMessage, header_session_id: int, text: str,
                error: int, now: float) -> None:
        """§4.1: what the message belonged to is torn down with the general error."""
        if message.message_type in TUNNEL_MESSAGES or message.message_type not in \
                MessageType._value2member_map_:
            self.stop(text, now, StopCCNResult.GENERAL_ERROR, error)
            return
        session = self._session_by_header(header_session_id)
        if session is not None:
            self.close_session(session.session_id, text, now, CDNResult.GENERAL_ERROR, error)
            return
        sid = message.get(AVPType.ASSIGNED_SESSION_ID)
        if sid is not None:  # a new call we refuse outright
            self._send_cdn(sid.as_u16(), 0, CDNResult.GENERAL_ERROR, error, text, now)
            self._events.append(TunnelEvent("session-refused", None, text))

    def _fsm_error(self, message: ControlMessage, now: float) -> None:
        self.counters["fsm_errors"] += 1
        if message.message_type == MessageType.SCCRQ:
            # §7.2 / result 3: a second SCCRQ on a live control connection
            self.stop("SCCRQ on an existing control connection", now,
                      StopCCNResult.ALREADY_EXISTS)
            return
        if self.state in (TunnelState.CLOSING, TunnelState.CLOSED):
            return
        self.stop(f"{_name(message.message_type)} not expected in state {self.state.value}",
                  now, StopCCNResult.FSM_ERROR)

    # -- tunnel handlers (§7.2) -----------------------------------------------------------------
    def _accept_start(self, msg: ControlMessage, now: float) -> str | None:
        """Checks an SCCRQ/SCCRP; returns a refusal reason (StopCCN sent) or None."""
        version = msg.get(AVPType.PROTOCOL_VERSION)
        self.peer_tunnel_id = msg.get(AVPType.ASSIGNED_TUNNEL_ID).as_u16()
        if version is None or version.as_u16() != PROTOCOL_VERSION:
            got = f"{version.as_u16():#06x}" if version else "none"
            reason = f"peer's L2TP protocol version {got} not supported (1.0 is)"
            self.stop(reason, now, StopCCNResult.BAD_PROTOCOL_VERSION)
            return reason
        if self.peer_tunnel_id == 0:
            reason = "peer assigned Tunnel ID 0"
            self.stop(reason, now, StopCCNResult.GENERAL_ERROR, GeneralError.OUT_OF_RANGE)
            return reason
        host = msg.get(AVPType.HOST_NAME)
        self.peer_host = host.as_string() if host else ""
        vendor = msg.get(AVPType.VENDOR_NAME)
        self.peer_vendor = vendor.as_string() if vendor else ""
        self.peer_framing = msg.get(AVPType.FRAMING_CAPABILITIES).as_u32()
        rws = msg.get(AVPType.RECEIVE_WINDOW_SIZE)
        if rws is not None and rws.as_u16() > 0:
            self.channel.set_peer_window(rws.as_u16())
        return None

    def _challenge_response(self, msg: ControlMessage, response_type: int) -> AVP | None:
        """§5.1.1: answer the peer's Challenge with MD5(type, secret, challenge)."""
        challenge = msg.get(AVPType.CHALLENGE)
        if challenge is None:
            return None
        digest = _chap(response_type, self.config.secret or b"", challenge.value)
        return AVP.raw(AVPType.CHALLENGE_RESPONSE, digest)

    def _check_response(self, msg: ControlMessage, response_type: int, now: float) -> bool:
        """Our Challenge must come back answered with our secret, or StopCCN result 4."""
        if self._challenge is None:
            return True
        got = msg.get(AVPType.CHALLENGE_RESPONSE)
        if got is not None and got.value == _chap(response_type, self.config.secret or b"",
                                                  self._challenge):
            return True
        why = "no Challenge Response" if got is None else "wrong Challenge Response"
        self.stop(f"tunnel authentication failed: {why} (is the tunnel secret the same on "
                  "both ends?)", now, StopCCNResult.NOT_AUTHORIZED)
        return False

    def _needs_secret(self, msg: ControlMessage, now: float) -> bool:
        if msg.get(AVPType.CHALLENGE) is not None and not self.config.secret:
            self.stop("the peer asks for tunnel authentication and we have no tunnel secret",
                      now, StopCCNResult.NOT_AUTHORIZED)
            return True
        return False

    def _on_sccrq(self, msg: ControlMessage, now: float) -> None:
        if self._accept_start(msg, now) is not None or self._needs_secret(msg, now):
            return
        avps = self._start_avps()
        response = self._challenge_response(msg, MessageType.SCCRP)
        if response is not None:
            avps.append(response)
        if self.config.secret:
            self._challenge = self.random(16)
            avps.append(AVP.raw(AVPType.CHALLENGE, self._challenge))
        self._send(MessageType.SCCRP, avps, now)
        self.state = TunnelState.WAIT_CTL_CONN

    def _on_sccrp(self, msg: ControlMessage, now: float) -> None:
        if self._accept_start(msg, now) is not None or not self._check_response(
                msg, MessageType.SCCRP, now) or self._needs_secret(msg, now):
            return
        response = self._challenge_response(msg, MessageType.SCCCN)
        self._send(MessageType.SCCCN, [response] if response else [], now)
        self._established(now)

    def _on_scccn(self, msg: ControlMessage, now: float) -> None:
        if self._check_response(msg, MessageType.SCCCN, now):
            self._established(now)

    def _established(self, now: float) -> None:
        self.state = TunnelState.ESTABLISHED
        self._hello_due = now + self.config.hello_interval
        self._events.append(TunnelEvent("tunnel-up"))
        for session in list(self.sessions.values()):
            if session.state is SessionState.WAIT_TUNNEL:
                self._send_call_request(session, now)

    def _on_stopccn(self, msg: ControlMessage, now: float) -> None:
        rc = _result(msg)
        text = f"peer stopped the tunnel: {_describe(rc, StopCCNResult)}"
        self.stopped_by_peer = True
        self._closing(text, now)

    def _on_hello(self, msg: ControlMessage, now: float) -> None:
        pass  # receiving it reset our keepalive; the channel acknowledges it

    # -- session handlers (§7.4, §7.5) -----------------------------------------------------------
    def _session_by_header(self, session_id: int) -> Session | None:
        return self.sessions.get(session_id) if session_id else None

    def _on_session_message(self, msg: ControlMessage, header_session_id: int,
                            now: float) -> None:
        if self.state is not TunnelState.ESTABLISHED:
            self._fsm_error(msg, now)
            return
        mtype = msg.message_type
        if mtype in (MessageType.ICRQ, MessageType.OCRQ):
            self._on_call_request(msg, now)
            return
        session = self._session_by_header(header_session_id)
        if session is None:
            self.counters["unknown_session"] += 1
            if mtype != MessageType.CDN:
                sid = msg.get(AVPType.ASSIGNED_SESSION_ID)
                self._send_cdn(sid.as_u16() if sid else 0, 0, CDNResult.GENERAL_ERROR,
                               GeneralError.INVALID_SESSION_ID,
                               f"{_name(mtype)} for unknown session {header_session_id}", now)
            return
        handler = _SESSION.get((session.state, session.originator, session.mode, mtype))
        if handler is None:
            handler = _ANY_SESSION_STATE.get(mtype)
        if handler is None:
            self.counters["fsm_errors"] += 1
            self.close_session(session.session_id,
                               f"{_name(mtype)} not expected in session state "
                               f"{session.state.value}", now, CDNResult.GENERAL_ERROR,
                               GeneralError.OUT_OF_RANGE)
            return
        handler(self, session, msg, now)

    def _on_call_request(self, msg: ControlMessage, now: float) -> None:
        """§7.4 LNS side / §7.5 LAC side: a session the peer originates: ICRQ -> ICRP,
        OCRQ -> OCRP then OCCN (our "dial" succeeds at once: the call is virtual)."""
        peer_sid = msg.get(AVPType.ASSIGNED_SESSION_ID).as_u16()
        mode = CallMode.INCOMING if msg.message_type == MessageType.ICRQ else \
            CallMode.OUTGOING
        full = self.config.max_sessions and len(self.sessions) >= self.config.max_sessions
        session_id = 0 if full or peer_sid == 0 else self.allocate_session_id()
        if not session_id:
            why = "no free session" if peer_sid else "peer assigned Session ID 0"
            self._send_cdn(peer_sid, 0, CDNResult.NO_FACILITIES_TEMPORARY if peer_sid else
                           CDNResult.GENERAL_ERROR, GeneralError.NO_RESOURCES if peer_sid else
                           GeneralError.OUT_OF_RANGE, why, now)
            self._events.append(TunnelEvent("session-refused", None, why))
            return
        serial = msg.get(AVPType.CALL_SERIAL_NUMBER)
        session = Session(session_id, False, mode, SessionState.WAIT_CONNECT,
                          serial.as_u32() if serial else 0, peer_sid)
        self.sessions[session_id] = session
        sid = AVP.u16(AVPType.ASSIGNED_SESSION_ID, session_id)
        if mode is CallMode.INCOMING:
            self._send(MessageType.ICRP, [sid], now, peer_sid)
            return
        self._send(MessageType.OCRP, [sid], now, peer_sid)
        self._send(MessageType.OCCN, self._connected_avps(), now, peer_sid)
        self._session_up(session, msg, now)

    def _on_reply(self, session: Session, msg: ControlMessage, now: float) -> None:
        """ICRP (§7.4, LAC side: send ICCN, up) or OCRP (§7.5, LNS side: wait for OCCN)."""
        session.peer_session_id = msg.get(AVPType.ASSIGNED_SESSION_ID).as_u16()
        if session.mode is CallMode.INCOMING:
            self._send(MessageType.ICCN, self._connected_avps(), now, session.peer_session_id)
            self._session_up(session, msg, now)
        else:
            session.state = SessionState.WAIT_CONNECT

    def _on_connected(self, session: Session, msg: ControlMessage, now: float) -> None:
        """ICCN at the ICRQ answerer (§7.4, LNS side), OCCN at the OCRQ originator (§7.5,
        LNS side)."""
        self._session_up(session, msg, now)

    def _session_up(self, session: Session, msg: ControlMessage, now: float) -> None:
        session.state = SessionState.ESTABLISHED
        session.sequencing = (self.config.data_sequencing or
                              msg.get(AVPType.SEQUENCING_REQUIRED) is not None)
        self._events.append(TunnelEvent("session-up", session.session_id))

    def _on_cdn(self, session: Session, msg: ControlMessage, now: float) -> None:
        rc = _result(msg)
        self._session_closed(session, f"peer disconnected the call: "
                                      f"{_describe(rc, CDNResult)}")

    def _on_sli(self, session: Session, msg: ControlMessage, now: float) -> None:
        accm = msg.get(AVPType.ACCM).value
        self._events.append(TunnelEvent("link-info", session.session_id, "", (accm,)))

    def _on_wen(self, session: Session, msg: ControlMessage, now: float) -> None:
        errors = msg.get(AVPType.CALL_ERRORS).value
        self._events.append(TunnelEvent("call-errors", session.session_id, "", (errors,)))

    # -- teardown ----------------------------------------------------------------------------------
    def _session_closed(self, session: Session, reason: str) -> None:
        if self.sessions.pop(session.session_id, None) is None:
            return
        was_up = session.state is SessionState.ESTABLISHED
        session.state = SessionState.CLOSED
        session.reason = session.reason or reason
        self._events.append(TunnelEvent("session-down", session.session_id, session.reason,
                                        (was_up,)))

    def _closing(self, reason: str, now: float) -> None:
        self.reason = self.reason or reason
        for session in list(self.sessions.values()):
            self._session_closed(session, reason)
        was = self.state
        self.state = TunnelState.CLOSING
        self._hello_due = None
        self._linger_until = now + self.config.linger
        if was is not TunnelState.CLOSING:
            self._events.append(TunnelEvent("tunnel-down", None, self.reason))

    def _check_channel(self, now: float) -> None:
        failed = self.channel.failed
        if failed and self.state is not TunnelState.CLOSED:
            if self.state is not TunnelState.CLOSING:
                self._closing(f"control channel failed: {failed}", now)
            self.state = TunnelState.CLOSED  # nothing more can be delivered
            self._linger_until = None

    def _hello_deadline(self) -> float | None:
        if self.state is not TunnelState.ESTABLISHED or not self.config.hello_interval:
            return None
        return self._hello_due

    def _random_session_id(self) -> int:
        while True:
            sid = int.from_bytes(self.random(2), "big")
            if sid and sid not in self.sessions:
                return sid


@dataclass(frozen=True, slots=True)
class _Out:
    ns: int
    nr: int
    session_id: int
    payload: bytes


def _tag(session_id: int) -> bytes:
    return session_id.to_bytes(2, "big")


def _untag(tagged: bytes) -> tuple[int, bytes]:
    return (int.from_bytes(tagged[:2], "big"), tagged[2:]) if tagged else (0, b"")


def _chap(response_type: int, secret: bytes, challenge: bytes) -> bytes:
    return hashlib.md5(bytes([response_type]) + secret + challenge).digest()


def _name(message_type: int) -> str:
    try:
        return MessageType(message_type).name
    except ValueError:
        return f"message type {message_type}"


def _result(msg: ControlMessage) -> ResultCode | None:
    avp = msg.get(AVPType.RESULT_CODE)
    if avp is None:
        return None
    try:
        return ResultCode.decode(avp.value)
    except RemoteProtocolError:
        return None


def _describe(rc: ResultCode | None, enum: type) -> str:
    if rc is None:
        return "no result code"
    try:
        name = enum(rc.result).name
    except ValueError:
        name = str(rc.result)
    text = f"result {rc.result} ({name})"
    if rc.error:
        try:
            text += f", error {rc.error} ({GeneralError(rc.error).name})"
        except ValueError:
            text += f", error {rc.error}"
    return text + (f": {rc.message}" if rc.message else "")


_TunnelHandler = Callable[[Tunnel, ControlMessage, float], None]
_SessionHandler = Callable[[Tunnel, Session, ControlMessage, float], None]
S, M = TunnelState, MessageType
_TUNNEL: dict[tuple[TunnelState, int], _TunnelHandler] = {
    (S.IDLE, M.SCCRQ): Tunnel._on_sccrq,  # §7.2 responder
    (S.WAIT_CTL_REPLY, M.SCCRP): Tunnel._on_sccrp,  # §7.2 initiator
    (S.WAIT_CTL_CONN, M.SCCCN): Tunnel._on_scccn,  # §7.2 responder
    (S.WAIT_CTL_REPLY, M.StopCCN): Tunnel._on_stopccn,
    (S.WAIT_CTL_CONN, M.StopCCN): Tunnel._on_stopccn,
    (S.ESTABLISHED, M.StopCCN): Tunnel._on_stopccn,
    (S.IDLE, M.StopCCN): Tunnel._on_stopccn,
    (S.CLOSING, M.StopCCN): Tunnel._on_stopccn,  # both ended at once: ack it, linger
    (S.ESTABLISHED, M.HELLO): Tunnel._on_hello,  # §6.5
    (S.WAIT_CTL_CONN, M.HELLO): Tunnel._on_hello,
    (S.CLOSING, M.HELLO): Tunnel._on_hello,
}
SS, CM = SessionState, CallMode
# (state, we originated, call mode, message) -> handler: §7.4's incoming-call states (LAC
# originates, LNS answers) and §7.5's outgoing-call states (LNS originates, LAC answers), for
# whichever of our ends plays each part.
_SESSION: dict[tuple[SessionState, bool, CallMode, int], _SessionHandler] = {
    (SS.WAIT_REPLY, True, CM.INCOMING, M.ICRP): Tunnel._on_reply,
    (SS.WAIT_CONNECT, False, CM.INCOMING, M.ICCN): Tunnel._on_connected,
    (SS.WAIT_REPLY, True, CM.OUTGOING, M.OCRP): Tunnel._on_reply,
    (SS.WAIT_CONNECT, True, CM.OUTGOING, M.OCCN): Tunnel._on_connected,
    (SS.ESTABLISHED, True, CM.INCOMING, M.SLI): Tunnel._on_sli,  # §6.14 LNS -> LAC
    (SS.ESTABLISHED, False, CM.OUTGOING, M.SLI): Tunnel._on_sli,
    (SS.ESTABLISHED, False, CM.INCOMING, M.WEN): Tunnel._on_wen,  # §6.13 LAC -> LNS
    (SS.ESTABLISHED, True, CM.OUTGOING, M.WEN): Tunnel._on_wen,
}
_ANY_SESSION_STATE: dict[int, _SessionHandler] = {M.CDN: Tunnel._on_cdn}  # §5.6
