"""RADIUS attributes (RFC 2865 §5, RFC 2866 §5, RFC 2868 §3, RFC 2869 §5): types, value codecs
as a table (type -> codec), and the ordered, repeatable attribute list a packet carries.

Keys are `Attr` members (or a bare int for a type we do not know) and `VSA(vendor, type)` for
vendor sub-attributes (`tunnels.radius.msvsa.MS` for Microsoft's). A codec's `decode` raises
only `RemoteProtocolError` (the packet is then discarded); its `encode` raises
`LocalProtocolError` for a value our caller got wrong.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

from tunnels._wire import Reader
from tunnels.errors import LocalProtocolError, RemoteProtocolError

Random = Callable[[int], bytes]
MAX_VALUE = 253  # RFC 2865 §5: Length is one octet and counts Type and Length


class Attr(IntEnum):
    """RFC 2865 §5, RFC 2866 §5, RFC 2868 §3, RFC 2869 §5, RFC 3579 §3 attribute types."""

    USER_NAME = 1
    USER_PASSWORD = 2
    CHAP_PASSWORD = 3
    NAS_IP_ADDRESS = 4
    NAS_PORT = 5
    SERVICE_TYPE = 6
    FRAMED_PROTOCOL = 7
    FRAMED_IP_ADDRESS = 8
    FRAMED_IP_NETMASK = 9
    FRAMED_ROUTING = 10
    FILTER_ID = 11
    FRAMED_MTU = 12
    FRAMED_COMPRESSION = 13
    LOGIN_IP_HOST = 14
    LOGIN_SERVICE = 15
    REPLY_MESSAGE = 18
    STATE = 24
    CLASS = 25
    VENDOR_SPECIFIC = 26
    SESSION_TIMEOUT = 27
    IDLE_TIMEOUT = 28
    TERMINATION_ACTION = 29
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    PROXY_STATE = 33
    ACCT_STATUS_TYPE = 40
    ACCT_DELAY_TIME = 41
    ACCT_INPUT_OCTETS = 42
    ACCT_OUTPUT_OCTETS = 43
    ACCT_SESSION_ID = 44
    ACCT_AUTHENTIC = 45
    ACCT_SESSION_TIME = 46
    ACCT_INPUT_PACKETS = 47
    ACCT_OUTPUT_PACKETS = 48
    ACCT_TERMINATE_CAUSE = 49
    ACCT_MULTI_SESSION_ID = 50
    ACCT_LINK_COUNT = 51
    ACCT_INPUT_GIGAWORDS = 52
    ACCT_OUTPUT_GIGAWORDS = 53
    EVENT_TIMESTAMP = 55
    CHAP_CHALLENGE = 60
    NAS_PORT_TYPE = 61
    PORT_LIMIT = 62
    TUNNEL_TYPE = 64
    TUNNEL_MEDIUM_TYPE = 65
    TUNNEL_CLIENT_ENDPOINT = 66
    TUNNEL_SERVER_ENDPOINT = 67
    ACCT_TUNNEL_CONNECTION = 68
    CONNECT_INFO = 77
    EAP_MESSAGE = 79
    MESSAGE_AUTHENTICATOR = 80
    ACCT_INTERIM_INTERVAL = 85
    NAS_PORT_ID = 87
    FRAMED_POOL = 88


class AcctStatusType(IntEnum):
    """RFC 2866 §5.1."""

    START = 1
    STOP = 2
    INTERIM_UPDATE = 3
    ACCOUNTING_ON = 7
    ACCOUNTING_OFF = 8


class AcctTerminateCause(IntEnum):
    """RFC 2866 §5.10 (the causes a VPN server gives)."""

    USER_REQUEST = 1
    LOST_CARRIER = 2
    LOST_SERVICE = 3
    IDLE_TIMEOUT = 4
    SESSION_TIMEOUT = 5
    ADMIN_RESET = 6
    ADMIN_REBOOT = 7
    PORT_ERROR = 8
    NAS_ERROR = 9
    NAS_REQUEST = 10
    NAS_REBOOT = 11
    SERVICE_UNAVAILABLE = 15


class AcctAuthentic(IntEnum):
    """RFC 2866 §5.6: who authenticated the user."""

    RADIUS = 1
    LOCAL = 2
    REMOTE = 3


class NASPortType(IntEnum):
    """RFC 2865 §5.41; Virtual is what a VPN server reports (the chapter's policy condition)."""

    ASYNC = 0
    SYNC = 1
    ISDN_SYNC = 2
    VIRTUAL = 5


class TunnelType(IntEnum):
    """RFC 2868 §3.1."""

    PPTP = 1
    L2TP = 3


class TunnelMediumType(IntEnum):
    """RFC 2868 §3.2 (address family numbers)."""

    IPV4 = 1
    IPV6 = 2


class ServiceType(IntEnum):
    LOGIN = 1
    FRAMED = 2


class FramedProtocol(IntEnum):
    PPP = 1


class VSA(NamedTuple):
    """The key of a vendor sub-attribute in the RFC 2865 §5.26 recommended format."""

    vendor: int
    type: int


Key = int | VSA


@dataclass(frozen=True, slots=True)
class Crypt:
    """What hidden attributes need: the shared secret, the authenticator they are hidden with
    (an Access-Request's own, or for a reply the Request Authenticator it answers) and, to encode
    salted values, a source of random bytes."""

    secret: bytes
    authenticator: bytes
    random: Random | None = None


class Codec(Protocol):
    def encode(self, value: Any, crypt: Crypt) -> bytes: ...

    def decode(self, raw: bytes, crypt: Crypt) -> Any: ...


def _wrong(value: object, expected: str) -> LocalProtocolError:
    return LocalProtocolError(f"attribute value {value!r}: expected {expected}", None)


class Octets:
    """RFC 2865 `string`: any octets, at least one."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray)):
            raise _wrong(value, "bytes")
        return bytes(value)

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return raw


class Text(Octets):
    """RFC 2865 `text`: UTF-8."""

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"text attribute is not UTF-8: {raw!r}") from exc


class Integer:
    """RFC 2865 `integer` and `time`: 32 bits; an IntEnum when the type has one."""

    def __init__(self, enum: type[IntEnum] | None = None):
        self.enum = enum

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise _wrong(value, "an unsigned 32-bit integer")
        return value.to_bytes(4, "big")

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        value = Reader(raw).pull_u32("integer") if len(raw) == 4 else _bad_length(raw, 4)
        if self.enum is not None and value in self.enum._value2member_map_:
            return self.enum(value)
        return value


class TaggedInteger(Integer):
    """RFC 2868 §3.1: a tag octet (0 here: one tunnel) and a 24-bit value."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, int) or not 0 <= value < 1 << 24:
            raise _wrong(value, "a 24-bit integer")
        return value.to_bytes(4, "big")

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return super().decode(b"\0" + raw[1:] if len(raw) == 4 else raw, crypt)


class TaggedText(Text):
    """RFC 2868 §3.3/§3.4 (Tunnel-Client/Server-Endpoint): an optional tag octet 0x00..0x1F
    before the text; a first octet above 0x1F is text. Sent without a tag (one tunnel) unless
    the text itself would read as one."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        raw = super().encode(value, crypt)
        return b"\0" + raw if raw and raw[0] <= 0x1F else raw

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return super().decode(raw[1:] if raw[0] <= 0x1F else raw, crypt)


class Address:
    """RFC 2865 `address`: an IPv4 address."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        try:
            return ipaddress.IPv4Address(value).packed
        except ValueError as exc:
            raise _wrong(value, "an IPv4 address") from exc

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return ipaddress.IPv4Address(raw if len(raw) == 4 else _bad_length(raw, 4))


def _bad_length(raw: bytes, wanted: int) -> Any:
    raise RemoteProtocolError(f"attribute of {len(raw)} octets, {wanted} expected")


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2: pad to 16n with NULs, c(i) = p(i) xor MD5(S + c(i-1)), c(0) = RA."""
    if not 1 <= len(password) <= 128:
        raise LocalProtocolError(f"password of {len(password)} octets (1..128)", None)
    padded = password + b"\0" * (-len(password) % 16)
    return _md5_chain(padded, secret, authenticator, encrypt=True)


def unhide_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes:
    if not 16 <= len(hidden) <= 128 or len(hidden) % 16:
        raise RemoteProtocolError(f"hidden password of {len(hidden)} octets (16n, 16..128)")
    return _md5_chain(hidden, secret, authenticator, encrypt=False).rstrip(b"\0")


def _md5_chain(data: bytes, secret: bytes, vector: bytes, encrypt: bool) -> bytes:
    """The MD5 stream of RFC 2865 §5.2 and RFC 2548 §2.4.2: each block keys on the previous
    ciphertext block (the output when encrypting, the input when decrypting)."""
    out = bytearray()
    last = vector
    for i in range(0, len(data), 16):
        block = data[i : i + 16]
        pad = hashlib.md5(secret + last).digest()
        result = bytes(a ^ b for a, b in zip(block, pad, strict=True))
        out += result
        last = result if encrypt else block
    return bytes(out)


class UserPassword:
    """RFC 2865 §5.2; the value is the plain password (str or bytes), decoded as bytes."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        if not isinstance(raw, (bytes, bytearray)):
            raise _wrong(value, "a password")
        return hide_password(bytes(raw), crypt.secret, crypt.authenticator)

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return unhide_password(raw, crypt.secret, crypt.authenticator)


@dataclass(frozen=True, slots=True)
class ChapPassword:
    """RFC 2865 §5.3: the CHAP Identifier and the 16-octet MD5 response."""

    ident: int
    response: bytes


class ChapPasswordCodec:
    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, ChapPassword) or len(value.response) != 16:
            raise _wrong(value, "ChapPassword(ident, 16-octet response)")
        return bytes([value.ident]) + value.response

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        if len(raw) != 17:
            _bad_length(raw, 17)
        return ChapPassword(raw[0], raw[1:])


class MessageAuthenticatorCodec(Octets):
    """RFC 3579 §3.2: 16 octets, filled in by the packet encoder (any value given is a
    placeholder)."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        return b"\0" * 16

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return raw if len(raw) == 16 else _bad_length(raw, 16)


_TEXT, _OCTETS, _INT, _ADDR = Text(), Octets(), Integer(), Address()

STANDARD_CODECS: Mapping[int, Codec] = {
    Attr.USER_NAME: _TEXT,
    Attr.USER_PASSWORD: UserPassword(),
    Attr.CHAP_PASSWORD: ChapPasswordCodec(),
    Attr.NAS_IP_ADDRESS: _ADDR,
    Attr.NAS_PORT: _INT,
    Attr.SERVICE_TYPE: Integer(ServiceType),
    Attr.FRAMED_PROTOCOL: Integer(FramedProtocol),
    Attr.FRAMED_IP_ADDRESS: _ADDR,
    Attr.FRAMED_IP_NETMASK: _ADDR,
    Attr.FRAMED_ROUTING: _INT,
    Attr.FILTER_ID: _TEXT,
    Attr.FRAMED_MTU: _INT,
    Attr.FRAMED_COMPRESSION: _INT,
    Attr.LOGIN_IP_HOST: _ADDR,
    Attr.LOGIN_SERVICE: _INT,
    Attr.REPLY_MESSAGE: _TEXT,
    Attr.STATE: _OCTETS,
    Attr.CLASS: _OCTETS,
    Attr.SESSION_TIMEOUT: _INT,
    Attr.IDLE_TIMEOUT: _INT,
    Attr.TERMINATION_ACTION: _INT,
    Attr.CALLED_STATION_ID: _TEXT,
    Attr.CALLING_STATION_ID: _TEXT,
    Attr.NAS_IDENTIFIER: _TEXT,
    Attr.PROXY_STATE: _OCTETS,
    Attr.ACCT_STATUS_TYPE: Integer(AcctStatusType),
    Attr.ACCT_DELAY_TIME: _INT,
    Attr.ACCT_INPUT_OCTETS: _INT,
    Attr.ACCT_OUTPUT_OCTETS: _INT,
    Attr.ACCT_SESSION_ID: _TEXT,
    Attr.ACCT_AUTHENTIC: Integer(AcctAuthentic),
    Attr.ACCT_SESSION_TIME: _INT,
    Attr.ACCT_INPUT_PACKETS: _INT,
    Attr.ACCT_OUTPUT_PACKETS: _INT,
    Attr.ACCT_TERMINATE_CAUSE: Integer(AcctTerminateCause),
    Attr.ACCT_MULTI_SESSION_ID: _TEXT,
    Attr.ACCT_LINK_COUNT: _INT,
    Attr.ACCT_INPUT_GIGAWORDS: _INT,
    Attr.ACCT_OUTPUT_GIGAWORDS: _INT,
    Attr.EVENT_TIMESTAMP: _INT,
    Attr.CHAP_CHALLENGE: _OCTETS,
    Attr.NAS_PORT_TYPE: Integer(NASPortType),
    Attr.PORT_LIMIT: _INT,
    Attr.TUNNEL_TYPE: TaggedInteger(TunnelType),
    Attr.TUNNEL_MEDIUM_TYPE: TaggedInteger(TunnelMediumType),
    Attr.TUNNEL_CLIENT_ENDPOINT: TaggedText(),
    Attr.TUNNEL_SERVER_ENDPOINT: TaggedText(),
    Attr.CONNECT_INFO: _TEXT,
    Attr.EAP_MESSAGE: _OCTETS,
    Attr.MESSAGE_AUTHENTICATOR: MessageAuthenticatorCodec(),
    Attr.ACCT_INTERIM_INTERVAL: _INT,
    Attr.NAS_PORT_ID: _TEXT,
    Attr.FRAMED_POOL: _TEXT,
}


def normalize_key(key: Key) -> Key:
    """`Attr` for a known standard type, as given otherwise (VSA, unknown int)."""
    if isinstance(key, tuple):
        return key if isinstance(key, VSA) else VSA(*key)
    return Attr(key) if key in Attr._value2member_map_ else key


class Attributes:
    """An ordered list of (key, value): RADIUS attributes repeat and their order matters
    (RFC 2865 §5: Proxy-State, Reply-Message, EAP-Message)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[Key, Any]] | Mapping[Key, Any] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[Key, Any], ...] = tuple(
            (normalize_key(k), v) for k, v in pairs)

    def get(self, key: Key, default: Any = None) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, key: Key) -> list[Any]:
        return [v for k, v in self._items if k == key]

    def plus(self, *items: tuple[Key, Any], first: bool = False) -> Attributes:
        return Attributes(items + self._items if first else self._items + items)

    def without(self, key: Key) -> Attributes:
        return Attributes((k, v) for k, v in self._items if k != key)

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self._items)

    def __iter__(self) -> Iterator[tuple[Key, Any]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attributes) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Attributes({list(self._items)!r})"
