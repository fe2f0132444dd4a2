"""Microsoft's vendor-specific attributes (RFC 2548, vendor 311) and their encryption.

MS-CHAP-MPPE-Keys is hidden like User-Password (§2.4.1); MS-MPPE-Send-Key and -Recv-Key are
salt-encrypted (§2.4.2/§2.4.3): P = key length + key + zero padding to 16n octets,
b(1) = MD5(S + R + A), c(i) = p(i) xor b(i), b(i) = MD5(S + c(i-1)), where R is the Request
Authenticator of the Access-Request and A a 2-octet salt whose high bit is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from typing import Any

from tunnels._wire import Reader
from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.radius.attributes import (
    VSA,
    Attr,
    Attributes,
    ChapPassword,
    Codec,
    Crypt,
    Integer,
    Octets,
    Text,
    _md5_chain,
    _wrong,
)

MICROSOFT = 311


class MS(VSA, Enum):
    """RFC 2548 §2 attribute types, as keys of `Attributes`."""

    MS_CHAP_RESPONSE = (MICROSOFT, 1)
    MS_CHAP_ERROR = (MICROSOFT, 2)
    MS_CHAP_DOMAIN = (MICROSOFT, 10)
    MS_MPPE_ENCRYPTION_POLICY = (MICROSOFT, 7)
    MS_MPPE_ENCRYPTION_TYPES = (MICROSOFT, 8)
    MS_RAS_VENDOR = (MICROSOFT, 9)
    MS_CHAP_CHALLENGE = (MICROSOFT, 11)
    MS_CHAP_MPPE_KEYS = (MICROSOFT, 12)
    MS_MPPE_SEND_KEY = (MICROSOFT, 16)
    MS_MPPE_RECV_KEY = (MICROSOFT, 17)
    MS_RAS_VERSION = (MICROSOFT, 18)
    MS_CHAP2_RESPONSE = (MICROSOFT, 25)
    MS_CHAP2_SUCCESS = (MICROSOFT, 26)
    MS_PRIMARY_DNS_SERVER = (MICROSOFT, 28)
    MS_SECONDARY_DNS_SERVER = (MICROSOFT, 29)
    MS_PRIMARY_NBNS_SERVER = (MICROSOFT, 30)
    MS_SECONDARY_NBNS_SERVER = (MICROSOFT, 31)


class EncryptionPolicy(IntEnum):
    """RFC 2548 §2.4.4."""

    ALLOWED = 1
    REQUIRED = 2


class EncryptionTypes(IntFlag):
    """RFC 2548 §2.4.5 (L = 40-bit, S = 128-bit); 56-bit as Windows sends it (MS-RNAS)."""

    RC4_40 = 0x02
    RC4_128 = 0x04
    RC4_56 = 0x08


@dataclass(frozen=True, slots=True)
class MSCHAPResponse:
    """RFC 2548 §2.1.3: Ident, Flags (1 = use the NT response), LM-Response, NT-Response."""

    ident: int
    lm_response: bytes
    nt_response: bytes
    flags: int = 1


@dataclass(frozen=True, slots=True)
class MSCHAP2Response:
    """RFC 2548 §2.3.2: Ident, Flags, Peer-Challenge (16), Reserved (8), Response (24)."""

    ident: int
    peer_challenge: bytes
    nt_response: bytes
    flags: int = 0


@dataclass(frozen=True, slots=True)
class IdentString:
    """MS-CHAP2-Success (§2.3.3, "S=<40 hex>") and MS-CHAP-Error (§2.1.5, "E=691 R=0 ...")."""

    ident: int
    message: str

    @property
    def error_code(self) -> int | None:
        """The E= value of an MS-CHAP-Error message (RFC 2759 §6), None when absent."""
        for field in self.message.split():
            if field.startswith("E=") and field[2:].isdigit():
                return int(field[2:])
        return None


@dataclass(frozen=True, slots=True)
class MPPEKeysV1:
    """RFC 2548 §2.4.1: the 8-octet LM key and the 16-octet NT key (MS-CHAP v1)."""

    lm_key: bytes
    nt_key: bytes


class _Fixed:
    def __init__(self, size: int):
        self.size = size

    def check(self, raw: bytes) -> Reader:
        if len(raw) != self.size:
            raise RemoteProtocolError(f"MS attribute of {len(raw)} octets, {self.size} expected")
        return Reader(raw)


class MSCHAPResponseCodec(_Fixed):
    def __init__(self) -> None:
        super().__init__(50)

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, MSCHAPResponse):
            raise _wrong(value, "MSCHAPResponse")
        return bytes([value.ident, value.flags]) + _exact(value.lm_response, 24) + _exact(
            value.nt_response, 24)

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        r = self.check(raw)
        ident, flags = r.pull_u8(), r.pull_u8()
        return MSCHAPResponse(ident, r.pull_bytes(24), r.pull_bytes(24), flags)


class MSCHAP2ResponseCodec(_Fixed):
    def __init__(self) -> None:
        super().__init__(50)

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, MSCHAP2Response):
            raise _wrong(value, "MSCHAP2Response")
        return (bytes([value.ident, value.flags]) + _exact(value.peer_challenge, 16)
                + b"\0" * 8 + _exact(value.nt_response, 24))

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        r = self.check(raw)
        ident, flags, peer = r.pull_u8(), r.pull_u8(), r.pull_bytes(16)
        r.skip(8, "reserved")
        return MSCHAP2Response(ident, peer, r.pull_bytes(24), flags)


class IdentStringCodec:
    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, IdentString):
            raise _wrong(value, "IdentString")
        return bytes([value.ident]) + value.message.encode()

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        r = Reader(raw)
        ident = r.pull_u8("ident")
        try:
            return IdentString(ident, r.pull_rest().decode("ascii"))
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("MS-CHAP message is not ASCII") from exc


class MPPEKeysV1Codec:
    """§2.4.1: 24 octets hidden as User-Password is (RFC 2865 §5.2), so 32 on the wire."""

    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, MPPEKeysV1):
            raise _wrong(value, "MPPEKeysV1")
        plain = _exact(value.lm_key, 8) + _exact(value.nt_key, 16) + b"\0" * 8
        return _md5_chain(plain, crypt.secret, crypt.authenticator, encrypt=True)

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        if len(raw) != 32:
            raise RemoteProtocolError(f"MS-CHAP-MPPE-Keys of {len(raw)} octets, 32 expected")
        plain = _md5_chain(raw, crypt.secret, crypt.authenticator, encrypt=False)
        return MPPEKeysV1(plain[:8], plain[8:24])


def salt_encrypt(key: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    """RFC 2548 §2.4.2; `salt` is 2 octets, its high bit set here as the RFC requires."""
    if len(salt) != 2 or not 1 <= len(key) <= 239:
        raise LocalProtocolError("salt of 2 octets and a key of 1..239 octets", None)
    salt = bytes([salt[0] | 0x80, salt[1]])
    plain = bytes([len(key)]) + key
    plain += b"\0" * (-len(plain) % 16)
    return salt + _md5_chain(plain, secret, request_authenticator + salt, encrypt=True)


def salt_decrypt(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    if len(value) < 18 or (len(value) - 2) % 16:
        raise RemoteProtocolError(f"salt-encrypted value of {len(value)} octets (2 + 16n)")
    salt = value[:2]
    if not salt[0] & 0x80:
        raise RemoteProtocolError("salt without its high bit (RFC 2548 §2.4.2)")
    plain = _md5_chain(value[2:], secret, request_authenticator + salt, encrypt=False)
    if plain[0] > len(plain) - 1:
        raise RemoteProtocolError(f"decrypted key length {plain[0]} > {len(plain) - 1} octets")
    return plain[1 : 1 + plain[0]]


class SaltedKey:
    def encode(self, value: Any, crypt: Crypt) -> bytes:
        if not isinstance(value, (bytes, bytearray)) or crypt.random is None:
            raise _wrong(value, "key bytes (and a random source for the salt)")
        return salt_encrypt(bytes(value), crypt.secret, crypt.authenticator, crypt.random(2))

    def decode(self, raw: bytes, crypt: Crypt) -> Any:
        return salt_decrypt(raw, crypt.secret, crypt.authenticator)


def _exact(value: bytes, size: int) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise _wrong(value, f"{size} octets")
    return bytes(value)


MS_CODECS: Mapping[int, Codec] = {
    MS.MS_CHAP_RESPONSE.type: MSCHAPResponseCodec(),
    MS.MS_CHAP_ERROR.type: IdentStringCodec(),
    MS.MS_CHAP_DOMAIN.type: Text(),
    MS.MS_MPPE_ENCRYPTION_POLICY.type: Integer(EncryptionPolicy),
    MS.MS_MPPE_ENCRYPTION_TYPES.type: Integer(),
    MS.MS_RAS_VENDOR.type: Integer(),
    MS.MS_CHAP_CHALLENGE.type: Octets(),
    MS.MS_CHAP_MPPE_KEYS.type: MPPEKeysV1Codec(),
    MS.MS_MPPE_SEND_KEY.type: SaltedKey(),
    MS.MS_MPPE_RECV_KEY.type: SaltedKey(),
    MS.MS_RAS_VERSION.type: Text(),
    MS.MS_CHAP2_RESPONSE.type: MSCHAP2ResponseCodec(),
    MS.MS_CHAP2_SUCCESS.type: IdentStringCodec(),
}


# Request and reply helpers for the PPP authenticator asking RADIUS (RFC 2548 §2.1, §2.3).

def pap_attributes(user: str, password: str | bytes) -> Attributes:
    return Attributes([(Attr.USER_NAME, user), (Attr.USER_PASSWORD, password)])


def chap_attributes(user: str, ident: int, challenge: bytes, response: bytes) -> Attributes:
    return Attributes([(Attr.USER_NAME, user), (Attr.CHAP_CHALLENGE, challenge),
                       (Attr.CHAP_PASSWORD, ChapPassword(ident, response))])


def mschap_v1_attributes(user: str, ident: int, challenge: bytes, lm_response: bytes,
                         nt_response: bytes) -> Attributes:
    return Attributes([(Attr.USER_NAME, user), (MS.MS_CHAP_CHALLENGE, challenge),
                       (MS.MS_CHAP_RESPONSE, MSCHAPResponse(ident, lm_response, nt_response))])


def mschap_v2_attributes(user: str, ident: int, authenticator_challenge: bytes,
                         peer_challenge: bytes, nt_response: bytes) -> Attributes:
    return Attributes([(Attr.USER_NAME, user), (MS.MS_CHAP_CHALLENGE, authenticator_challenge),
                       (MS.MS_CHAP2_RESPONSE,
                        MSCHAP2Response(ident, peer_challenge, nt_response))])


def mppe_keys(attributes: Attributes) -> tuple[bytes, bytes] | None:
    """(MS-MPPE-Send-Key, MS-MPPE-Recv-Key) of an Access-Accept, as the server sends them:
    the Send-Key is the NAS's send key (RFC 2548 §2.4.2)."""
    send, recv = attributes.get(MS.MS_MPPE_SEND_KEY), attributes.get(MS.MS_MPPE_RECV_KEY)
    return None if send is None or recv is None else (send, recv)


def mschap_error_code(attributes: Attributes) -> int | None:
    error = attributes.get(MS.MS_CHAP_ERROR)
    return error.error_code if isinstance(error, IdentString) else None

