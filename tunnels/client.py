"""The VPN client daemon (a remote access client, or a calling router).

Connects to the server's TCP 1723, runs the PPTP client stack, and when PPP's network phase
opens creates the TUN device with the assigned address and installs routes (the server through
the original gateway first). It exits 0 after a clean hang-up (SIGTERM/SIGINT) and 1 with a
named reason when the tunnel could not come up or went down.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from tunnels.config import ClientConfig
from tunnels.ppp.config import PPPConfig
from tunnels.runtime.pump import StackPump
from tunnels.runtime.rawgre import GRESocket
from tunnels.runtime.routes import ClientRoutes
from tunnels.runtime.tun import TunDevice
from tunnels.stacks.pptp import ControlClosed, PPTPClient, SessionDown, SessionEvent, SessionUp


class VPNClient:
    def __init__(self, config: ClientConfig, json_lines: bool = False,
                 status_path: Path | None = None, connect_timeout: float = 10.0):
        self.config = config
        self.json_lines = json_lines
        self.status_path = status_path
        self.connect_timeout = connect_timeout
        self.state: dict[str, Any] = {"role": "client", "protocol": "pptp",
                                      "server": config.server, "state": "connecting"}
        self.done = asyncio.Event()
        self.hung_up = False
        self.pump: StackPump | None = None
        self.routes: ClientRoutes | None = None

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if self.status_path is not None:  # first, so a reader woken by the line sees it
            tmp = self.status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=1, default=str))
            tmp.replace(self.status_path)
        if self.json_lines:
            print(json.dumps(record), flush=True)
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"vpnlab connect: {event} {detail}", flush=True)

    def _ppp_config(self) -> PPPConfig:
        c = self.config
        return PPPConfig(False, c.auth, username=c.username, password=c.password,
                         encryption=c.encryption, mppe_stateless=c.mppe_stateless,
                         echo_interval=c.echo_interval)

    def on_event(self, event: Any) -> None:
        if isinstance(event, SessionUp):
            self._tunnel_up(event)
        elif isinstance(event, (SessionDown, ControlClosed)):
            self._tunnel_down(event.reason)
        elif isinstance(event, SessionEvent):
            name = type(event.event).__name__
            fields = {k: getattr(event.event, k) for k in event.event.__slots__}
            if name in ("Authenticated", "AuthenticationFailed", "EncryptionNegotiated",
                        "LinkEstablished"):
                self.state.setdefault("ppp", {})[name] = fields
                self.emit(name, **fields)

    def _tunnel_up(self, event: SessionUp) -> None:
        assert self.pump is not None
        tun = TunDevice(self.config.interface)
        tun.configure(event.local_address, event.peer_address, 1400)
        self.pump.attach_tun(tun)
        self.routes = ClientRoutes(self.config.server, tun.name, self.config.routes,
                                   self.config.split)
        self.routes.install()
        session = self.pump.stack.sessions.get(event.call_id)
        ppp = session.ppp.status() if session else {}
        self.state.update(state="up", interface=tun.name, local_address=event.local_address,
                          peer_address=event.peer_address, dns=list(event.dns),
                          nbns=list(event.nbns), call_id=event.call_id,
                          peer_call_id=session.gre.peer_call_id if session else None,
                          auth=ppp.get("auth_method"), encryption=ppp.get("encryption"),
                          routes=self.config.routes)
        self.emit("tunnel-up", **{k: self.state[k] for k in (
            "interface", "local_address", "peer_address", "dns", "nbns", "auth", "encryption")})

    def _tunnel_down(self, reason: str) -> None:
        if self.done.is_set():
            return
        self._teardown_local()
        self.state.update(state="down", reason=reason)
        self.emit("tunnel-down", reason=reason)
        self.done.set()

    def _teardown_local(self) -> None:
        if self.routes is not None:
            self.routes.remove()
            self.routes = None
        if self.pump is not None:
            self.pump.detach_tun()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._hang_up)
        self.emit("connecting", server=self.config.server, port=1723)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.config.server, 1723), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.state.update(state="down", reason=f"cannot reach {self.config.server}:1723: "
                                                   f"{exc or 'timed out'}")
            self.emit("tunnel-down", reason=self.state["reason"])
            return 1
        local = writer.get_extra_info("sockname")[0]
        gre = GRESocket(local)
        stack = PPTPClient(self._ppp_config(), self.config.server,
                           echo_interval=60.0)
        self.pump = pump = StackPump(loop, stack, gre, self.on_event)
        pump.writers[0] = writer
        stack.start(pump.now())
        pump.flush()
        reading = asyncio.create_task(self._read(reader, stack, pump))
        try:
            await self.done.wait()
            await asyncio.sleep(0.05)  # let the last Stop/Clear messages leave
        finally:
            reading.cancel()
            self._teardown_local()
            pump.close()
            gre.close()
            writer.close()
        return 0 if self.hung_up else 1

    async def _read(self, reader: asyncio.StreamReader, stack: PPTPClient,
                    pump: StackPump) -> None:
        try:
            while data := await reader.read(4096):
                stack.receive_control(0, data, pump.now())
                pump.flush()
        except ConnectionError:
            pass
        stack.connection_lost(0, pump.now())
        pump.flush()
        self._tunnel_down(stack.reason or "the server closed the control connection")

    def _hang_up(self) -> None:
        self.hung_up = True
        if self.pump is None:
            self.done.set()
            return
        stack = self.pump.stack
        stack.hang_up(self.pump.now(), "user hung up")
        self.pump.flush()
        # If the server never answers the Terminate-Request, give up after a few seconds.
        asyncio.get_running_loop().call_later(3.0, self._tunnel_down, "user hung up")


def main(config: ClientConfig, json_lines: bool, status: str | None) -> int:
    client = VPNClient(config, json_lines, Path(status) if status else None)
    return asyncio.run(client.run())
