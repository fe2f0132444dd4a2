"""IKEv1 (RFC 2409 over RFC 2408 ISAKMP with the RFC 2407 IPsec DOI), NAT-T (RFC 3947) and
DPD (RFC 3706), sans-I/O: datagrams, API calls and `now` in; datagrams and events out.

Client (initiator)::

    s = IKESession(IKEConfig(psk=b"..."), "initiator", local=("10.0.0.2", 500),
                   remote=("192.0.2.1", 500))
    s.start(now)                              # MM1 ... QM3 follow by themselves
    s.receive_datagram(data, src=(addr, port), now=now)
    for dst, src_port, data in s.datagrams_to_send(): ...   # on 4500: add the non-ESP marker
    while (event := s.next_event()) is not None: ...
    s.get_timer() / s.handle_timer(now)       # retransmit, DPD, keepalive, rekey, expiry
    s.delete(now); s.status()

Server: `IKEResponder(config, local=("192.0.2.1", 500))` has the same calls and keeps one
`IKESession` per peer by initiator cookie; its `next_event()` gives (session, event).

Events (events.py): `Phase1Established`, `ChildSAEstablished` (install the ESP SA pair: "in"
keys are those we receive with), `ChildSADeleted`, `ChildSAFailed`, `IKEFailed` (a named
reason and the Notify), `IKEClosed`, `NotifyReceived`, `RemoteAddressChanged` (the peer's NAT
mapping moved), `NATKeepaliveDue` (send b"\\xff" raw).

Modules: constants (RFC numbers), payloads (codecs), crypto (DH, prf, SKEYID, KEYMAT, IVs),
certs (RSA signatures), config, phase1 (Main Mode = the ISAKMP SA), phase2 (Quick Mode,
Informational), session (transport, timers, DPD, rekey), responder (the dispatcher).
"""

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
    RemoteAddressChanged,
)
from tunnels.ipsec.ike.responder import IKEResponder
from tunnels.ipsec.ike.session import IKESession

__all__ = [
    "ChildSADeleted", "ChildSAEstablished", "ChildSAFailed", "IKEClosed", "IKEConfig",
    "IKEConfigError", "IKEFailed", "IKEResponder", "IKESession", "NATKeepaliveDue",
    "NotifyReceived", "Phase1Established", "RemoteAddressChanged",
]
