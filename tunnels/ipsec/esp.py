"""ESP in transport mode (RFC 4303): the packet between the IP header and the end, and the
IPv4 rewriting around it, plain (IP protocol 50) or UDP-encapsulated (RFC 3948).

    SPI (4) | Sequence Number (4) | IV (one block) | ciphertext of
        [payload | padding 1, 2, 3, ... | pad length (1) | next header (1)] | ICV (12)

Decapsulation follows RFC 4303 §3.4 and the chapter: (1) the sequence number against the
replay window (§3.4.3, cheap, before any cryptography), (2) the ICV (§3.4.4.1, before
decrypting: a forged packet is never decrypted), (3) decryption, (4) the padding (§2.4: the
receiver SHOULD check it), (5) only then the window moves. Every failure is a silent discard
(§3.4.3, §3.4.4.1: "the receiver MUST discard the received IP datagram as invalid"), counted
on the SA, raised as an `EspError` whose `wire_answer` is DISCARD.

Steps (2)-(4) and the sealing (header, padding, CBC, ICV and, for `encapsulate_udp`, the UDP
header and checksum) run in one call of the SA's compiled context (`sa.fast`,
crypto.fast_context) when tunnels/ipsec/_fastesp.c is built, else in the pure-Python path
below; both give the same bytes and the same outcome. Sequence numbers, the window,
lifetimes and counters are here either way.
"""

from __future__ import annotations

import os
import struct

from tunnels.errors import DISCARD, LocalProtocolError, RemoteProtocolError
from tunnels.ipsec.ipv4 import (PROTO_ESP, PROTO_TCP, PROTO_UDP, checksum_with, parse_ipv4,
                                parse_udp, udp_header)
from tunnels.ipsec.natt import classify, fix_transport_checksum
from tunnels.ipsec.sa import SecurityAssociation

NO_NEXT_HEADER = 59  # §2.6: a dummy packet, discarded by the receiver
_HEADER = struct.Struct("!II")
_UDP = struct.Struct("!HHHH")
_PADDING = bytes(range(1, 256))  # §2.4: the default padding is 1, 2, 3, ...


class EspError(RemoteProtocolError):
    """An ESP packet that is dropped; `counter` names the SA counter it was counted in."""

    counter = "malformed"

    def __init__(self, message: str):
        super().__init__(message, DISCARD)


class EspMalformed(EspError):
    """Too short, not a whole number of blocks, or an IP/UDP envelope that does not hold."""


class EspUnknownSpi(EspMalformed):
    """The SPI is not this SA's: another SA's packet, counted by the policy, not on the SA."""

    counter = "unknown_spi"


class EspReplayed(EspError):
    """Duplicate, left of the window, or sequence number 0 (§3.4.3)."""

    counter = "replayed"


class EspAuthenticationFailed(EspError):
    """The ICV does not match (§3.4.4.1); the packet was not decrypted."""

    counter = "auth_failures"


class EspBadPadding(EspMalformed):
    """Authentic and decrypted, but the padding is not 1, 2, 3, ... or too long (§2.4)."""

    counter = "bad_padding"


class EspExpired(EspError):
    """The SA passed its hard lifetime (RFC 4301 §4.4.2.1)."""

    counter = "expired"


class EspDummy(EspError):
    """Next header 59: traffic-flow-confidentiality filler, dropped once authenticated."""

    counter = "dummy"


class SAExpired(LocalProtocolError):
    """Sending on an SA past its hard lifetime: the caller must rekey first."""


def _drop(sa: SecurityAssociation, error: EspError) -> EspError:
    setattr(sa.counters, error.counter, getattr(sa.counters, error.counter) + 1)
    return error


def _trailers(block: int) -> tuple[bytes, ...]:
    """Padding and pad length for each pad length a `block`-octet cipher can need (§2.4)."""
    return tuple(_PADDING[:n] + bytes([n]) for n in range(block))


_TRAILERS = {8: _trailers(8), 16: _trailers(16)}


def _trailer(sa: SecurityAssociation, payload_len: int) -> bytes:
    """What follows the payload but the next header octet: blocks of 8 or 16 also give
    §2.4's 4-octet alignment."""
    block = sa.enc.block_size
    pad_len = -(payload_len + 2) % block
    trailers = _TRAILERS.get(block)
    return trailers[pad_len] if trailers else _PADDING[:pad_len] + bytes([pad_len])


def _begin(sa: SecurityAssociation, iv: bytes | None, now: float | None) -> int:
    """The checks before sealing (the IV's size, the hard lifetime), then the sequence
    number the packet takes."""
    if iv is not None and len(iv) != sa.enc.block_size:
        raise LocalProtocolError(f"{sa.cipher} needs a {sa.enc.block_size}-octet IV, "
                                 f"got {len(iv)}")
    if (0 < sa.lifetime_bytes <= sa.counters.bytes) or (now is not None and sa.expired(now)):
        raise SAExpired(f"SPI {sa.spi:#010x} is past its hard lifetime; rekey")
    return sa.next_sequence()


def _count(sa: SecurityAssociation, payload_len: int) -> None:
    counters = sa.counters
    counters.packets += 1
    counters.bytes += payload_len


def _seal(sa: SecurityAssociation, plaintext: bytearray, seq: int, iv: bytes | None) -> bytes:
    """The pure-Python path: encrypt `plaintext` (payload and trailer, whole blocks) and
    frame it: header, IV, ciphertext, ICV over the three (§3.3.4, integrity after
    encryption)."""
    if iv is None:
        iv = os.urandom(sa.enc.block_size)
    head = _HEADER.pack(sa.spi, seq) + iv
    ciphertext = sa.enc.encrypt(iv, plaintext)
    return b"".join((head, ciphertext, sa.auth.icv(head, ciphertext)))


def encapsulate(sa: SecurityAssociation, next_header: int, payload: bytes,
                iv: bytes | None, now: float | None = None) -> bytes:
    """The ESP packet carrying `payload` (what follows the IP header, of protocol
    `next_header`). `iv` must be one fresh unpredictable block (RFC 3602 §3); None draws
    one here. With `now` the time lifetime is checked too; bytes and sequence space are
    checked always."""
    seq = _begin(sa, iv, now)
    if sa.fast is not None:
        packet = sa.fast.seal(sa.spi, seq, iv, next_header, payload)
    else:
        plaintext = bytearray(payload)
        plaintext += _trailer(sa, len(payload))
        plaintext.append(next_header)
        packet = _seal(sa, plaintext, seq, iv)
    _count(sa, len(payload))
    return packet


def encapsulate_udp(sa: SecurityAssociation, sport: int, dport: int, udp_payload: bytes,
                    addresses: int, iv: bytes | None, now: float | None = None) -> bytes:
    """`encapsulate` of a UDP datagram (next header 17) built in the plaintext buffer
    itself: the UDP header with its checksum over `addresses` (ipv4.address_sum of the SA's
    addresses, RFC 768's pseudo-header), the payload, then the ESP trailer. One buffer, no
    intermediate segment; with the compiled path, one call."""
    seq = _begin(sa, iv, now)
    length = 8 + len(udp_payload)
    if sa.fast is not None:
        packet = sa.fast.seal_udp(sa.spi, seq, iv, sport, dport, addresses, udp_payload)
    else:
        plaintext = bytearray(_UDP.pack(sport, dport, length, 0))
        plaintext += udp_payload
        plaintext[6:8] = checksum_with(addresses, PROTO_UDP, plaintext).to_bytes(2, "big")
        plaintext += _trailer(sa, length)
        plaintext.append(PROTO_UDP)
        packet = _seal(sa, plaintext, seq, iv)
    _count(sa, length)
    return packet


def open_esp(sa: SecurityAssociation, data: bytes | memoryview,
             now: float) -> tuple[int, bytes, int, int]:
    """(next header, buffer, start, end): the payload is `buffer[start:end]`, left for the
    caller to slice once (see `decapsulate`, which is this and the slice; module docstring
    for the order of the checks)."""
    size = len(data)
    block = sa.enc.block_size
    body = size - sa.auth.icv_size - 8  # IV + ciphertext
    if size < 8 or body < 2 * block or body % block:
        raise _drop(sa, EspMalformed(f"ESP of {size} octets for {sa.cipher}/{sa.integrity}"))
    spi, seq = _HEADER.unpack_from(data)
    if spi != sa.spi:
        raise EspUnknownSpi(f"SPI {spi:#010x} is not {sa.spi:#010x}")
    if sa.expired(now):
        raise _drop(sa, EspExpired(f"SPI {spi:#010x} past its hard lifetime"))
    window = sa.window
    if not window.check(seq):
        raise _drop(sa, EspReplayed(f"SPI {spi:#010x} seq {seq} replayed or outside the "
                                    f"window (highest {window.highest})"))
    if sa.fast is not None:
        opened = sa.fast.open(data)  # ICV, decryption and padding in one call
        if type(opened) is int:
            raise _drop(sa, _FAST_ERRORS[opened](f"SPI {spi:#010x} seq {seq}: "
                                                 f"{_FAST_TEXT[opened]}"))
        next_header, plain = opened
        start, end = 0, len(plain)
    else:
        next_header, plain, start, end = _open(sa, data, spi, seq)
    window.update(seq)
    if next_header == NO_NEXT_HEADER:
        raise _drop(sa, EspDummy(f"SPI {spi:#010x} seq {seq}: dummy packet"))
    _count(sa, end - start)
    return next_header, plain, start, end


_FAST_ERRORS: dict[int, type[EspError]] = {1: EspMalformed, 2: EspAuthenticationFailed,
                                            3: EspBadPadding}  # _fastesp's statuses
_FAST_TEXT = {1: "malformed", 2: "ICV mismatch",
              3: "pad length or padding that is not 1, 2, 3, ..."}


def _open(sa: SecurityAssociation, data: bytes | memoryview, spi: int,
          seq: int) -> tuple[int, bytes, int, int]:
    """The pure-Python path of `open_esp`: ICV, decryption, padding."""
    view = memoryview(data)
    icv_at = len(data) - sa.auth.icv_size
    if not sa.auth.verify(view[:icv_at], view[icv_at:]):
        raise _drop(sa, EspAuthenticationFailed(f"SPI {spi:#010x} seq {seq}: ICV mismatch"))
    plain = sa.enc.decrypt_blocks(view[8:icv_at])  # the IV's block first: garbage, skipped
    pad_len, next_header = plain[-2], plain[-1]
    block = sa.enc.block_size
    end = len(plain) - 2 - pad_len
    if end < block or (pad_len and plain[end:-2] != _PADDING[:pad_len]):
        raise _drop(sa, EspBadPadding(f"SPI {spi:#010x} seq {seq}: pad length {pad_len} "
                                      f"with padding that is not 1, 2, 3, ..."))
    return next_header, plain, block, end


def decapsulate(sa: SecurityAssociation, data: bytes | memoryview,
                now: float) -> tuple[int, bytes]:
    """(next header, payload) of an ESP packet for `sa`, or an `EspError` (see module)."""
    next_header, plain, start, end = open_esp(sa, data, now)
    return next_header, plain[start:end]


def protect_ipv4(sa: SecurityAssociation, ip_packet: bytes, iv: bytes,
                 now: float | None = None) -> bytes:
    """A whole IPv4 packet (not a fragment: ESP comes before fragmentation, RFC 4303
    §3.3.4) in transport mode: the header kept with protocol 50, or 17 and a UDP header
    from `sa.encap` (checksum zero, RFC 3948 §2.1), length and checksum rewritten."""
    try:
        header = parse_ipv4(ip_packet)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"not an IPv4 packet to protect: {exc}") from None
    if header.is_fragment:
        raise LocalProtocolError("transport mode protects whole datagrams, not fragments")
    payload = ip_packet[header.header_len : header.total_len]
    esp = encapsulate(sa, header.proto, payload, iv, now)
    if sa.encap is None:
        return header.rewrite(PROTO_ESP, len(esp)) + esp
    udp = udp_header(sa.encap[0], sa.encap[1], len(esp))
    return b"".join((header.rewrite(PROTO_UDP, 8 + len(esp)), udp, esp))


def unprotect_ipv4(sa: SecurityAssociation, packet: bytes, now: float,
                   original: tuple[bytes, bytes] | None = None) -> bytes:
    """The inner IPv4 packet of a transport-mode ESP packet (plain or UDP-encapsulated).

    With UDP encapsulation the inner TCP/UDP checksum is repaired for the addresses the
    packet arrived with (RFC 3948 §3.1.2), using `original` = the peer's NAT-OA (source,
    destination) as 4-octet addresses when IKE received them.
    """
    try:
        header = parse_ipv4(packet)
    except RemoteProtocolError as exc:
        raise _drop(sa, EspMalformed(str(exc))) from None
    if header.is_fragment:
        raise _drop(sa, EspMalformed("IPv4 fragment: reassemble before ESP (RFC 4303 §3.4.1)"))
    start, stop = header.header_len, header.total_len
    if header.proto == PROTO_UDP and sa.encap is not None:
        try:
            _, _, length = parse_udp(memoryview(packet)[start:stop])
            if classify(memoryview(packet)[start + 8 : start + 8 + length]) != "esp":
                raise EspMalformed("UDP-encapsulated packet is IKE or a keepalive, not ESP")
        except RemoteProtocolError as exc:
            raise _drop(sa, EspMalformed(str(exc))) from None
        start, stop = start + 8, start + 8 + length
    elif header.proto != PROTO_ESP or sa.encap is not None:
        raise _drop(sa, EspMalformed(f"IP protocol {header.proto} for an SA with "
                                     f"encapsulation {sa.encap}"))
    next_header, payload = decapsulate(sa, packet[start:stop], now)
    if sa.encap is not None and next_header in (PROTO_TCP, PROTO_UDP):
        payload = fix_transport_checksum(next_header, payload, (header.src, header.dst),
                                         original)
    return header.rewrite(next_header, len(payload)) + payload
