"""What the PPP engine tells its carrier and runtime; frozen, slotted, comparable in tests."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    """RFC 1661 §3.2 link phases."""

    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    phase: Phase


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    mru: int
    auth_method: str | None
    magic: int


@dataclass(frozen=True, slots=True)
class Authenticated:
    username: str
    method: str


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    username: str
    method: str
    error_code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class EncryptionNegotiated:
    key_bits: int
    stateless: bool


@dataclass(frozen=True, slots=True)
class NetworkOpened:
    local_address: str
    peer_address: str
    dns: tuple[str, ...]
    nbns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    packet: bytes


@dataclass(frozen=True, slots=True)
class LinkTerminated:
    reason: str


PPPEvent = (PhaseChanged | LinkEstablished | Authenticated | AuthenticationFailed |
            EncryptionNegotiated | NetworkOpened | DatagramReceived | LinkTerminated)
