"""IKEv1 numbers: ISAKMP (RFC 2408 §3), IPsec DOI (RFC 2407 §4), IKE (RFC 2409 App. A),
NAT-T (RFC 3947) and DPD (RFC 3706), named as the RFCs name them.

Values a peer may send that we do not know stay plain ints in the codecs; these enums are for
what we build and for readable names in logs and tests.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum, IntFlag

ISAKMP_VERSION = 0x10  # major 1, minor 0 (RFC 2408 §3.1)
IKE_PORT = 500
NAT_T_PORT = 4500  # RFC 3947 §4: the port both ends float to once NAT-T is agreed
DOI_IPSEC = 1  # RFC 2407 §4.2
SIT_IDENTITY_ONLY = 1  # RFC 2407 §4.2.1
HEADER_LENGTH = 28


class ExchangeType(IntEnum):
    """RFC 2408 §3.1 and RFC 2409 §5.5 (Quick Mode) and §5.6 (New Group)."""

    NONE = 0
    BASE = 1
    IDENTITY_PROTECTION = 2  # Main Mode (RFC 2409 §5)
    AUTHENTICATION_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    QUICK_MODE = 32
    NEW_GROUP_MODE = 33


class Flags(IntFlag):
    """RFC 2408 §3.1: Encryption, Commit, Authentication only."""

    E = 1
    C = 2
    A = 4


class PayloadType(IntEnum):
    """RFC 2408 §3.1 Next Payload values, RFC 3947 §3 NAT-D/NAT-OA (drafts used 130/131)."""

    NONE = 0
    SA = 1
    P = 2  # Proposal, only inside SA
    T = 3  # Transform, only inside a Proposal
    KE = 4
    ID = 5
    CERT = 6
    CR = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    N = 11
    D = 12
    VID = 13
    NAT_D = 20
    NAT_OA = 21
    NAT_D_DRAFT = 130  # draft-ietf-ipsec-nat-t-ike-02/03 (Windows XP/2003, old strongSwan)
    NAT_OA_DRAFT = 131


class NotifyType(IntEnum):
    """RFC 2408 §3.14.1 errors, RFC 2407 §4.6.3 status, RFC 3706 DPD."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137


class ProtocolId(IntEnum):
    """RFC 2407 §4.4.1."""

    ISAKMP = 1
    IPSEC_AH = 2
    IPSEC_ESP = 3
    IPCOMP = 4


KEY_IKE = 1  # the only ISAKMP transform ID (RFC 2407 §4.4.2)


class P1Attr(IntEnum):
    """Phase 1 SA attribute classes (RFC 2409 Appendix A)."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14


class EncryptionAlgorithm(IntEnum):
    """RFC 2409 Appendix A, AES from RFC 3602 §5.1."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_R16_B64_CBC = 4
    TRIPLE_DES_CBC = 5  # "3DES-CBC"
    CAST_CBC = 6
    AES_CBC = 7


class HashAlgorithm(IntEnum):
    MD5 = 1
    SHA = 2
    TIGER = 3
    SHA2_256 = 4


class AuthMethod(IntEnum):
    PRE_SHARED_KEY = 1
    DSS_SIG = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_REV_ENC = 5


class LifeType(IntEnum):
    """Same numbers in phase 1 (RFC 2409 App. A) and in the IPsec DOI (RFC 2407 §4.5)."""

    SECONDS = 1
    KILOBYTES = 2


class IPsecAttr(IntEnum):
    """IPsec DOI SA attributes (RFC 2407 §4.5)."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTHENTICATION_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7


class EncapsulationMode(IntEnum):
    """RFC 2407 §4.5 (1, 2), RFC 3947 §5.1 (3, 4) and the values of the drafts."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_ENCAPSULATED_TUNNEL = 3
    UDP_ENCAPSULATED_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443
    UDP_TRANSPORT_DRAFT = 61444


class AuthAlgorithm(IntEnum):
    """IPsec DOI Authentication Algorithm attribute (RFC 2407 §4.5)."""

    HMAC_MD5 = 1
    HMAC_SHA = 2


class ESPTransform(IntEnum):
    """RFC 2407 §4.4.4, ESP_AES from RFC 3602 §5.1."""

    ESP_DES = 2
    ESP_3DES = 3
    ESP_NULL = 11
    ESP_AES = 12


class IDType(IntEnum):
    """RFC 2407 §4.6.2.1."""

    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_USER_FQDN = 3
    ID_IPV4_ADDR_SUBNET = 4
    ID_IPV6_ADDR = 5
    ID_IPV6_ADDR_SUBNET = 6
    ID_IPV4_ADDR_RANGE = 7
    ID_IPV6_ADDR_RANGE = 8
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11


class CertEncoding(IntEnum):
    """RFC 2408 §3.9."""

    X509_SIGNATURE = 4


def _md5(text: bytes) -> bytes:
    return hashlib.md5(text).digest()


# Vendor IDs (RFC 3947 §3.1; the drafts' are MD5 of their names, as Windows XP/2003 and older
# strongSwan/racoon send them; RFC 3706 §5's DPD VID is a fixed value, not a hash).
VID_RFC3947 = _md5(b"RFC 3947")
VID_NAT_T_DRAFT_02 = _md5(b"draft-ietf-ipsec-nat-t-ike-02")
VID_NAT_T_DRAFT_02N = _md5(b"draft-ietf-ipsec-nat-t-ike-02\n")
VID_NAT_T_DRAFT_03 = _md5(b"draft-ietf-ipsec-nat-t-ike-03")
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
NAT_T_DRAFT_VIDS = (VID_NAT_T_DRAFT_02, VID_NAT_T_DRAFT_02N, VID_NAT_T_DRAFT_03)
# NAT-T versions by configuration name, in the order a responder prefers them
NAT_T_VIDS = {"rfc3947": VID_RFC3947, "draft-03": VID_NAT_T_DRAFT_03,
              "draft-02n": VID_NAT_T_DRAFT_02N, "draft-02": VID_NAT_T_DRAFT_02}
