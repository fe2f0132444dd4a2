"""LCP (RFC 1661 §6): the options policy, plus the codes only LCP has (echo, discard, ...).

The authenticator asks for the first authentication method of its policy list and, when the
peer naks with another, moves to that one if policy allows it, else to its next choice (this is
how a Windows client and a server agree on MS-CHAP v2). Options we do not implement, the
Callback option a Windows client offers among them, are rejected.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.fsm import Verdict, reject_or_nak
from tunnels.ppp.packets import Code, Option


LOOPBACK_COLLISIONS = 5
LOOPED_BACK = "the link is looped back (our own Magic-Number comes back, RFC 1661 §6.4)"


class LCPOption(IntEnum):
    MRU = 1
    ACCM = 2
    AUTH_PROTOCOL = 3
    QUALITY_PROTOCOL = 4
    MAGIC_NUMBER = 5
    PFC = 7
    ACFC = 8
    CALLBACK = 13


@dataclass
class LCPPolicy:
    """What this end asks for and accepts. `authenticate_with` is the authenticator's ordered
    method list (empty: do not authenticate the peer); `accept_auth` is what we agree to be
    authenticated with when the peer asks."""

    random: Callable[[int], bytes]
    mru: int = 1500
    authenticate_with: tuple[AuthMethod, ...] = ()
    accept_auth: tuple[AuthMethod, ...] = ()
    accm: int | None = None  # requested only on async serial links
    magic: int = 0
    peer_accm: int = 0xFFFFFFFF  # what the carrier must escape when sending (RFC 1662 §7.1)
    peer_pfc: bool = False  # the peer accepts compressed protocol fields (RFC 1661 §6.5)
    peer_acfc: bool = False  # ... and frames without address/control (§6.6)
    auth_method: AuthMethod | None = None  # what we will authenticate the peer with
    peer_auth_method: AuthMethod | None = None  # what the peer authenticates us with
    peer_mru: int = 1500
    peer_magic: int = 0
    failure: str = ""  # set when negotiation cannot succeed (e.g. no common auth method)
    _candidates: list[AuthMethod] = field(default_factory=list)
    _rejected: set[int] = field(default_factory=set)
    _magic_collisions: int = 0

    def __post_init__(self) -> None:
        self._candidates = list(self.authenticate_with)
        self.auth_method = self._candidates[0] if self._candidates else None
        self.magic = self._new_magic()

    def _new_magic(self) -> int:
        while True:
            magic = struct.unpack("!I", self.random(4))[0]
            if magic:
                return magic

    def request(self) -> list[Option]:
        options = []
        if self.mru != 1500 and LCPOption.MRU not in self._rejected:
            options.append(Option(LCPOption.MRU, struct.pack("!H", self.mru)))
        if self.accm is not None and LCPOption.ACCM not in self._rejected:
            options.append(Option(LCPOption.ACCM, struct.pack("!I", self.accm)))
        if self.auth_method is not None:
            options.append(Option(LCPOption.AUTH_PROTOCOL, self.auth_method.lcp_option_data))
        if LCPOption.MAGIC_NUMBER not in self._rejected:
            options.append(Option(LCPOption.MAGIC_NUMBER, struct.pack("!I", self.magic)))
        return options

    def judge(self, options: list[Option]) -> Verdict:
        self._count_loopback(options)
        refusal = reject_or_nak(options, self._known, self._nak_for)
        if refusal is not None:
            return refusal
        for o in options:
            if o.type == LCPOption.MRU:
                self.peer_mru = struct.unpack("!H", o.data)[0]
            elif o.type == LCPOption.AUTH_PROTOCOL:
                self.peer_auth_method = AuthMethod.from_lcp_option_data(o.data)
            elif o.type == LCPOption.MAGIC_NUMBER:
                self.peer_magic = struct.unpack("!I", o.data)[0]
        if not any(o.type == LCPOption.AUTH_PROTOCOL for o in options):
            self.peer_auth_method = None
        self._note_framing(options)
        return Verdict(Code.CONFIGURE_ACK, options)

    def _note_framing(self, options: list[Option]) -> None:
        accm = next((o.data for o in options if o.type == LCPOption.ACCM), None)
        self.peer_accm = struct.unpack("!I", accm)[0] if accm else 0xFFFFFFFF
        self.peer_pfc = any(o.type == LCPOption.PFC for o in options)
        self.peer_acfc = any(o.type == LCPOption.ACFC for o in options)

    def _known(self, o: Option) -> bool:
        sizes = {LCPOption.MRU: 2, LCPOption.ACCM: 4, LCPOption.MAGIC_NUMBER: 4,
                 LCPOption.PFC: 0, LCPOption.ACFC: 0}
        if o.type in sizes:
            return len(o.data) == sizes[LCPOption(o.type)]
        if o.type == LCPOption.AUTH_PROTOCOL:
            return bool(self.accept_auth) and len(o.data) >= 2
        return False

    def _nak_for(self, o: Option) -> Option | None:
        if o.type == LCPOption.MRU and struct.unpack("!H", o.data)[0] < 128:
            return Option(LCPOption.MRU, struct.pack("!H", 1500))
        if o.type == LCPOption.MAGIC_NUMBER and struct.unpack("!I", o.data)[0] in (0, self.magic):
            # RFC 1661 §6.4: the same magic number suggests a looped-back link; both ends
            # pick new numbers, and if ours keeps coming back the link is looped back.
            self.magic = self._new_magic()
            return Option(LCPOption.MAGIC_NUMBER, struct.pack("!I", self._new_magic()))
        if o.type == LCPOption.AUTH_PROTOCOL:
            method = AuthMethod.from_lcp_option_data(o.data)
            if method not in self.accept_auth:
                return Option(LCPOption.AUTH_PROTOCOL, self.accept_auth[0].lcp_option_data)
        return None

    def _count_loopback(self, options: list[Option]) -> None:
        magic = next((o.data for o in options if o.type == LCPOption.MAGIC_NUMBER), None)
        if magic is None or magic != struct.pack("!I", self.magic):
            self._magic_collisions = 0
            return
        self._magic_collisions += 1
        if self._magic_collisions >= LOOPBACK_COLLISIONS:
            self.failure = LOOPED_BACK

    def acked(self, options: list[Option]) -> None:
        pass

    def naked(self, options: list[Option]) -> None:
        for o in options:
            if o.type == LCPOption.AUTH_PROTOCOL and self.auth_method is not None:
                self._next_auth(AuthMethod.from_lcp_option_data(o.data))
            elif o.type == LCPOption.MAGIC_NUMBER:
                self.magic = self._new_magic()
            elif o.type == LCPOption.MRU and len(o.data) == 2:
                self.mru = struct.unpack("!H", o.data)[0]

    def _next_auth(self, suggested: AuthMethod | None) -> None:
        if self.auth_method in self._candidates:
            self._candidates.remove(self.auth_method)
        if suggested in self._candidates:
            self.auth_method = suggested
        elif self._candidates:
            self.auth_method = self._candidates[0]
        else:
            self.failure = "no authentication method acceptable to both ends"

    def rejected(self, options: list[Option]) -> None:
        for o in options:
            if o.type == LCPOption.AUTH_PROTOCOL:
                # our own request coming back is rejected by ourselves: a looped-back line
                self.failure = (LOOPED_BACK if self._magic_collisions
                                else "the peer refuses to authenticate")
            else:
                self._rejected.add(o.type)
