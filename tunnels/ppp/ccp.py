"""CCP (RFC 1962) carrying only the MPPE option (RFC 3078 §2): which key length, which mode.

Both directions must agree on one key length and one mode, as Windows and pppd require: we
request the strongest length our policy allows (with H when stateless) and nak a peer's offer
of several lengths down to the one we chose. Other compression options are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnels.mppe.options import (
    BIT_FOR,
    CCP_OPTION_MPPE,
    KEY_BITS,
    MPPE_H,
    decode_bits,
    describe,
    encode_bits,
)
from tunnels.ppp.fsm import Verdict
from tunnels.ppp.packets import Code, Option


@dataclass
class CCPPolicy:
    allowed_bits: tuple[int, ...]  # key lengths acceptable, strongest first, e.g. (128,)
    stateless: bool = True
    required: bool = True
    ours: int = 0
    peer: int | None = None
    agreed: int | None = None
    failure: str = ""

    def __post_init__(self) -> None:
        self.ours = self._bits_for(self.allowed_bits[0])

    def _bits_for(self, key_bits: int) -> int:
        return BIT_FOR[key_bits] | (MPPE_H if self.stateless else 0)

    def request(self) -> list[Option]:
        return [Option(CCP_OPTION_MPPE, encode_bits(self.ours))]

    def judge(self, options: list[Option]) -> Verdict:
        others = [o for o in options if o.type != CCP_OPTION_MPPE or len(o.data) != 4]
        if others:
            return Verdict(Code.CONFIGURE_REJECT, others)
        if not options:
            return Verdict(Code.CONFIGURE_ACK, options)
        offered = decode_bits(options[0].data)
        lengths = [b for b in self.allowed_bits if offered & BIT_FOR[b]]
        wanted = self._bits_for(lengths[0]) if lengths else self.ours
        if offered != wanted:
            return Verdict(Code.CONFIGURE_NAK, [Option(CCP_OPTION_MPPE, encode_bits(wanted))])
        self.peer = offered
        return Verdict(Code.CONFIGURE_ACK, options)

    def acked(self, options: list[Option]) -> None:
        self.agreed = self.ours

    def naked(self, options: list[Option]) -> None:
        for o in options:
            if o.type != CCP_OPTION_MPPE:
                continue
            suggested = decode_bits(o.data)
            lengths = [b for b in self.allowed_bits if suggested & BIT_FOR[b]]
            stateless_ok = bool(suggested & MPPE_H) == self.stateless
            if lengths and stateless_ok:
                self.ours = self._bits_for(lengths[0])
            else:
                self.failure = (f"the peer wants {describe(suggested)}, policy allows "
                                f"{describe(self._allowed_mask())}")

    def _allowed_mask(self) -> int:
        mask = MPPE_H if self.stateless else 0
        for b in self.allowed_bits:
            mask |= BIT_FOR[b]
        return mask

    def rejected(self, options: list[Option]) -> None:
        self.failure = "the peer rejected MPPE"

    @property
    def key_bits(self) -> int | None:
        if self.agreed is None:
            return None
        return next(bits for flag, bits in KEY_BITS.items() if self.agreed & flag)
