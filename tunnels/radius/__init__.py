"""RADIUS client for the VPN server (RFC 2865/2866, Message-Authenticator of RFC 3579/2869,
Microsoft's VSAs of RFC 2548), sans-I/O like every core in tunnels/.

`packet` encodes and strictly decodes packets; `attributes` holds the attribute types and their
codec table; `msvsa` the Microsoft VSAs with their salt encryption; `client` the
retransmitting, failing-over `RadiusClient`.
"""

from tunnels.radius.attributes import (
    AcctStatusType,
    AcctTerminateCause,
    Attr,
    Attributes,
    ChapPassword,
    NASPortType,
    ServiceType,
    TunnelType,
)
from tunnels.radius.client import (
    NO_ANSWER,
    AccessAccepted,
    AccessChallenged,
    AccessRejected,
    AccountingAcknowledged,
    RadiusClient,
    RequestFailed,
)
from tunnels.radius.msvsa import (
    MS,
    EncryptionPolicy,
    EncryptionTypes,
    IdentString,
    MPPEKeysV1,
    MSCHAP2Response,
    MSCHAPResponse,
)
from tunnels.radius.packet import Code, Packet

__all__ = [
    "MS", "NO_ANSWER", "AccessAccepted", "AccessChallenged", "AccessRejected",
    "AccountingAcknowledged", "AcctStatusType", "AcctTerminateCause", "Attr", "Attributes",
    "ChapPassword", "Code", "EncryptionPolicy", "EncryptionTypes", "IdentString", "MPPEKeysV1",
    "MSCHAP2Response", "MSCHAPResponse", "NASPortType", "Packet", "RadiusClient",
    "RequestFailed", "ServiceType", "TunnelType",
]
