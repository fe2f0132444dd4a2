"""IKEv1 (RFC 2409 over RFC 2408 ISAKMP with the RFC 2407 IPsec DOI), NAT-T (RFC 3947) and
DPD (RFC 3706), sans-I/O. `IKESession` is one peer in either role; `IKEResponder` demultiplexes
a server's peers by initiator cookie."""

from tunnels.ipsec.ike.config import IKEConfig, IKEConfigError
from tunnels.ipsec.ike.events import (
    ChildSADeleted,
    ChildSAEstablished,
    ChildSAFailed,
    IKEClosed,
    IKEFailed,
    NATKeepaliveDue,
    NotifyReceived,
    Phase1Established,
)
from tunnels.ipsec.ike.responder import IKEResponder
from tunnels.ipsec.ike.session import IKESession

__all__ = [
    "ChildSADeleted", "ChildSAEstablished", "ChildSAFailed", "IKEClosed", "IKEConfig",
    "IKEConfigError", "IKEFailed", "IKEResponder", "IKESession", "NATKeepaliveDue",
    "NotifyReceived", "Phase1Established",
]
