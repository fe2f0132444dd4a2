"""ISAKMP message and payload codecs (RFC 2408 §3, RFC 2407 §4.6, RFC 3947 §3-4).

One frozen dataclass per payload with `encode_body()` / `decode_body()`; the generic payload
header (Next Payload, RESERVED, Payload Length) and the chain are handled once in
`encode_payloads` / `decode_payloads`, with the payload types dispatched through `_CODECS`.
A decoded `Message` keeps each payload's bytes as received (`raw`), because IKE's hashes are
computed over the bytes on the wire (RFC 2409 §5: SAi_b, IDii_b; §5.5: "the entire message
after the HASH payload"): re-encoding a peer's payload could differ in a reserved bit or an
attribute's TV/TLV form and make an honest peer's HASH fail.

Encryption (RFC 2408 §3.1 E flag) is not done here: `decode_header` splits a datagram, the
session decrypts the body with its IV chain (crypto.py) and then calls `decode_payloads`.
Every malformed input raises `RemoteProtocolError` carrying the Notify to send, never anything
else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError, Truncated, WireAnswer
from tunnels.ipsec.ike.constants import (
    DOI_IPSEC,
    HEADER_LENGTH,
    ISAKMP_VERSION,
    SIT_IDENTITY_ONLY,
    NotifyType,
    PayloadType,
)


def notify_answer(notify: NotifyType) -> WireAnswer:
    """The wire answer of an IKE error: an Informational exchange carrying this Notify."""
    return WireAnswer("notify", notify)


def malformed(message: str, notify: NotifyType = NotifyType.PAYLOAD_MALFORMED
              ) -> RemoteProtocolError:
    return RemoteProtocolError(message, notify_answer(notify))


# -- data attributes (RFC 2408 §3.3) --------------------------------------------------------
_AF = 0x8000  # Attribute Format bit: 1 = TV (two-byte value), 0 = TLV


@dataclass(frozen=True, slots=True)
class Attribute:
    """One SA attribute. `tlv_length` is 0 for the basic (TV) form, else the length of the
    variable form as received or wanted (Life Duration is often sent as a 4-byte TLV)."""

    type: int
    value: int
    tlv_length: int = 0

    def encode(self, w: Writer) -> None:
        if self.tlv_length == 0 and 0 <= self.value <= 0xFFFF:
            w.push_u16(_AF | self.type).push_u16(self.value)
            return
        size = max(self.tlv_length, (self.value.bit_length() + 7) // 8, 1)
        w.push_u16(self.type & 0x7FFF).push_u16(size).push_bytes(self.value.to_bytes(size, "big"))

    @classmethod
    def decode(cls, r: Reader) -> Attribute:
        word = r.pull_u16("attribute type")
        if word & _AF:
            return cls(word & 0x7FFF, r.pull_u16("attribute value"))
        size = r.pull_u16("attribute length")
        return cls(word, int.from_bytes(r.pull_bytes(size, "attribute value"), "big"),
                   max(size, 1))

    @staticmethod
    def long(type_: int, value: int) -> Attribute:
        """A value in the variable form, 4 bytes (as racoon/Windows send lifetimes)."""
        return Attribute(type_, value, 4)


def _decode_attributes(r: Reader) -> tuple[Attribute, ...]:
    out = []
    while not r.at_end():
        out.append(Attribute.decode(r))
    return tuple(out)


def decode_attributes(data: bytes) -> tuple[Attribute, ...]:
    """Attributes carried outside a transform (RESPONDER-LIFETIME's notification data)."""
    return _decode_attributes(Reader(data))


def attributes_dict(attrs: tuple[Attribute, ...]) -> dict[int, int]:
    """Attributes by type (the last one wins); life type/duration pairs repeat and are read
    from the tuple with `phase1.life_value` instead."""
    return {a.type: a.value for a in attrs}


# -- payloads -------------------------------------------------------------------------------
class Payload(Protocol):
    TYPE: ClassVar[int]

    def encode_body(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Transform:
    """RFC 2408 §3.6; a payload of its own type (3) inside a Proposal."""

    number: int
    transform_id: int
    attributes: tuple[Attribute, ...] = ()

    def encode(self, last: bool) -> bytes:
        w = Writer()
        for a in self.attributes:
            a.encode(w)
        body = bytes([self.number, self.transform_id, 0, 0]) + w.getvalue()
        return _generic(PayloadType.NONE if last else PayloadType.T, body)

    @classmethod
    def decode_body(cls, r: Reader) -> Transform:
        number, tid = r.pull_u8("transform #"), r.pull_u8("transform id")
        r.skip(2, "transform reserved")
        return cls(number, tid, _decode_attributes(r))


@dataclass(frozen=True, slots=True)
class Proposal:
    """RFC 2408 §3.5; proposals with the same number are ANDed (we neither send nor accept
    such bundles: one ESP SA is what L2TP/IPsec needs)."""

    number: int
    protocol_id: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        head = bytes([self.number, self.protocol_id, len(self.spi), len(self.transforms)])
        body = head + self.spi + b"".join(
            t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        return _generic(PayloadType.NONE if last else PayloadType.P, body)

    @classmethod
    def decode_body(cls, r: Reader) -> Proposal:
        number, proto = r.pull_u8("proposal #"), r.pull_u8("protocol id")
        spi_size, count = r.pull_u8("spi size"), r.pull_u8("# of transforms")
        spi = r.pull_bytes(spi_size, "spi")
        if r.at_end():
            raise malformed(f"proposal {number} without a transform",
                            NotifyType.BAD_PROPOSAL_SYNTAX)
        transforms = tuple(Transform.decode_body(body) for body in
                           _chain(r, PayloadType.T, PayloadType.T, "transform"))
        if len(transforms) != count:
            raise malformed(f"proposal {number} says {count} transforms, carries "
                            f"{len(transforms)}", NotifyType.BAD_PROPOSAL_SYNTAX)
        return cls(number, proto, spi, transforms)


@dataclass(frozen=True, slots=True)
class SA:
    """RFC 2408 §3.4 with the IPsec DOI's Situation (RFC 2407 §4.6.1)."""

    TYPE: ClassVar[int] = PayloadType.SA
    proposals: tuple[Proposal, ...]
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY

    def encode_body(self) -> bytes:
        head = Writer().push_u32(self.doi).push_u32(self.situation).getvalue()
        return head + b"".join(p.encode(i == len(self.proposals) - 1)
                               for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, r: Reader) -> SA:
        doi = r.pull_u32("DOI")
        if doi != DOI_IPSEC:
            raise malformed(f"SA with DOI {doi}", NotifyType.DOI_NOT_SUPPORTED)
        situation = r.pull_u32("situation")
        if situation != SIT_IDENTITY_ONLY:
            raise malformed(f"situation {situation:#x}", NotifyType.SITUATION_NOT_SUPPORTED)
        if r.at_end():
            raise malformed("SA without a proposal", NotifyType.BAD_PROPOSAL_SYNTAX)
        proposals = tuple(Proposal.decode_body(body) for body in
                          _chain(r, PayloadType.P, PayloadType.P, "proposal"))
        return cls(proposals, doi, situation)


@dataclass(frozen=True, slots=True)
class _Data:
    """A payload that is just bytes (KE, HASH, SIG, NONCE, VID, NAT-D)."""

    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, r: Reader) -> _Data:
        return cls(r.pull_rest())


@dataclass(frozen=True, slots=True)
class KE(_Data):
    TYPE: ClassVar[int] = PayloadType.KE


@dataclass(frozen=True, slots=True)
class HASH(_Data):
    TYPE: ClassVar[int] = PayloadType.HASH


@dataclass(frozen=True, slots=True)
class SIG(_Data):
    TYPE: ClassVar[int] = PayloadType.SIG


@dataclass(frozen=True, slots=True)
class NONCE(_Data):
    """RFC 2409 §5: 8 to 256 bytes."""

    TYPE: ClassVar[int] = PayloadType.NONCE

    @classmethod
    def decode_body(cls, r: Reader) -> NONCE:
        data = r.pull_rest()
        if not 8 <= len(data) <= 256:
            raise malformed(f"nonce of {len(data)} bytes (RFC 2409 §5: 8 to 256)")
        return cls(data)


@dataclass(frozen=True, slots=True)
class VID(_Data):
    TYPE: ClassVar[int] = PayloadType.VID


@dataclass(frozen=True, slots=True)
class NAT_D(_Data):  # noqa: N801 - the RFC's name
    """RFC 3947 §3.2: HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash."""

    TYPE: ClassVar[int] = PayloadType.NAT_D


@dataclass(frozen=True, slots=True)
class NAT_D_DRAFT(_Data):  # noqa: N801
    """The same payload under the number of draft-ietf-ipsec-nat-t-ike-02/03."""

    TYPE: ClassVar[int] = PayloadType.NAT_D_DRAFT


@dataclass(frozen=True, slots=True)
class ID:
    """RFC 2407 §4.6.2: ID Type, Protocol ID, Port, identification data."""

    TYPE: ClassVar[int] = PayloadType.ID
    id_type: int
    data: bytes
    protocol: int = 0
    port: int = 0

    def encode_body(self) -> bytes:
        head = Writer().push_u8(self.id_type).push_u8(self.protocol).push_u16(self.port)
        return head.getvalue() + self.data

    @classmethod
    def decode_body(cls, r: Reader) -> ID:
        id_type, protocol, port = r.pull_u8("ID type"), r.pull_u8("protocol"), r.pull_u16("port")
        return cls(id_type, r.pull_rest(), protocol, port)


@dataclass(frozen=True, slots=True)
class CERT:
    """RFC 2408 §3.9."""

    TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, r: Reader) -> CERT:
        return cls(r.pull_u8("cert encoding"), r.pull_rest())


@dataclass(frozen=True, slots=True)
class CR(CERT):
    """RFC 2408 §3.10: Certificate Type, then a CA's distinguished name (may be empty)."""

    TYPE: ClassVar[int] = PayloadType.CR


@dataclass(frozen=True, slots=True)
class N:
    """Notification (RFC 2408 §3.14): DOI, Protocol-ID, SPI Size, Notify Message Type."""

    TYPE: ClassVar[int] = PayloadType.N
    notify_type: int
    protocol_id: int = 1
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC

    def encode_body(self) -> bytes:
        w = Writer().push_u32(self.doi).push_u8(self.protocol_id).push_u8(len(self.spi))
        return w.push_u16(self.notify_type).push_bytes(self.spi).push_bytes(self.data).getvalue()

    @classmethod
    def decode_body(cls, r: Reader) -> N:
        doi, proto, spi_size = r.pull_u32("DOI"), r.pull_u8("protocol id"), r.pull_u8("spi size")
        notify_type = r.pull_u16("notify type")
        spi = r.pull_bytes(spi_size, "spi")
        return cls(notify_type, proto, spi, r.pull_rest(), doi)


@dataclass(frozen=True, slots=True)
class D:
    """Delete (RFC 2408 §3.15): one protocol, any number of SPIs of one size."""

    TYPE: ClassVar[int] = PayloadType.D
    protocol_id: int
    spis: tuple[bytes, ...]
    doi: int = DOI_IPSEC

    def encode_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        w = Writer().push_u32(self.doi).push_u8(self.protocol_id).push_u8(size)
        w.push_u16(len(self.spis))
        for spi in self.spis:
            w.push_bytes(spi)
        return w.getvalue()

    @classmethod
    def decode_body(cls, r: Reader) -> D:
        doi, proto, size = r.pull_u32("DOI"), r.pull_u8("protocol id"), r.pull_u8("spi size")
        count = r.pull_u16("# of SPIs")
        spis = tuple(r.pull_bytes(size, "spi") for _ in range(count))
        if not r.at_end():
            raise malformed(f"delete payload: {r.remaining} bytes after {count} SPIs")
        return cls(proto, spis, doi)


@dataclass(frozen=True, slots=True)
class NAT_OA:  # noqa: N801
    """RFC 3947 §5.2: the original address of a transport-mode peer (for its UDP checksum)."""

    TYPE: ClassVar[int] = PayloadType.NAT_OA
    id_type: int
    address: bytes

    def encode_body(self) -> bytes:
        return bytes([self.id_type, 0, 0, 0]) + self.address

    @classmethod
    def decode_body(cls, r: Reader) -> NAT_OA:
        id_type = r.pull_u8("NAT-OA ID type")
        r.skip(3, "NAT-OA reserved")
        return cls(id_type, r.pull_rest())


@dataclass(frozen=True, slots=True)
class NAT_OA_DRAFT(NAT_OA):  # noqa: N801
    TYPE: ClassVar[int] = PayloadType.NAT_OA_DRAFT


@dataclass(frozen=True, slots=True)
class Unknown:
    """A payload type we do not know, kept so the chain goes on (its length is known)."""

    type: int
    data: bytes

    @property
    def TYPE(self) -> int:  # noqa: N802 - same interface as the payload classes
        return self.type

    def encode_body(self) -> bytes:
        return self.data


_CODECS: dict[int, Callable[[Reader], object]] = {
    cls.TYPE: cls.decode_body for cls in (
        SA, KE, ID, CERT, CR, HASH, SIG, NONCE, N, D, VID, NAT_D, NAT_D_DRAFT, NAT_OA,
        NAT_OA_DRAFT)
}


# -- the chain ------------------------------------------------------------------------------
def _generic(next_payload: int, body: bytes) -> bytes:
    if len(body) + 4 > 0xFFFF:
        raise ValueError(f"payload of {len(body)} bytes does not fit a Payload Length")
    return Writer().push_u8(next_payload).push_u8(0).push_u16(len(body) + 4).getvalue() + body


def _chain(r: Reader, first: int, allowed: int, what: str) -> list[Reader]:
    """The bodies of a chain of payloads that must all be of type `allowed` (proposals inside
    an SA, transforms inside a proposal)."""
    out, next_type = [], first
    while next_type != PayloadType.NONE:
        if next_type != allowed:
            raise malformed(f"{what} chain continues with payload type {next_type}",
                            NotifyType.BAD_PROPOSAL_SYNTAX)
        next_type, body = _pull_generic(r, what)
        out.append(body)
    if not r.at_end():
        raise malformed(f"{r.remaining} bytes after the last {what}")
    return out


def _pull_generic(r: Reader, what: str) -> tuple[int, Reader]:
    next_type = r.pull_u8(f"{what} next payload")
    r.skip(1, "reserved")
    length = r.pull_u16(f"{what} payload length")
    if length < 4:
        raise malformed(f"{what} payload length {length} < 4")
    return next_type, r.sub_reader(length - 4, f"{what} payload")


def encode_payloads(payloads: list[object] | tuple[object, ...]) -> tuple[int, bytes]:
    """(type of the first payload, the chained bytes) for a message body."""
    parts = []
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].TYPE if i + 1 < len(payloads) else PayloadType.NONE  # type: ignore[attr-defined]
        parts.append(_generic(nxt, p.encode_body()))  # type: ignore[attr-defined]
    first = payloads[0].TYPE if payloads else PayloadType.NONE  # type: ignore[attr-defined]
    return first, b"".join(parts)


def decode_payloads(first: int, body: bytes) -> tuple[tuple[object, ...], tuple[bytes, ...]]:
    """Payloads and their raw bytes (generic header included). Bytes after the last payload
    are the padding of an encrypted body (RFC 2408 §3.1: it is not part of any payload)."""
    try:
        return _decode_chain(first, body)
    except Truncated as exc:
        raise malformed(str(exc)) from exc


def _decode_chain(first: int, body: bytes) -> tuple[tuple[object, ...], tuple[bytes, ...]]:
    r = Reader(body)
    payloads, raws, next_type = [], [], first
    while next_type != PayloadType.NONE:
        if next_type in (PayloadType.P, PayloadType.T):
            raise malformed(f"payload type {next_type} outside an SA",
                            NotifyType.INVALID_PAYLOAD_TYPE)
        start = r.position
        this_type = next_type
        next_type, sub = _pull_generic(r, f"payload type {this_type}")
        codec = _CODECS.get(this_type)
        try:
            payload = codec(sub) if codec else Unknown(this_type, sub.pull_rest())
        except Truncated as exc:
            raise malformed(f"payload type {this_type}: {exc}") from exc
        if not sub.at_end():
            raise malformed(f"payload type {this_type}: {sub.remaining} bytes left inside")
        payloads.append(payload)
        raws.append(body[start:r.position])
    return tuple(payloads), tuple(raws)


# -- header and message (RFC 2408 §3.1) -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Header:
    icookie: bytes
    rcookie: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = ISAKMP_VERSION

    def encode(self, body_length: int) -> bytes:
        w = Writer().push_bytes(self.icookie).push_bytes(self.rcookie)
        w.push_u8(self.next_payload).push_u8(self.version).push_u8(self.exchange)
        w.push_u8(self.flags).push_u32(self.message_id).push_u32(HEADER_LENGTH + body_length)
        return w.getvalue()


def decode_header(data: bytes) -> tuple[Header, bytes]:
    """The header and the body it announces. A datagram shorter than its Length is
    malformed; bytes beyond it are ignored (RFC 2408 §5.1 leaves it to the implementation;
    nothing legitimate sends them)."""
    r = Reader(data)
    icookie, rcookie = r.pull_bytes(8, "initiator cookie"), r.pull_bytes(8, "responder cookie")
    next_payload, version = r.pull_u8("next payload"), r.pull_u8("version")
    exchange, flags = r.pull_u8("exchange type"), r.pull_u8("flags")
    message_id, length = r.pull_u32("message id"), r.pull_u32("length")
    if version >> 4 != 1:
        raise malformed(f"ISAKMP major version {version >> 4}", NotifyType.INVALID_MAJOR_VERSION)
    if length < HEADER_LENGTH or length > len(data):
        raise malformed(f"ISAKMP length {length} for a datagram of {len(data)} bytes",
                        NotifyType.UNEQUAL_PAYLOAD_LENGTHS)
    header = Header(icookie, rcookie, next_payload, exchange, flags, message_id, length, version)
    return header, data[HEADER_LENGTH:length]


@dataclass(frozen=True, slots=True)
class Message:
    header: Header
    payloads: tuple[object, ...]
    raws: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    def find(self, cls: type) -> list:
        return [p for p in self.payloads if isinstance(p, cls)]

    def first(self, cls: type):  # type: ignore[no-untyped-def]
        for p in self.payloads:
            if isinstance(p, cls):
                return p
        return None

    def raw_of(self, cls: type) -> bytes:
        """The received bytes of the first payload of this class, generic header included."""
        for p, raw in zip(self.payloads, self.raws, strict=True):
            if isinstance(p, cls):
                return raw
        raise KeyError(cls.__name__)


def encode_plain(icookie: bytes, rcookie: bytes, exchange: int, message_id: int,
                 payloads: list[object]) -> bytes:
    """A whole unencrypted message."""
    first, body = encode_payloads(payloads)
    return Header(icookie, rcookie, first, exchange, 0, message_id).encode(len(body)) + body


def decode_plain(data: bytes) -> Message:
    header, body = decode_header(data)
    payloads, raws = decode_payloads(header.next_payload, body)
    return Message(header, payloads, raws)
