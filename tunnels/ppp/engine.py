"""The PPP engine: one link's phases, LCP, authentication, IPCP and the IP data path.

Sans-I/O (docs/architecture.md): frames in with `receive_frame`, frames out with
`frames_to_send`, events with `next_event`, one deadline with `get_timer`. The carrier (PPTP's
GRE, L2TP, async HDLC) is invisible here. Malformed or out-of-phase input never raises out of
`receive_frame`: it is answered as RFC 1661 says (Code-Reject, Protocol-Reject) or discarded and
counted.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import deque
from collections.abc import Callable

from tunnels.errors import RemoteProtocolError
from tunnels.ppp import events as ev
from tunnels.ppp.auth import make_authenticator, make_peer
from tunnels.mppe.cipher import MPPEDecryptor, MPPEEncryptor
from tunnels.mppe.keys import derive_start_keys, key_length
from tunnels.ppp.auth.base import AuthExchange, AuthMethod, Authorization, AuthOutcome, Verdict
from tunnels.ppp.ccp import CCPPolicy
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.ppp.events import Phase
from tunnels.ppp.framing import build_frame, split_frame
from tunnels.ppp.fsm import Automaton, State, Timers
from tunnels.ppp.ipcp import IPCPOption, IPCPPolicy
from tunnels.ppp.lcp import LCPPolicy
from tunnels.ppp.packets import Code, ControlPacket

PPP_IP = 0x0021
PPP_MPPE = 0x00FD
PPP_CCP = 0x80FD
PPP_IPCP = 0x8021
PPP_LCP = 0xC021
PPP_PAP = 0xC023
PPP_CHAP = 0xC223
PPP_EAP = 0xC227
_NCP_RANGE = range(0x8000, 0xC000)


class PPPEngine:
    def __init__(self, config: PPPConfig, *, random: Callable[[int], bytes] = os.urandom):
        self.config = config
        self.random = random
        self.phase = Phase.DEAD
        self._frames: list[bytes] = []
        self._events: deque[ev.PPPEvent] = deque()
        timers = Timers(config.restart_timer, config.max_configure, config.max_terminate,
                        config.max_failure)
        methods = config.auth_methods
        self.lcp_policy = LCPPolicy(random, mru=config.mru,
                                    authenticate_with=methods if config.is_authenticator else (),
                                    accept_auth=() if config.is_authenticator else methods,
                                    accm=config.accm)
        self.lcp = Automaton("LCP", PPP_LCP, self.lcp_policy, self, self._send, timers,
                             extra_codes=self._lcp_extra)
        self.ipcp_policy = self._ipcp_policy()
        self.ipcp = Automaton("IPCP", PPP_IPCP, self.ipcp_policy, self, self._send, timers)
        self._timers = timers
        self.ccp_policy: CCPPolicy | None = None
        self.ccp: Automaton | None = None
        level = config.encryption
        if level is not EncryptionLevel.NONE:
            allowed = (level.key_bits,) if level.key_bits else (128, 56, 40)
            self._make_ccp(allowed, required=level is not EncryptionLevel.OPTIONAL)
        self.authorization = Authorization()
        self._session_deadline: float | None = None
        self._idle_deadline: float | None = None
        self._idle_seen = (0, 0.0)  # (datagrams in + out, when that count last moved)
        self.encryptor: MPPEEncryptor | None = None
        self.decryptor: MPPEDecryptor | None = None
        self._network_reported = False
        self.auth: AuthExchange | None = None
        self.username = ""
        self.reason = ""
        self._echo_deadline: float | None = None
        self._auth_deadline: float | None = None
        self._echo_outstanding = 0
        self._echo_id = 0
        self.counters = {"frames_in": 0, "frames_out": 0, "ip_in": 0, "ip_out": 0,
                         "discarded": 0, "protocol_rejects_sent": 0, "echo_requests": 0,
                         "unencrypted_dropped": 0, "mppe_errors": 0, "ccp_resets_sent": 0,
                         "not_ipv4_dropped": 0, "late_verdicts": 0, "ip_in_octets": 0,
                         "ip_out_octets": 0}

    def _make_ccp(self, allowed: tuple[int, ...], required: bool) -> None:
        self.ccp_policy = CCPPolicy(allowed, self.config.mppe_stateless, required=required)
        self.ccp = Automaton("CCP", PPP_CCP, self.ccp_policy, self, self._send, self._timers,
                             extra_codes=self._ccp_extra)

    def _ipcp_policy(self) -> IPCPPolicy:
        c = self.config
        ip = ipaddress.IPv4Address
        if c.is_authenticator:
            servers = {}
            for kind, value in zip((IPCPOption.PRIMARY_DNS, IPCPOption.SECONDARY_DNS), c.dns,
                                   strict=False):
                servers[kind] = ip(value)
            for kind, value in zip((IPCPOption.PRIMARY_NBNS, IPCPOption.SECONDARY_NBNS), c.nbns,
                                   strict=False):
                servers[kind] = ip(value)
            return IPCPPolicy(local=ip(c.local_address), assign=ip(c.peer_address),
                              name_servers=servers)
        ask = {k: ip(0) for k in (IPCPOption.PRIMARY_DNS, IPCPOption.SECONDARY_DNS,
                                  IPCPOption.PRIMARY_NBNS, IPCPOption.SECONDARY_NBNS)}
        return IPCPPolicy(local=ip(c.local_address) if c.local_address else None,
                          name_servers=ask)

    # -- API -------------------------------------------------------------------------------
    def open(self, now: float) -> None:
        self._set_phase(Phase.ESTABLISH)
        self.lcp.open(now)
        self.lcp.up(now)

    def close(self, now: float, reason: str = "closed by administrator") -> None:
        self.reason = self.reason or reason
        if self.lcp.state in (State.INITIAL, State.STARTING, State.CLOSED):
            self._finish(reason)
            return
        self._set_phase(Phase.TERMINATE)
        self.lcp.close(now, reason)

    def lower_layer_down(self, now: float, reason: str) -> None:
        """The carrier is gone (call cleared, tunnel down): no Terminate exchange possible."""
        self.reason = self.reason or reason
        if self.lcp.state not in (State.INITIAL, State.STARTING):
            self.lcp.down(now)
        self._finish(self.reason)

    def complete_authentication(self, verdict: Verdict, now: float) -> None:
        """The answer of a verifier that returned None (RADIUS): Success or Failure goes out
        and the link moves on. A verdict for a link that is no longer waiting is counted."""
        self._now = now
        auth = self.auth
        if auth is None or not hasattr(auth, "conclude") or not auth.awaiting_verdict:
            self.counters["late_verdicts"] += 1
            return
        auth.conclude(verdict, now)
        self._auth_progress(now)

    def receive_frame(self, frame: bytes, now: float) -> None:
        self.counters["frames_in"] += 1
        # The data path: address/control and a two-octet MPPE or IP protocol field, as every
        # peer sends them, go straight to their receiver (the same checks _dispatch makes).
        data = _DATA_RECEIVERS.get(frame[:4])
        if data is not None and self.lcp.state is State.OPENED:
            self._now = now
            data(self, frame[4:], now)
            return
        try:
            protocol, info = split_frame(frame)
            self._dispatch(protocol, info, frame, now)
        except RemoteProtocolError:
            self.counters["discarded"] += 1

    def receive_data(self, frame: bytes, now: float) -> bytes | None:
        """receive_frame for the carrier's data path: the IPv4 datagram of an MPPE or IP
        frame received in order, returned rather than queued as a DatagramReceived event
        (the same counters move). Anything else goes through receive_frame and gives None:
        the caller then drains frames_to_send and next_event as after receive_frame."""
        decryptor = self.decryptor
        head = frame[:4]
        if (head != (_MPPE_HEAD if decryptor is not None else _IP_HEAD)
                or self.lcp.state is not State.OPENED or self.ipcp.state is not State.OPENED
                or (decryptor is None and self._encryption_required())):
            self.receive_frame(frame, now)
            return None
        counters = self.counters
        counters["frames_in"] += 1
        self._now = now
        if decryptor is None:
            counters["ip_in"] += 1
            counters["ip_in_octets"] += len(frame) - 4
            return frame[4:]
        try:
            plain = decryptor.decrypt(frame[4:])
        except RemoteProtocolError as exc:
            self._mppe_failed(exc)
            return None
        if plain[:2] != b"\x00\x21":
            counters["discarded"] += 1
            return None
        counters["ip_in"] += 1
        counters["ip_in_octets"] += len(plain) - 2
        return plain[2:]

    def send_datagram(self, packet: bytes, now: float) -> bool:
        """Queue an IPv4 packet; False (and counted) when the network phase is not open."""
        frame = self.seal_datagram(packet)
        if frame is None:
            return False
        self._frames.append(frame)
        return True

    def seal_datagram(self, packet: bytes) -> bytes | None:
        """send_datagram's frame, returned instead of queued (None: dropped and counted).
        The carrier's data path sends it at once: a datagram moves no PPP timer and queues
        nothing else, so it needs no pass through frames_to_send and the events."""
        if not packet or packet[0] >> 4 != 4:  # 0x0021 is IPv4 (RFC 1332); no IPV6CP here
            self.counters["not_ipv4_dropped"] += 1  # e.g. the kernel's IPv6 RS on the TUN
            return None
        if self.ipcp.state is not State.OPENED:
            self.counters["discarded"] += 1
            return None
        counters, encryptor = self.counters, self.encryptor
        if encryptor is None and self._encryption_required():
            counters["unencrypted_dropped"] += 1  # never in clear when policy says no
            return None
        counters["ip_out"] += 1
        counters["ip_out_octets"] += len(packet)  # accounting (RFC 2866 Acct-Output-Octets)
        counters["frames_out"] += 1
        if encryptor is not None:  # build_frame's result, in one buffer
            return encryptor.encrypt(packet, b"\x00\x21", _MPPE_HEAD)
        return _IP_HEAD + packet

    def _encryption_required(self) -> bool:
        return self.ccp_policy is not None and self.ccp_policy.required

    def frames_to_send(self) -> list[bytes]:
        out, self._frames = self._frames, []
        return out

    def next_event(self) -> ev.PPPEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [d for d in (self.lcp.get_timer(), self.ipcp.get_timer(), self._echo_deadline,
                                 self._auth_deadline, self._session_deadline,
                                 self._idle_deadline,
                                 self.ccp.get_timer() if self.ccp else None,
                                 self.auth.get_timer() if self.auth else None) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.lcp.handle_timer(now)
        self.ipcp.handle_timer(now)
        if self.ccp is not None:
            self.ccp.handle_timer(now)
        if self.auth is not None:
            self.auth.handle_timer(now)
            self._auth_progress(now)
        if self._auth_deadline is not None and now >= self._auth_deadline:
            self._auth_deadline = None
            if self.phase is Phase.AUTHENTICATE:
                self.close(now, f"authentication did not complete within "
                                f"{self.config.auth_timeout:g}s")
        if self._echo_deadline is not None and now >= self._echo_deadline:
            self._echo(now)
        if self._session_deadline is not None and now >= self._session_deadline:
            self._session_deadline = self._idle_deadline = None
            self.close(now, f"session timeout: the {self.authorization.session_timeout:g}s "
                            f"the policy allows have passed")
        if self._idle_deadline is not None and now >= self._idle_deadline:
            self._check_idle(now)

    def _check_idle(self, now: float) -> None:
        """Idle-Timeout without a per-datagram cost: the data counters are compared a few
        times per timeout period (the link closes within a quarter period of the limit)."""
        limit = self.authorization.idle_timeout or 0.0
        moved = self.counters["ip_in"] + self.counters["ip_out"]
        count, since = self._idle_seen
        if moved != count:
            self._idle_seen = (moved, now)
        elif now - since >= limit:
            self._idle_deadline = self._session_deadline = None
            self.close(now, f"idle timeout: no data for {limit:g}s")
            return
        self._idle_deadline = now + max(0.25, limit / 4)

    def status(self) -> dict:
        return {
            "phase": self.phase.value,
            "lcp": self.lcp.state.name, "ipcp": self.ipcp.state.name,
            "ccp": self.ccp.state.name if self.ccp else None,
            "mru": self.lcp_policy.peer_mru, "magic": self.lcp_policy.magic,
            "peer_accm": self.lcp_policy.peer_accm, "peer_pfc": self.lcp_policy.peer_pfc,
            "peer_acfc": self.lcp_policy.peer_acfc,
            "mppe_bits": self.ccp_policy.agreed if self.ccp_policy else None,
            "auth_method": (self._outcome_seen.method.value
                            if isinstance(self._outcome_seen, AuthOutcome) else None),
            "username": self.username,
            "local_address": str(self.ipcp_policy.local) if self.ipcp_policy.local else None,
            "peer_address": str(self.ipcp_policy.peer) if self.ipcp_policy.peer else None,
            "dns": list(self.ipcp_policy.dns()), "nbns": list(self.ipcp_policy.nbns()),
            "encryption": self.encryption_text(), "reason": self.reason,
            "policy": self.authorization.policy,
            "session_timeout": self.authorization.session_timeout,
            "idle_timeout": self.authorization.idle_timeout,
            "counters": dict(self.counters),
        }

    def encryption_text(self) -> str | None:
        if self.encryptor is None:
            return None
        mode = "stateless" if self.encryptor.stateless else "stateful"
        return f"mppe-{self.encryptor.key_bits} {mode}"

    # -- layers ----------------------------------------------------------------------------
    def this_layer_up(self, fsm: Automaton) -> None:
        if fsm is self.lcp:
            policy = self.lcp_policy
            method = policy.auth_method or policy.peer_auth_method
            self._emit(ev.LinkEstablished(policy.peer_mru, method and method.value,
                                          policy.magic))
            self._start_echo(self._now)
            self._start_auth(self._now)
        elif fsm is self.ipcp:
            self._report_network()
        elif fsm is self.ccp:
            self._start_mppe()
            if self.encryptor is not None and self.ipcp.state is State.CLOSED:
                self.ipcp.open(self._now)  # held until encryption was settled (below)

    def _report_network(self) -> None:
        """NetworkOpened once IPCP is open and encryption is settled: on when required, on or
        refused when optional, so no datagram ever leaves before its encryption is known."""
        if self._network_reported or self.ipcp.state is not State.OPENED:
            return
        if self.ccp is not None and self.encryptor is None and \
                self.ccp.state not in (State.STOPPED, State.CLOSED):
            return
        self._network_reported = True
        p = self.ipcp_policy
        self._emit(ev.NetworkOpened(str(p.local), str(p.peer), p.dns(), p.nbns()))

    def _start_mppe(self) -> None:
        assert self.ccp_policy is not None
        outcome = self.auth.outcome if self.auth else None
        bits = self.ccp_policy.key_bits
        if outcome is None or bits is None or (outcome.mppe_material is None and
                                               outcome.mppe_keys is None):
            self.close(self._now, "encryption negotiated but the authentication method gave "
                                  "no MPPE keys (MPPE needs MS-CHAP v1 or v2)")
            return
        # RADIUS gives MS-MPPE-Send/Recv-Key (RFC 2548 §2.4); MS-CHAP v1's 40/56-bit keys
        # come from the LM key it gives as material instead
        if outcome.mppe_keys is not None and (bits == 128 or outcome.mppe_material is None):
            length = key_length(bits)
            send, receive = (key[:length] for key in outcome.mppe_keys)
        else:
            material = outcome.mppe_material
            assert material is not None
            if material.version == 1 and bits != 128 and not (material.lm_password_hash or
                                                              material.password_hash):
                self.close(self._now, f"{bits}-bit MPPE after MS-CHAP v1 needs the LAN Manager "
                                      "key, and the verifier gave none (FreeRADIUS sends "
                                      "zeros): use 128-bit MPPE or MS-CHAP v2")
                return
            send, receive = derive_start_keys(material, bits, self.config.is_authenticator)
        stateless = self.config.mppe_stateless
        self.encryptor = MPPEEncryptor(send, bits, stateless)
        self.decryptor = MPPEDecryptor(receive, bits, stateless)
        self._emit(ev.EncryptionNegotiated(bits, stateless))
        self._report_network()

    def this_layer_down(self, fsm: Automaton) -> None:
        if fsm is self.ipcp or fsm is self.lcp:
            self._network_reported = False  # a re-opened IPCP is reported again
        if fsm is self.ccp:
            self.encryptor = self.decryptor = None
        if fsm is self.lcp:
            # RFC 1661 §3.4: LCP renegotiating takes the link back to Establish; the
            # authentication starts again when LCP is open again.
            self._echo_deadline = self._auth_deadline = None
            self.auth = None
            if self.phase is not Phase.TERMINATE and self.lcp.state is not State.STARTING:
                self._set_phase(Phase.ESTABLISH)
            for ncp in (self.ipcp, self.ccp):
                if ncp is not None and ncp.state not in (State.INITIAL, State.STARTING):
                    ncp.down(self._now)

    def this_layer_started(self, fsm: Automaton) -> None:
        pass

    def this_layer_finished(self, fsm: Automaton) -> None:
        if fsm is self.lcp:
            self._finish(self.reason or self.lcp.terminate_reason or "LCP negotiation failed")
        elif fsm is self.ipcp and self.lcp.state is State.OPENED:
            self.close(self._now, "IPCP could not be negotiated"
                       + (f": {fsm.terminate_reason}" if fsm.terminate_reason else ""))
        elif fsm is self.ccp and self.lcp.state is State.OPENED:
            assert self.ccp_policy is not None
            if self.ccp_policy.required:
                why = self.ccp_policy.failure or "CCP did not converge"
                self.close(self._now, f"encryption required but MPPE was refused: {why}")
            else:
                self._report_network()  # optional: go on without encryption

    # -- internals -------------------------------------------------------------------------
    _now = 0.0

    def _send(self, protocol: int, info: bytes) -> None:
        self.counters["frames_out"] += 1
        self._frames.append(build_frame(protocol, info))

    def _emit(self, event: ev.PPPEvent) -> None:
        self._events.append(event)

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self._emit(ev.PhaseChanged(phase))

    def _finish(self, reason: str) -> None:
        if self.phase is Phase.DEAD and self.reason:
            return
        self.reason = reason
        self._echo_deadline = self._auth_deadline = None
        self._session_deadline = self._idle_deadline = None
        self.auth = None  # no re-challenge or retransmission on a dead link
        self._set_phase(Phase.DEAD)
        self._emit(ev.LinkTerminated(reason))

    def _dispatch(self, protocol: int, info: bytes, frame: bytes, now: float) -> None:
        self._now = now
        if protocol != PPP_LCP and self.lcp.state is not State.OPENED:
            self.counters["discarded"] += 1  # RFC 1661 §3.4: only LCP before the link is up
            return
        handler = _RECEIVERS.get(protocol)
        if handler is None or not handler(self, protocol, info, now):
            self._protocol_reject(protocol, frame, now)

    # Receivers by protocol; each returns False when this link does not speak the protocol,
    # so it gets a Protocol-Reject (RFC 1661 §5.7).
    def _rx_lcp(self, protocol: int, info: bytes, now: float) -> bool:
        self.lcp.receive(info, now)
        if self.lcp_policy.failure and self.lcp.state is not State.OPENED:
            self.reason = self.lcp_policy.failure
            self.lcp.close(now, self.lcp_policy.failure)
        return True

    def _rx_auth(self, protocol: int, info: bytes, now: float) -> bool:
        if self.auth is not None and self.auth.protocol == protocol:
            self.auth.receive(info, now)
            self._auth_progress(now)
        else:
            self.counters["discarded"] += 1
        return True

    def _rx_ipcp(self, protocol: int, info: bytes, now: float) -> bool:
        self._alternate_success(now)
        if self.phase is not Phase.NETWORK:
            self.counters["discarded"] += 1  # NCP packets before Network: discarded
            return True
        if self.ipcp.state is State.CLOSED:
            self.ipcp.open(now)  # a peer that does not wait for CCP (Windows): answer it now
        self.ipcp.receive(info, now)
        return True

    def _alternate_success(self, now: float) -> None:
        """EAP Success is never retransmitted (RFC 3748 §4.2); a peer still waiting for it MAY
        take a lower-layer success indication, here the authenticator's NCP packets, as one
        (§3.4, §7.2)."""
        auth = self.auth
        if (self.phase is Phase.AUTHENTICATE and not self.config.is_authenticator
                and auth is not None and auth.outcome is None
                and hasattr(auth, "assume_success") and auth.assume_success()):
            self._auth_progress(now)

    def _rx_ccp(self, protocol: int, info: bytes, now: float) -> bool:
        if self.ccp is None or self.ccp_policy is None:
            return False  # encryption off: CCP is Protocol-Rejected, as Windows servers do
        if self.phase is not Phase.NETWORK:
            self.counters["discarded"] += 1
            return True
        self.ccp.receive(info, now)
        if self.ccp_policy.failure and self.ccp.state not in (State.OPENED, State.CLOSING,
                                                              State.CLOSED):
            self.ccp.close(now, self.ccp_policy.failure)  # no agreement possible: stop CCP
        return True

    def _rx_mppe(self, protocol: int, info: bytes, now: float) -> bool:
        return self._data_mppe(info, now)

    def _data_mppe(self, info: bytes, now: float) -> bool:
        if self.decryptor is None:
            self.counters["discarded"] += 1  # before CCP is up: nothing to decrypt with
        else:
            self._receive_mppe(info, now)
        return True

    def _rx_ip(self, protocol: int, info: bytes, now: float) -> bool:
        return self._data_ip(info, now)

    def _data_ip(self, info: bytes, now: float) -> bool:
        if self.ipcp.state is not State.OPENED:
            self.counters["discarded"] += 1
        elif self.decryptor is not None or self._encryption_required():
            self.counters["unencrypted_dropped"] += 1  # never accept clear when encrypting
        else:
            self.counters["ip_in"] += 1
            self.counters["ip_in_octets"] += len(info)
            self._events.append(ev.DatagramReceived(info))
        return True

    def _protocol_reject(self, protocol: int, frame: bytes, now: float) -> None:
        """RFC 1661 §5.7: the rejected protocol and as much of its packet as fits the MRU."""
        self.counters["protocol_rejects_sent"] += 1
        _, info = split_frame(frame)
        data = struct.pack("!H", protocol) + info
        self.lcp.send_code(Code.PROTOCOL_REJECT, data[: self.lcp_policy.peer_mru - 4])

    def _receive_mppe(self, info: bytes, now: float) -> None:
        assert self.decryptor is not None
        try:
            plain = self.decryptor.decrypt(info)
        except RemoteProtocolError as exc:
            self._mppe_failed(exc)
            return
        if plain[:2] == b"\x00\x21" and self.ipcp.state is State.OPENED:
            self.counters["ip_in"] += 1
            self.counters["ip_in_octets"] += len(plain) - 2
            self._events.append(ev.DatagramReceived(plain[2:]))
        else:
            self.counters["discarded"] += 1

    def _mppe_failed(self, exc: RemoteProtocolError) -> None:
        self.counters["mppe_errors"] += 1
        if exc.wire_answer is not None and exc.wire_answer.kind == "ccp-reset-request":
            # RFC 3078 §8.2 / RFC 1962 §2.1: ask the sender for a flushed packet
            assert self.ccp is not None
            self.counters["ccp_resets_sent"] += 1
            self.ccp.send_code(Code.RESET_REQUEST)

    def _ccp_extra(self, packet: ControlPacket, now: float) -> bool:
        """CCP's Reset-Request/Reset-Ack (RFC 1962 §2.1)."""
        if packet.code == Code.RESET_REQUEST:
            if self.encryptor is not None:
                self.encryptor.reset()
            assert self.ccp is not None
            self.ccp.send_code(Code.RESET_ACK, identifier=packet.identifier)
            return True
        return packet.code == Code.RESET_ACK

    def _lcp_extra(self, packet: ControlPacket, now: float) -> bool:
        """LCP's own codes (RFC 1661 §5.7-5.9, RFC 1570): echo, discard, protocol-reject..."""
        opened = self.lcp.state is State.OPENED
        if packet.code == Code.ECHO_REQUEST:
            if opened:
                reply = ControlPacket(Code.ECHO_REPLY, packet.identifier,
                                      struct.pack("!I", self.lcp_policy.magic) + packet.data[4:])
                self._send(PPP_LCP, reply.encode())
            return True
        if packet.code == Code.ECHO_REPLY:
            if opened and packet.identifier == self._echo_id:
                self._echo_outstanding = 0
            return True
        if packet.code in (Code.DISCARD_REQUEST, Code.IDENTIFICATION, Code.TIME_REMAINING):
            return True
        if packet.code == Code.PROTOCOL_REJECT:
            rejected = struct.unpack("!H", packet.data[:2])[0] if len(packet.data) >= 2 else 0
            if rejected == PPP_IPCP and opened:
                self.ipcp.receive_protocol_reject(now)
            elif rejected == PPP_CCP and opened and self.ccp is not None:
                if self.ccp_policy is not None:
                    self.ccp_policy.failure = "the peer does not speak CCP (Protocol-Reject)"
                self.ccp.receive_protocol_reject(now)
            return True
        return False

    def _start_echo(self, now: float) -> None:
        if self.config.echo_interval > 0:
            self._echo_deadline = now + self.config.echo_interval

    def _echo(self, now: float) -> None:
        if self._echo_outstanding >= self.config.echo_failures:
            self.reason = (f"no answer to {self._echo_outstanding} LCP Echo-Requests "
                           f"({self.config.echo_interval:g}s apart): the peer or the path is gone")
            self._echo_deadline = None
            # The peer is presumed gone: one Terminate-Request as a courtesy, then down at
            # once rather than waiting out Max-Terminate restart periods for nobody.
            self.close(now, self.reason)
            self.lower_layer_down(now, self.reason)
            return
        self._echo_outstanding += 1
        self._echo_id = (self._echo_id + 1) & 0xFF
        self.counters["echo_requests"] += 1
        request = ControlPacket(Code.ECHO_REQUEST, self._echo_id,
                                struct.pack("!I", self.lcp_policy.magic))
        self._send(PPP_LCP, request.encode())
        self._echo_deadline = now + self.config.echo_interval

    def _start_auth(self, now: float) -> None:
        c, policy = self.config, self.lcp_policy
        if c.is_authenticator and policy.auth_method is not None:
            self.auth = make_authenticator(policy.auth_method, c.verifier, c.name, self.random,
                                           rechallenge=c.chap_rechallenge)
        elif not c.is_authenticator and policy.peer_auth_method is not None:
            self.auth = make_peer(policy.peer_auth_method, c.username, c.password, self.random)
        elif not c.is_authenticator:
            self.auth = None  # the server asked for no authentication: accepted
        if self.auth is None and c.is_authenticator:
            self.close(now, "no authentication method negotiated")
            return
        if self.auth is None:
            self._enter_network(now)
            return
        self._set_phase(Phase.AUTHENTICATE)
        self._auth_deadline = now + self.config.auth_timeout
        self.auth.start(now)
        self._auth_progress(now)

    def _auth_progress(self, now: float) -> None:
        auth = self.auth
        if auth is None:
            return
        for info in auth.packets_to_send():
            self._send(auth.protocol, info)
        outcome = auth.outcome
        if outcome is None or outcome is self._outcome_seen:
            return
        self._outcome_seen = outcome
        method = outcome.method.value
        if self.phase is not Phase.AUTHENTICATE:
            # a CHAP re-challenge answered after the link is up (RFC 1994 §2)
            if not outcome.success and self.phase is Phase.NETWORK:
                self._auth_failed(outcome, now)
            return
        if outcome.success:
            self.username = outcome.username
            self._authorize(outcome.authorization, now)
            self._emit(ev.Authenticated(outcome.username, method))
            self._enter_network(now)
        else:
            self._auth_failed(outcome, now)

    _outcome_seen: object = None

    def _auth_failed(self, outcome: AuthOutcome, now: float) -> None:
        self._emit(ev.AuthenticationFailed(outcome.username, outcome.method.value,
                                           outcome.error_code, outcome.message))
        code = f" (error {outcome.error_code})" if outcome.error_code else ""
        self.close(now, f"authentication failed{code}: {outcome.message}")

    def _authorize(self, granted: Authorization, now: float) -> None:
        """What the verifier set for this connection (account, RADIUS, policy profile) before
        the NCPs start: the address to assign, the encryption allowed, the timeouts."""
        self.authorization = granted
        if not self.config.is_authenticator:
            return
        if granted.peer_address is not None:
            self.ipcp_policy.assign = ipaddress.IPv4Address(granted.peer_address)
        if granted.encryption is not None:
            levels = set(granted.encryption)
            bits = tuple(b for name, b in (("strongest", 128), ("strong", 56), ("basic", 40))
                         if name in levels)
            self.ccp_policy = self.ccp = None
            if bits:  # "none" alone: no CCP at all (Protocol-Reject, as Windows does)
                self._make_ccp(bits, required="none" not in levels)
        if granted.session_timeout:
            self._session_deadline = now + granted.session_timeout
        if granted.idle_timeout:
            self._idle_seen = (self.counters["ip_in"] + self.counters["ip_out"], now)
            self._idle_deadline = now + max(0.25, granted.idle_timeout / 4)

    def _enter_network(self, now: float) -> None:
        self._auth_deadline = None
        self._set_phase(Phase.NETWORK)
        self.ipcp.up(now)
        # With MPPE required, IPCP waits for CCP, as pppd does (auth.c: other NCPs start
        # "iff encryption is not required", the rest when CCP is up): pppd answers an earlier
        # IPCP Configure-Request with Terminate-Ack, which cost a 3 s restart timeout.
        if not self._encryption_required():
            self.ipcp.open(now)
        if self.ccp is not None:
            self.ccp.up(now)
            self.ccp.open(now)


_MPPE_HEAD = b"\xff\x03\x00\xfd"  # address, control, protocol 0x00FD (build_frame's output)
_IP_HEAD = b"\xff\x03\x00\x21"  # the same for 0x0021
_DATA_RECEIVERS: dict[bytes, Callable[[PPPEngine, bytes, float], bool]] = {
    _MPPE_HEAD: PPPEngine._data_mppe, _IP_HEAD: PPPEngine._data_ip}
_RECEIVERS: dict[int, Callable[[PPPEngine, int, bytes, float], bool]] = {
    PPP_LCP: PPPEngine._rx_lcp, PPP_PAP: PPPEngine._rx_auth, PPP_CHAP: PPPEngine._rx_auth,
    PPP_EAP: PPPEngine._rx_auth, PPP_IPCP: PPPEngine._rx_ipcp, PPP_CCP: PPPEngine._rx_ccp,
    PPP_MPPE: PPPEngine._rx_mppe, PPP_IP: PPPEngine._rx_ip,
}

__all__ = ["AuthMethod", "EncryptionLevel", "PPPConfig", "PPPEngine", "build_frame",
           "split_frame"]
