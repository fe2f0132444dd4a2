"""A strict DHCP codec: RFC 2131 §2's BOOTP header and RFC 2132's options.

`DHCPMessage.decode(data)` raises `RemoteProtocolError` (or its `Truncated`) naming what is
wrong: a header shorter than 236 bytes, a bad op or hardware length, no magic cookie, an
option running past the end, no END option, no message type (a plain BOOTP message), an
unknown message type, or a known option of the wrong length. Options we know are decoded to
typed values (addresses as dotted strings, times as ints, the parameter request list as a
tuple); every other option is kept as raw bytes, so nothing is lost. An option that appears
more than once is one option split in parts (RFC 3396 §7: concatenated before decoding), and
option overload (RFC 2132 §9.3) is honoured: options carried in `file`/`sname` are read too.

`encode()` writes the message type first, the rest in the order given, END, then PAD up to 300
bytes (the BOOTP minimum some relays still require, RFC 1542 §2.1); a value over 255 bytes is
split across repeated options (RFC 3396).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from tunnels._wire import Reader, Writer
from tunnels.errors import RemoteProtocolError

SERVER_PORT, CLIENT_PORT = 67, 68
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3: 99.130.83.99
HEADER_LENGTH = 236
MIN_LENGTH = 300
BROADCAST_FLAG = 0x8000  # RFC 2131 §2 figure 2: the leftmost bit of `flags`
ZERO = "0.0.0.0"


class Op(IntEnum):
    BOOTREQUEST = 1
    BOOTREPLY = 2


class MessageType(IntEnum):
    """RFC 2132 §9.6."""

    DHCPDISCOVER = 1
    DHCPOFFER = 2
    DHCPREQUEST = 3
    DHCPDECLINE = 4
    DHCPACK = 5
    DHCPNAK = 6
    DHCPRELEASE = 7
    DHCPINFORM = 8


class Opt(IntEnum):
    """RFC 2132 option codes (the ones we give a type; any other is kept raw)."""

    PAD = 0
    SUBNET_MASK = 1  # §3.3
    ROUTER = 3  # §3.5
    DNS = 6  # §3.8
    HOST_NAME = 12  # §3.14
    REQUESTED_ADDRESS = 50  # §9.1
    LEASE_TIME = 51  # §9.2
    OVERLOAD = 52  # §9.3
    MESSAGE_TYPE = 53  # §9.6
    SERVER_ID = 54  # §9.7
    PARAMETER_REQUEST_LIST = 55  # §9.8
    MESSAGE = 56  # §9.9
    RENEWAL_TIME = 58  # §9.11, T1
    REBINDING_TIME = 59  # §9.12, T2
    CLIENT_ID = 61  # §9.14
    END = 255


@dataclass(frozen=True, slots=True)
class _OptionCodec:
    """How one option's value is read and written; `check` names a length rule."""

    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    check: Callable[[int], bool]
    rule: str


def _address(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _address_bytes(value: str) -> bytes:
    return ipaddress.IPv4Address(value).packed


def _addresses(raw: bytes) -> tuple[str, ...]:
    return tuple(_address(raw[i:i + 4]) for i in range(0, len(raw), 4))


def _addresses_bytes(value: tuple[str, ...] | list[str]) -> bytes:
    return b"".join(_address_bytes(a) for a in value)


def _u32(raw: bytes) -> int:
    return Reader(raw).pull_u32("u32 option")


def _u32_bytes(value: int) -> bytes:
    return Writer().push_u32(value).getvalue()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


_ADDRESS = _OptionCodec(_address, _address_bytes, lambda n: n == 4, "4 bytes")
_ADDRESS_LIST = _OptionCodec(_addresses, _addresses_bytes, lambda n: n >= 4 and n % 4 == 0,
                             "a non-empty multiple of 4 bytes")
_U32 = _OptionCodec(_u32, _u32_bytes, lambda n: n == 4, "4 bytes")
_TEXT = _OptionCodec(_text, str.encode, lambda n: n >= 1, "at least 1 byte")
_OPTIONS: Mapping[int, _OptionCodec] = {
    Opt.SUBNET_MASK: _ADDRESS,
    Opt.ROUTER: _ADDRESS_LIST,
    Opt.DNS: _ADDRESS_LIST,
    Opt.HOST_NAME: _TEXT,
    Opt.REQUESTED_ADDRESS: _ADDRESS,
    Opt.LEASE_TIME: _U32,
    Opt.OVERLOAD: _OptionCodec(lambda raw: raw[0], lambda v: bytes([v]),
                               lambda n: n == 1, "1 byte"),
    Opt.MESSAGE_TYPE: _OptionCodec(lambda raw: raw[0], lambda v: bytes([v]),
                                   lambda n: n == 1, "1 byte"),
    Opt.SERVER_ID: _ADDRESS,
    Opt.PARAMETER_REQUEST_LIST: _OptionCodec(tuple, bytes, lambda n: n >= 1, "at least 1 byte"),
    Opt.MESSAGE: _TEXT,
    Opt.RENEWAL_TIME: _U32,
    Opt.REBINDING_TIME: _U32,
    Opt.CLIENT_ID: _OptionCodec(bytes, bytes, lambda n: n >= 2, "at least 2 bytes (§9.14)"),
}


def _option_name(code: int) -> str:
    return Opt(code).name if code in Opt._value2member_map_ else f"option {code}"


@dataclass(frozen=True, slots=True)
class DHCPMessage:
    """One DHCP message. `options` maps option codes to values (typed for the codes in `Opt`,
    bytes otherwise) without the message type, which is its own field."""

    op: Op
    message_type: MessageType
    xid: int
    chaddr: bytes
    ciaddr: str = ZERO
    yiaddr: str = ZERO
    siaddr: str = ZERO
    giaddr: str = ZERO
    flags: int = 0
    secs: int = 0
    hops: int = 0
    htype: int = 1  # RFC 1700: 10 Mb Ethernet
    sname: bytes = b""
    file: bytes = b""
    options: Mapping[int, Any] = field(default_factory=dict)

    # conveniences for the options a lease needs -----------------------------------------
    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    @property
    def server_id(self) -> str | None:
        return self.options.get(Opt.SERVER_ID)

    @property
    def requested_address(self) -> str | None:
        return self.options.get(Opt.REQUESTED_ADDRESS)

    @property
    def lease_time(self) -> int | None:
        return self.options.get(Opt.LEASE_TIME)

    @property
    def renewal_time(self) -> int | None:
        return self.options.get(Opt.RENEWAL_TIME)

    @property
    def rebinding_time(self) -> int | None:
        return self.options.get(Opt.REBINDING_TIME)

    @property
    def client_id(self) -> bytes | None:
        return self.options.get(Opt.CLIENT_ID)

    # codec --------------------------------------------------------------------------------
    def encode(self) -> bytes:
        if not 1 <= len(self.chaddr) <= 16:
            raise ValueError(f"chaddr of {len(self.chaddr)} bytes: expected 1 to 16")
        w = Writer()
        w.push_u8(self.op).push_u8(self.htype).push_u8(len(self.chaddr)).push_u8(self.hops)
        w.push_u32(self.xid).push_u16(self.secs).push_u16(self.flags)
        for address in (self.ciaddr, self.yiaddr, self.siaddr, self.giaddr):
            w.push_bytes(_address_bytes(address))
        w.push_bytes(self.chaddr.ljust(16, b"\0"))
        w.push_bytes(_fixed(self.sname, 64, "sname")).push_bytes(_fixed(self.file, 128, "file"))
        w.push_bytes(MAGIC_COOKIE)
        _push_option(w, Opt.MESSAGE_TYPE, bytes([self.message_type]))
        for code, value in self.options.items():
            if code in (Opt.MESSAGE_TYPE, Opt.PAD, Opt.END):
                raise ValueError(f"{_option_name(code)} is not an option value")
            codec = _OPTIONS.get(code)
            try:
                raw = codec.encode(value) if codec is not None else bytes(value)
            except (struct.error, ValueError, TypeError) as exc:
                raise ValueError(f"{_option_name(code)}: cannot encode {value!r}: {exc}") from None
            if codec is not None and not codec.check(len(raw)):
                raise ValueError(f"{_option_name(code)}: {len(raw)} bytes, expected {codec.rule}")
            _push_option(w, code, raw)
        w.push_u8(Opt.END)
        if len(w) < MIN_LENGTH:
            w.push_bytes(bytes(MIN_LENGTH - len(w)))
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> DHCPMessage:
        if len(data) < HEADER_LENGTH + len(MAGIC_COOKIE):
            raise RemoteProtocolError(f"DHCP message of {len(data)} bytes: shorter than the "
                                      f"{HEADER_LENGTH}-byte BOOTP header and the magic cookie")
        r = Reader(data)
        op, htype, hlen, hops = (r.pull_u8(n) for n in ("op", "htype", "hlen", "hops"))
        if op not in (Op.BOOTREQUEST, Op.BOOTREPLY):
            raise RemoteProtocolError(f"BOOTP op {op}: expected 1 (request) or 2 (reply)")
        if not 1 <= hlen <= 16:
            raise RemoteProtocolError(f"hardware address length {hlen}: expected 1 to 16")
        xid, secs, flags = r.pull_u32("xid"), r.pull_u16("secs"), r.pull_u16("flags")
        ciaddr, yiaddr, siaddr, giaddr = (_address(r.pull_bytes(4, n))
                                          for n in ("ciaddr", "yiaddr", "siaddr", "giaddr"))
        chaddr = r.pull_bytes(16, "chaddr")[:hlen]
        sname, file = r.pull_bytes(64, "sname"), r.pull_bytes(128, "file")
        if r.pull_bytes(4, "magic cookie") != MAGIC_COOKIE:
            raise RemoteProtocolError("no DHCP magic cookie 99.130.83.99 after the BOOTP header")
        parts: dict[int, list[bytes]] = {}
        _read_options(r, parts, "options")
        overload = _decode_value(Opt.OVERLOAD, parts.pop(Opt.OVERLOAD, None))
        if overload is not None:
            if overload not in (1, 2, 3):
                raise RemoteProtocolError(f"option overload {overload}: expected 1, 2 or 3")
            for bit, area, name in ((1, file, "file"), (2, sname, "sname")):  # §9.3's order
                if overload & bit:
                    _read_options(Reader(area), parts, f"options in {name}")
            sname, file = (b"" if overload & 2 else sname), (b"" if overload & 1 else file)
        kind = _decode_value(Opt.MESSAGE_TYPE, parts.pop(Opt.MESSAGE_TYPE, None))
        if kind is None:
            raise RemoteProtocolError("no DHCP message type (option 53): a BOOTP message")
        if kind not in MessageType._value2member_map_:
            raise RemoteProtocolError(f"DHCP message type {kind} is not one of RFC 2132 §9.6")
        options = {code: _decode_value(code, chunks) for code, chunks in parts.items()}
        return cls(Op(op), MessageType(kind), xid, chaddr, ciaddr, yiaddr, siaddr, giaddr,
                   flags, secs, hops, htype, sname.rstrip(b"\0"), file.rstrip(b"\0"), options)


def _fixed(value: bytes, size: int, name: str) -> bytes:
    if len(value) > size:
        raise ValueError(f"{name} of {len(value)} bytes: at most {size}")
    return value.ljust(size, b"\0")


def _push_option(w: Writer, code: int, raw: bytes) -> None:
    if not raw:
        raise ValueError(f"{_option_name(code)} with an empty value")
    for start in range(0, len(raw), 255):  # RFC 3396 §5: split, the receiver concatenates
        chunk = raw[start:start + 255]
        w.push_u8(code).push_u8(len(chunk)).push_bytes(chunk)


def _read_options(r: Reader, parts: dict[int, list[bytes]], where: str) -> None:
    """Options up to END into `parts` (repeated codes gathered, RFC 3396 §7); PAD skipped."""
    while True:
        if r.at_end():
            raise RemoteProtocolError(f"{where} end without the END option (255)")
        code = r.pull_u8("option code")
        if code == Opt.END:
            return  # what follows END is padding (RFC 2131 §4.1)
        if code == Opt.PAD:
            continue
        length = r.pull_u8(f"{_option_name(code)} length")
        parts.setdefault(code, []).append(r.pull_bytes(length, f"{_option_name(code)} value"))


def _decode_value(code: int, chunks: list[bytes] | None) -> Any:
    if chunks is None:
        return None
    raw = b"".join(chunks)
    codec = _OPTIONS.get(code)
    if codec is None:
        return raw
    if not codec.check(len(raw)):
        raise RemoteProtocolError(f"{_option_name(code)} of {len(raw)} bytes: expected "
                                  f"{codec.rule}")
    return codec.decode(raw)
