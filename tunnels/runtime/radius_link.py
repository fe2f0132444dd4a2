"""The VPN server's RADIUS: one client and socket for authentication and accounting, and the
admission's `RadiusAccess` on top (credentials -> Access-Request -> Verdict and groups).

Built from the server configuration's [authentication] and [accounting] tables. The NAS is
named by NAS-Identifier ([[authentication.radius]].nas_identifier, default the server's name)
and NAS-IP-Address: the address this namespace sends from towards the first RADIUS server,
which is what the RADIUS server's client list matches on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tunnels.admission import Call
from tunnels.errors import LocalProtocolError, RemoteProtocolError
from tunnels.ppp.auth.base import Credentials, Verdict, WindowsError_
from tunnels.radius.access import NasInfo, access_request, groups_from, verdict_from
from tunnels.radius.attributes import TunnelType
from tunnels.radius.client import AccessAccepted, RadiusClient
from tunnels.runtime.radius import RadiusRuntime
from tunnels.runtime.udp import local_address_toward


class RadiusLink:
    def __init__(self, loop: asyncio.AbstractEventLoop, config: Any):
        auth, acct = config.authentication, config.accounting
        servers = list(auth.radius) if auth.provider == "radius" else []
        accounting = list(acct.radius) if acct.provider == "radius" else []
        first = (servers or accounting)[0]
        self.loop = loop
        self.nas_identifier = first.nas_identifier or config.name
        self.nas_ip = local_address_toward(first.address, first.port)
        self.listen = config.listen
        client = RadiusClient([(s.address, s.port, s.secret) for s in servers or accounting],
                              timeout=first.timeout, retries=first.retries,
                              accounting_servers=[(s.address, s.port, s.secret)
                                                  for s in accounting] or None)
        self.runtime = RadiusRuntime(loop, client)

    def nas(self, call: Call) -> NasInfo:
        kind = TunnelType.PPTP if call.tunnel_type == "pptp" else TunnelType.L2TP
        return NasInfo(self.nas_identifier, self.nas_ip, call.call_id, kind, call.peer,
                       self.listen)

    # the admission's RadiusAccess
    def submit(self, call: Call, credentials: Credentials,
               answer: Callable[[Verdict, tuple[str, ...]], None]) -> None:
        try:
            attributes = access_request(credentials, self.nas(call))
        except (LocalProtocolError, RemoteProtocolError) as exc:
            refusal = Verdict.refused(WindowsError_.AUTHENTICATION_FAILURE,
                                      f"cannot ask RADIUS: {exc}")
            self.loop.call_soon(answer, refusal, ())  # never inside the engine's own call
            return

        def answered(event: Any) -> None:
            groups = groups_from(event) if isinstance(event, AccessAccepted) else ()
            answer(verdict_from(event, credentials), groups)

        self.runtime.submit_access(attributes, answered)

    def account(self, attributes: Any) -> None:
        self.runtime.submit_accounting(attributes)

    def status(self) -> dict[str, Any]:
        return {"nas_identifier": self.nas_identifier, "nas_ip_address": self.nas_ip,
                **self.runtime.counters()}

    def close(self) -> None:
        self.runtime.close()
