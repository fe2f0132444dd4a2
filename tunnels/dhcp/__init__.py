"""DHCP for the VPN server's address pool (RFC 2131/2132), sans-I/O like every core in tunnels/.

`messages` is the strict codec (`DHCPMessage`, `MessageType`, `Opt`); `leases` is
`DHCPAddressSource`, the pool of client addresses leased in blocks, one DHCP client identity
per address, the way Windows RRAS obtains addresses from an intranet DHCP server. Its asyncio
runtime is `tunnels.runtime.dhcp.DHCPAddressPool`.
"""

from tunnels.dhcp.leases import (
    AcquireFailed,
    AddressLeased,
    AddressLost,
    AddressReleased,
    AddressRenewed,
    DHCPAddressSource,
)
from tunnels.dhcp.messages import DHCPMessage, MessageType, Op, Opt

__all__ = [
    "AcquireFailed", "AddressLeased", "AddressLost", "AddressReleased", "AddressRenewed",
    "DHCPAddressSource", "DHCPMessage", "MessageType", "Op", "Opt",
]
