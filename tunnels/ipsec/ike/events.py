"""What an IKE session tells its owner: frozen, slotted dataclasses, the only output besides
datagrams. The stack installs ESP SAs from `ChildSAEstablished` and removes them on
`ChildSADeleted`; "in" keys are those we receive (decrypt and verify) with."""

from __future__ import annotations

from dataclasses import dataclass, field

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Phase1Established:
    icookie: bytes
    rcookie: bytes
    cipher: str
    hash: str
    group: int
    auth: str
    lifetime_seconds: int
    local_behind_nat: bool
    remote_behind_nat: bool
    peer_id: str
    initial_contact: bool = False  # the peer said INITIAL-CONTACT (RFC 2407 §4.6.3.3)
    nat_without_nat_t: bool = False  # a NAT rewrote the peer's address and NAT-T is off
    peer_ke_unpadded: bool = False  # the peer's KE left out leading zeros (RFC 2409 §5)


@dataclass(frozen=True, slots=True)
class ChildSAEstablished:
    spi_in: int
    spi_out: int
    cipher: str  # "3des-cbc" | "des-cbc" | "aes-cbc-128" | "aes-cbc-256"
    enc_key_in: bytes = field(repr=False)  # keys stay out of logs that print events
    enc_key_out: bytes = field(repr=False)
    integrity: str  # "hmac-sha1-96" | "hmac-md5-96"
    auth_key_in: bytes = field(repr=False)
    auth_key_out: bytes = field(repr=False)
    lifetime_seconds: int
    lifetime_bytes: int | None
    encapsulation: str  # "transport" | "udp-transport"
    local: Address
    remote: Address


@dataclass(frozen=True, slots=True)
class ChildSADeleted:
    spi_in: int
    spi_out: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildSAFailed:
    """A Quick Mode did not complete; `notify` is the Notify name when the peer sent one."""

    reason: str
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class IKEFailed:
    """Phase 1 did not complete (or a rekeyed one failed): no ISAKMP SA, a named reason."""

    reason: str
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class IKEClosed:
    """The ISAKMP SA is gone (deleted by either end, expired or the peer is dead)."""

    reason: str


@dataclass(frozen=True, slots=True)
class NotifyReceived:
    """An authenticated Informational Notify that needed no action of ours."""

    notify_type: int
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RemoteAddressChanged:
    """An authenticated message came from a new address/port (the peer's NAT mapping
    changed, RFC 3947 §5.2's "dynamic update"): send ESP-in-UDP there from now on."""

    old: Address
    new: Address


@dataclass(frozen=True, slots=True)
class NATKeepaliveDue:
    """RFC 3948 §2.3: send the one-byte 0xFF datagram from `src_port` to `dst` now (the
    runtime sends it raw, with no non-ESP marker)."""

    dst: Address
    src_port: int


Event = (Phase1Established | ChildSAEstablished | ChildSADeleted | ChildSAFailed | IKEFailed
         | IKEClosed | NotifyReceived | RemoteAddressChanged | NATKeepaliveDue)
