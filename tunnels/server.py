"""The VPN server daemon (RRAS-like): TCP 1723, GRE, one TUN device, an address pool.

It runs in whatever network namespace it is started in. The pool's first address is the
server's end of every tunnel; the pool's prefix is routed into the TUN device, so intranet hosts
reach clients when the intranet routes the pool to this server. Each state change is a JSON line
on stdout (`--json`) and, with `status_path`, a JSON status file rewritten atomically.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunnels.config import ServerConfig
from tunnels.ppp.config import PPPConfig
from tunnels.runtime.pump import StackPump
from tunnels.runtime.rawgre import GRESocket
from tunnels.runtime.tun import TunDevice
from tunnels.stacks.pptp import ControlClosed, PPTPServer, SessionDown, SessionEvent, SessionUp

TUN_NAME = "vpns0"


class AddressPool:
    def __init__(self, network: ipaddress.IPv4Network):
        hosts = list(network.hosts())
        self.gateway = str(hosts[0])
        self.free = [str(h) for h in hosts[1:]]
        self.used: dict[int, str] = {}

    def take(self, call_id: int) -> str | None:
        if not self.free:
            return None
        address = self.free.pop(0)
        self.used[call_id] = address
        return address

    def give_back(self, call_id: int) -> None:
        address = self.used.pop(call_id, None)
        if address is not None:
            self.free.insert(0, address)


class VPNServer:
    def __init__(self, config: ServerConfig, json_lines: bool = False,
                 status_path: Path | None = None):
        self.config = config
        self.json_lines = json_lines
        self.status_path = status_path
        self.pool = AddressPool(config.pool)
        self.stack = PPTPServer(self._ppp_config_for, host_name=config.name,
                                max_calls=config.max_ports, echo_interval=60.0)
        self._next_conn = 0
        self.sessions: dict[int, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []

    def _ppp_config_for(self, call_id: int, peer: str) -> PPPConfig | None:
        address = self.pool.take(call_id)
        if address is None:
            return None
        c = self.config
        return PPPConfig(True, c.auth, verifier=c.accounts, name=c.name,
                         encryption=c.encryption, mppe_stateless=c.mppe_stateless,
                         echo_interval=c.echo_interval, local_address=self.pool.gateway,
                         peer_address=address, dns=c.dns, nbns=c.wins)

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._write_status()  # first, so a reader woken by the line sees the new state
        if self.json_lines:
            print(json.dumps(record), flush=True)
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"vpnlab server: {event} {detail}", flush=True)

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        status = {"role": "server", "protocol": "pptp", "listen": self.config.listen,
                  "sessions": list(self.sessions.values()), "ended": self.history[-50:],
                  "stack": self.stack.status()}
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, default=str))
        tmp.replace(self.status_path)

    def on_event(self, event: Any) -> None:
        if isinstance(event, SessionUp):
            s = self.stack.sessions.get(event.call_id)
            info = {"call_id": event.call_id, "peer": event.peer, "user": event.username,
                    "address": event.peer_address,
                    "auth": s.ppp.status()["auth_method"] if s else None,
                    "encryption": s.ppp.status()["encryption"] if s else None}
            self.sessions[event.call_id] = info
            self.emit("session-up", **info)
        elif isinstance(event, SessionDown):
            info = self.sessions.pop(event.call_id, {"call_id": event.call_id})
            self.pool.give_back(event.call_id)
            self.history.append({**info, "reason": event.reason})
            self.emit("session-down", call_id=event.call_id, reason=event.reason)
        elif isinstance(event, ControlClosed):
            self.emit("control-closed", conn_id=event.conn_id, reason=event.reason)
        elif isinstance(event, SessionEvent):
            name = type(event.event).__name__
            if name in ("Authenticated", "AuthenticationFailed", "EncryptionNegotiated"):
                self.emit(name, call_id=event.call_id, **_fields(event.event))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        gre = GRESocket(self.config.listen)
        tun = TunDevice(TUN_NAME)
        pump = StackPump(loop, self.stack, gre, self.on_event)
        try:
            tun.configure(self.pool.gateway, None, 1400)
            subprocess.run(["ip", "route", "replace", str(self.config.pool), "dev", tun.name],
                           check=True, capture_output=True, timeout=10)
            pump.attach_tun(tun)
            server = await asyncio.start_server(
                lambda r, w: self._connection(pump, r, w), self.config.listen, 1723)
            self.emit("listening", address=self.config.listen, port=1723,
                      pool=str(self.config.pool),
                      auth=[m.value for m in self.config.auth],
                      encryption=self.config.encryption.value)
            async with server:
                await stop.wait()
            self.emit("stopping", sessions=len(self.sessions))
            for conn_id in list(self.stack.connections):
                self.stack.connections[conn_id].control.stop("server shutting down", 3)
                self.stack._after_control(conn_id, pump.now())
            pump.flush()
            await asyncio.sleep(0.05)
        finally:
            pump.close()
            gre.close()
        self.emit("stopped")
        return 0

    async def _connection(self, pump: StackPump, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        conn_id = self._next_conn
        self._next_conn += 1
        peer = writer.get_extra_info("peername")[0]
        pump.writers[conn_id] = writer
        self.stack.connection_made(conn_id, peer, pump.now())
        try:
            while data := await reader.read(4096):
                self.stack.receive_control(conn_id, data, pump.now())
                pump.flush()
        except ConnectionError:
            pass
        finally:
            self.stack.connection_lost(conn_id, pump.now())
            pump.writers.pop(conn_id, None)
            pump.flush()
            writer.close()


def _fields(event: Any) -> dict[str, Any]:
    return {k: getattr(event, k) for k in event.__slots__}


def main(config_path: str, json_lines: bool, status: str | None) -> int:
    from tunnels.config import ConfigError

    try:
        config = ServerConfig.load(Path(config_path))
    except ConfigError as exc:
        print(f"vpnlab server: configuration error: {exc}", file=sys.stderr)
        return 2
    server = VPNServer(config, json_lines, Path(status) if status else None)
    return asyncio.run(server.run())
