"""The VPN server daemon (RRAS-like): PPTP (TCP 1723 + GRE) and/or L2TP (UDP 1701), one TUN
device and one address pool shared by every protocol.

It runs in whatever network namespace it is started in. The pool's first address is the
server's end of every tunnel; the pool's prefix is routed into the TUN device, so intranet hosts
reach clients when the intranet routes the pool to this server. Each state change is a JSON line
on stdout (`--json`) and, with `status_path`, a JSON status file rewritten atomically.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunnels.addresses import StaticPool
from tunnels.admission import Admission, Call
from tunnels.config import ServerConfig
from tunnels.l2tp.control import TunnelConfig
from tunnels.ppp.auth.base import Verdict
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.runtime.pump import StackPump
from tunnels.runtime.rawgre import GRESocket
from tunnels.runtime.routes import RouteError, ServerRouting
from tunnels.runtime.tun import TunDevice, TunError
from tunnels.runtime.ipsec_sockets import MultiSocket
from tunnels.runtime.keylog import log_child_keys
from tunnels.runtime.udp import UDPSocket
from tunnels.stacks.l2tp import L2TPServer
from tunnels.stacks.pptp import ControlClosed, PPTPServer, SessionDown, SessionEvent, SessionUp
from tunnels.stacks.sessions import SHUTDOWN_GRACE

TUN_NAME = "vpns0"
TUN_MTU = 1400
STATUS_REFRESH = 1.0  # seconds between status-file rewrites (counters move without events)
STATUS_EVERY_EVENT = 64  # up to this many calls (up or not), every event rewrites the status
# The calls' PPP Terminate-Request and the tunnels' teardown say this; accounting maps it to
# Acct-Terminate-Cause Admin-Reboot (tunnels/accounting.py), as for the Stops written at close
SHUTDOWN_REASON = "server shutting down"


class VPNServer:
    def __init__(self, config: ServerConfig, json_lines: bool = False,
                 status_path: Path | None = None):
        self.config = config
        self.json_lines = json_lines
        self.status_path = status_path
        self.pool = self._address_source()
        self.admission = Admission(config.accounts, config.policies, self.pool,
                                   self._late_verdict, eap=config.authentication.eap)
        self._esp_ciphers: dict[str, str] = {}  # L2TP/IPsec: client address -> its ESP cipher
        self._live: dict[tuple[str, int], Any] = {}  # the stacks' session objects, while up
        self.refusals: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        # One stack per protocol; sessions, the pool and events are keyed by (protocol, id):
        # a PPTP Call ID and an L2TP Session ID may have the same value.
        self.stacks: dict[str, Any] = {}
        if "pptp" in config.protocols:
            self.stacks["pptp"] = PPTPServer(lambda cid, peer: self._ppp_config_for(
                ("pptp", cid), peer), host_name=config.name, max_calls=config.max_ports,
                echo_interval=config.control_echo)
        if "l2tp" in config.protocols:
            self.stacks["l2tp"] = L2TPServer(lambda sid, peer: self._ppp_config_for(
                ("l2tp", sid), peer), self.tunnel_config(), max_sessions=config.max_ports)
        if "l2tp-ipsec" in config.protocols:
            from tunnels.stacks.l2tp_ipsec import L2TPIPsecServer, ike_config_from

            self.stacks["l2tp-ipsec"] = L2TPIPsecServer(
                lambda sid, peer: self._ppp_config_for(("l2tp-ipsec", sid), peer),
                self.tunnel_config(), ike_config_from(config),
                config.listen, max_sessions=config.max_ports)
        self.stack = next(iter(self.stacks.values()))
        self.pumps: dict[str, StackPump] = {}
        self.sockets: dict[str, Any] = {}
        self._next_conn = 0
        self.sessions: dict[tuple[str, int], dict[str, Any]] = {}
        # the last calls that ended, for the status file (bounded: a server runs for months)
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.totals = {"calls_up": 0, "calls_down": 0, "auth_failures": 0,
                       "pool_exhausted": 0, "ports_exhausted": 0, "control_connections": 0}
        self.pump: StackPump | None = None
        self.gre: GRESocket | None = None

    def tunnel_config(self) -> TunnelConfig:
        c = self.config
        return TunnelConfig(host_name=c.name, secret=c.tunnel_secret.encode() or None,
                            hide_avps=c.hide_avps, hello_interval=c.hello_interval,
                            data_sequencing=c.data_sequencing, max_sessions=c.max_ports)

    def _session_count(self) -> int:
        return sum(len(stack.sessions) for stack in self.stacks.values())

    def _address_source(self) -> Any:
        """The static pool now; with DHCP, a placeholder until `run()` has leased a block."""
        c = self.config
        if c.addresses.source == "dhcp":
            return _NoAddresses()
        statics = [a.static_address for a in c.accounts.accounts.values() if a.static_address]
        return StaticPool(c.pool, c.addresses.server_address, reserved=statics)

    async def _open_dhcp(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """RRAS's DHCP option: lease a first block (and our own address) before listening."""
        settings = self.config.addresses
        if settings.source != "dhcp":
            return None
        from tunnels.addresses import DHCPPool
        from tunnels.runtime.dhcp import DHCPAddressPool, DHCPUnavailable

        block = settings.dhcp_block
        try:
            leases = DHCPAddressPool.open(
                loop, settings.dhcp_interface, self.config.name, server=settings.dhcp_server,
                on_event=self._on_dhcp_event, block=block, low_water=max(1, block // 4),
                reserve_server_address=True)
        except OSError as exc:
            return (f"cannot open DHCP on {settings.dhcp_interface} (UDP 68): "
                    f"{exc.strerror or exc}")
        try:
            await leases.ready(block, timeout=15.0)
        except DHCPUnavailable as exc:
            leases.close()
            return f"no addresses from DHCP: {exc}"
        self.pool = DHCPPool(leases, settings.dhcp_interface, TUN_NAME)
        self.admission.addresses = self.pool
        try:
            self.pool.start()
        except OSError as exc:
            self.pool.close()
            return f"cannot turn proxy ARP on for {settings.dhcp_interface}: {exc}"
        return None

    def _on_dhcp_event(self, event: Any) -> None:
        name = type(event).__name__
        self.totals[f"dhcp_{name}"] = self.totals.get(f"dhcp_{name}", 0) + 1
        if name == "AddressLost" and event.in_use and hasattr(self.pool, "holder"):
            key = self.pool.holder(event.address)
            if key is not None:
                self._disconnect(key, f"its DHCP lease was lost: {event.reason}")
        if name in ("AddressLost", "AcquireFailed"):
            self.emit(f"dhcp-{name}", **_fields(event))

    def _disconnect(self, key: tuple[str, int], reason: str) -> None:
        pump, stack = self.pumps.get(key[0]), self.stacks.get(key[0])
        if pump is not None and stack is not None:
            pump.feed("disconnect", stack.disconnect, key[1], reason, pump.now())
            pump.flush()

    def _calls_of(self, tunnel_type: str) -> int:
        return sum(len(stack.sessions) for name, stack in self.stacks.items()
                   if (name == "pptp") == (tunnel_type == "pptp"))

    def _ppp_config_for(self, call_id: tuple[str, int], peer: str) -> PPPConfig | str:
        """A new call: a port of its tunnel type, an address, and a verifier that applies the
        authentication provider and the remote access policies; a string refuses the call
        and says why."""
        protocol = call_id[0]
        call = Call(protocol, call_id[1], peer,
                    esp_cipher=self._esp_ciphers.get(peer) if protocol == "l2tp-ipsec" else None)
        limit = self.config.port_limit(call.tunnel_type)
        if self._calls_of(call.tunnel_type) >= limit:
            self.totals["ports_exhausted"] += 1
            return self._refused(call, f"all {limit} {call.tunnel_type.upper()} ports are in "
                                       "use")
        address = self.pool.take(call_id)
        if address is None:
            self.totals["pool_exhausted"] += 1
            return self._refused(call, "no address left to assign")
        c = self.config
        # L2TP/IPsec: ESP encrypts (the chapter's levels map to DES/3DES), PPP does not
        encryption = EncryptionLevel.NONE if protocol == "l2tp-ipsec" else c.encryption
        return PPPConfig(True, c.auth, verifier=self.admission.verifier_for(call), name=c.name,
                         encryption=encryption, mppe_stateless=c.mppe_stateless,
                         echo_interval=c.echo_interval, local_address=self.pool.server_address,
                         peer_address=address, dns=c.dns, nbns=c.wins)

    def _refused(self, call: Call, reason: str) -> str:
        """Recorded and logged; the stack clears the call with this reason (PPTP CDN, L2TP
        CDN result 4), so the client is told why."""
        record = {"protocol": call.protocol, "call_id": call.call_id, "peer": call.peer,
                  "reason": reason, "time": round(time.time(), 3)}
        self.refusals.append(record)
        self.emit("call-refused", **record)
        return reason

    def _late_verdict(self, call: Call, verdict: Verdict) -> None:
        """RADIUS answered for a call: the stack words it on the wire, in the pump's order."""
        pump, stack = self.pumps.get(call.protocol), self.stacks[call.protocol]
        if pump is None:
            return
        pump.feed("complete_authentication", stack.complete_authentication, call.call_id,
                  verdict, pump.now())
        pump.flush()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        # First, so a reader woken by the line sees the new state. A rewrite costs O(sessions)
        # and there are a few events per session: with many sessions up, the periodic refresh
        # alone writes it (per-event rewrites made setting up N sessions O(N^2): issue 8).
        if self._session_count() <= STATUS_EVERY_EVENT:
            self._write_status()
        if self.json_lines:
            print(json.dumps(record), flush=True)
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"vpnlab server: {event} {detail}", flush=True)

    def _internal_error(self, detail: str) -> None:
        print(f"vpnlab server: internal error (counted, going on): {detail}", file=sys.stderr,
              flush=True)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "role": "server", "protocol": "+".join(self.stacks),
            "protocols": list(self.stacks), "listen": self.config.listen,
            "pool": str(self.config.pool) if self.config.pool else "dhcp",
            "max_ports": self.config.max_ports,
            "ports": {t: {"limit": self.config.port_limit(t), "in_use": self._calls_of(t)}
                      for t in ("pptp", "l2tp")},
            "addresses": self.pool.status(), "admission": dict(self.admission.counters),
            "sessions": [self._live_info(k, v) for k, v in self.sessions.items()],
            "ended": list(self.history), "refused": list(self.refusals),
            "totals": dict(self.totals),
            "stacks": {name: self._stack_status(stack) for name, stack in self.stacks.items()},
            "pumps": {name: dict(pump.counters) for name, pump in self.pumps.items()},
            "radius": self.radius.status() if self.radius is not None else None,
            "accounting": self.accounting.status() if self.accounting is not None else None,
            "sockets": {name: dict(sock.counters) for name, sock in self.sockets.items()}}
        # the single-protocol names earlier readers used
        status["stack"] = status["stacks"].get("pptp") or status["stacks"].get("l2tp")
        if self.pump is not None:
            status["pump"] = dict(self.pump.counters)
        if self.gre is not None:
            status["gre_socket"] = dict(self.gre.counters)
        return status

    def _live_info(self, key: tuple[str, int], info: dict[str, Any]) -> dict[str, Any]:
        """A connection as `vpnlab status` shows it: the counters move, so read them now."""
        s = self._live.get(key)
        if s is None:
            return info
        c = s.ppp.counters
        return {**info, "bytes_in": c["ip_in_octets"], "bytes_out": c["ip_out_octets"],
                "packets_in": c["ip_in"], "packets_out": c["ip_out"],
                "duration": round(max(0.0, time.time() - info["started"]), 1)}

    def _stack_status(self, stack: Any) -> dict[str, Any]:
        """Every call's PPP and GRE detail while there are few; beyond STATUS_EVERY_EVENT
        calls only the counts and counters (the details of 10,000 calls are megabytes of JSON
        a second, and no reader wants them)."""
        if len(stack.sessions) <= STATUS_EVERY_EVENT:
            return stack.status()
        return {"sessions": len(stack.sessions),
                "connections": len(getattr(stack, "connections", getattr(stack, "tunnels", ()))),
                "counters": dict(stack.counters),
                "detail": f"per-call detail omitted above {STATUS_EVERY_EVENT} calls"}

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        status = self.status()
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, default=str))
        tmp.replace(self.status_path)

    def on_event(self, event: Any, protocol: str = "pptp") -> None:
        key = (protocol, getattr(event, "call_id", 0))
        if isinstance(event, SessionUp):
            s = self.stacks[protocol].sessions.get(event.call_id)
            ppp = s.ppp.status() if s else {}
            esp = self._esp_ciphers.get(event.peer.rsplit(":", 1)[0]) \
                if protocol == "l2tp-ipsec" else None
            decision = self.admission.decisions.get(key, {})
            info = {"protocol": protocol, "call_id": event.call_id, "peer": event.peer,
                    "tunnel_type": "pptp" if protocol == "pptp" else "l2tp",
                    "user": event.username, "address": event.peer_address,
                    "server_address": event.local_address,
                    "auth": ppp.get("auth_method"), "encryption": ppp.get("encryption"),
                    "esp_cipher": esp,
                    "policy": decision.get("policy"), "provider": decision.get("provider"),
                    "session_timeout": ppp.get("session_timeout"),
                    "idle_timeout": ppp.get("idle_timeout"), "started": round(time.time(), 3)}
            if s is not None:
                self._live[key] = s
                if self.accounting is not None:
                    info["acct_session_id"] = self.accounting.started(key, info, s.ppp)
            if protocol != "pptp" and s is not None:
                info.update(tunnel_id=event.conn_id, peer_tunnel_id=s.tunnel.peer_tunnel_id,
                            peer_session_id=s.control.peer_session_id)
            self.sessions[key] = info
            self.totals["calls_up"] += 1
            self.emit("session-up", **info)
        elif isinstance(event, SessionDown):
            info = self.sessions.pop(key, {"protocol": protocol, "call_id": event.call_id})
            info = self._live_info(key, info) if key in self._live else info
            self._live.pop(key, None)
            if self.accounting is not None:
                self.accounting.stopped(key, event.reason)
            decision = self.admission.forget(key)
            if decision is not None and not decision["granted"]:
                self.refusals.append({**decision, "protocol": protocol,
                                      "call_id": event.call_id, "time": round(time.time(), 3)})
            self.pool.give_back(key)
            self.totals["calls_down"] += 1
            self.history.append({**info, "reason": event.reason})
            self.emit("session-down", protocol=protocol, call_id=event.call_id,
                      reason=event.reason)
        elif isinstance(event, ControlClosed):
            self.emit("control-closed", protocol=protocol, conn_id=event.conn_id,
                      reason=event.reason)
        elif isinstance(event, SessionEvent):
            name = type(event.event).__name__
            if name == "AuthenticationFailed":
                self.totals["auth_failures"] += 1
            if name in ("Authenticated", "AuthenticationFailed", "EncryptionNegotiated"):
                decision = self.admission.decisions.get(key, {})
                extra = {"policy": decision.get("policy"), "decision": decision.get("reason")} \
                    if name != "EncryptionNegotiated" and decision else {}
                self.emit(name, protocol=protocol, call_id=event.call_id,
                          **_fields(event.event), **extra)
        elif (name := getattr(event, "LOG_NAME", None)) is not None:  # IKE/IPsec events
            if name == "ipsec-up":
                log_child_keys(self.config.keylog, self.stacks[protocol], event)
                self._esp_ciphers[event.peer.rsplit(":", 1)[0]] = event.cipher
            self.totals[name] = self.totals.get(name, 0) + 1
            self.emit(name, protocol=protocol, **_fields(event))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        failure = self._open_sockets() or self._open_radius(loop) or \
            self._open_accounting(loop) or await self._open_dhcp(loop)
        if failure:
            self._close_sockets()
            return self._fatal(failure)
        routing = ServerRouting(str(self.config.pool) if self.config.pool else None, TUN_NAME)
        try:
            tun = TunDevice(TUN_NAME)
        except TunError as exc:
            self._close_sockets()
            return self._fatal(str(exc))
        for name, stack in self.stacks.items():
            self.pumps[name] = StackPump(loop, stack, self.sockets[name],
                                         lambda e, n=name: self.on_event(e, n),
                                         self._internal_error)
        self.pump = self.pumps.get("pptp")
        refresh: list[asyncio.TimerHandle] = []
        servers: list[asyncio.AbstractServer] = []
        try:
            try:
                tun.configure(self.pool.server_address, None, TUN_MTU)
                routing.install()
                self._attach_tun(loop, tun)
                if "pptp" in self.stacks:
                    pump = self.pumps["pptp"]
                    servers.append(await loop.create_server(
                        lambda: _ControlConnection(self, pump), self.config.listen, 1723))
            except (TunError, RouteError, OSError) as exc:
                tun.close()
                return self._fatal(f"cannot set up: {exc}")
            self.emit("listening", address=self.config.listen, protocols=list(self.stacks),
                      ports=[p for n, ps in (("pptp", [1723]), ("l2tp", [1701]),
                                             ("l2tp-ipsec", [500, 4500]))
                             if n in self.stacks for p in ps],
                      port=1723 if "pptp" in self.stacks else 1701,
                      pool=str(self.config.pool) if self.config.pool else "dhcp",
                      server_address=self.pool.server_address,
                      auth=[m.value for m in self.config.auth],
                      encryption=self.config.encryption.value,
                      mppe="stateless" if self.config.mppe_stateless else "stateful",
                      max_ports=self.config.max_ports, interface=TUN_NAME,
                      tunnel_authentication=bool(self.config.tunnel_secret),
                      hide_avps=self.config.hide_avps)
            self._refresh_status(loop, refresh)
            await stop.wait()
            for srv in servers:
                srv.close()
            self.emit("stopping", sessions=len(self.sessions))
            await self._end_calls(loop)
            self._stop_everything()
            await asyncio.sleep(0.05)
        finally:
            for handle in refresh:
                handle.cancel()
            for pump in self.pumps.values():
                pump.close()
            if self._tun_reader is not None:
                loop.remove_reader(tun.fd)
                tun.close()
            routing.remove()
            self._close_sockets()
        self.emit("stopped", totals=self.totals)
        return 0

    _tun_reader: Any = None
    radius: Any = None  # tunnels.runtime.radius_link.RadiusLink, with RADIUS configured

    accounting: Any = None  # tunnels.runtime.accounting_link.AccountingLink

    def _open_accounting(self, loop: asyncio.AbstractEventLoop) -> str | None:
        if self.config.accounting.provider == "none":
            return None
        from tunnels.runtime.accounting_link import AccountingLink

        try:
            self.accounting = AccountingLink(loop, self.config, self.radius)
        except OSError as exc:
            return (f"cannot open the accounting log {self.config.accounting.log}: "
                    f"{exc.strerror or exc}")
        return None

    def _open_radius(self, loop: asyncio.AbstractEventLoop) -> str | None:
        c = self.config
        if "radius" not in (c.authentication.provider, c.accounting.provider):
            return None
        from tunnels.runtime.radius_link import RadiusLink

        try:
            self.radius = RadiusLink(loop, c)
        except OSError as exc:
            first = (c.authentication.radius or c.accounting.radius)[0]
            return f"cannot open the RADIUS socket towards {first.address}: {exc.strerror or exc}"
        if c.authentication.provider == "radius":
            self.admission.radius = self.radius
        return None

    def _open_sockets(self) -> str | None:
        """One socket per protocol, bound to the address clients reach; a failure names it."""
        listen = self.config.listen
        try:
            if "pptp" in self.stacks:
                self.sockets["pptp"] = self.gre = GRESocket(listen)
        except OSError as exc:
            return f"cannot open a raw GRE socket on {listen}: {exc.strerror or exc}"
        try:
            if "l2tp" in self.stacks:
                self.sockets["l2tp"] = UDPSocket(listen)
        except OSError as exc:
            self._close_sockets()
            return f"cannot open UDP {listen}:1701 for L2TP: {exc.strerror or exc}"
        try:
            if "l2tp-ipsec" in self.stacks:
                # ESP (IP protocol 50), IKE 500, NAT-T 4500, and 1701 only to drop clear L2TP
                self.sockets["l2tp-ipsec"] = MultiSocket(listen, l2tp_port=True)
        except OSError as exc:
            self._close_sockets()
            return (f"cannot open the L2TP/IPsec sockets on {listen} (raw ESP, UDP 500, 4500, "
                    f"1701): {exc.strerror or exc}")
        return None

    def _close_sockets(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        if self.accounting is not None:  # Stop records first, while RADIUS can carry them
            self.accounting.close()
        if hasattr(self.pool, "close"):  # DHCP: release every lease, proxy ARP as it was
            self.pool.close()
        if self.radius is not None:
            self.radius.close()

    def _attach_tun(self, loop: asyncio.AbstractEventLoop, tun: TunDevice) -> None:
        """One protocol: its pump reads the TUN. Several: each pump writes to it, and one
        reader hands each packet to the stack whose session owns its destination (a dict
        lookup per stack), so no protocol sees another's clients."""
        if len(self.pumps) == 1:
            next(iter(self.pumps.values())).attach_tun(tun)
            return
        for pump in self.pumps.values():
            pump.tun = tun
        owners = [(self.stacks[n].by_packed_address, self.pumps[n]) for n in self.stacks]
        counters = {"tun_no_session": 0}
        self.totals["tun_no_session"] = 0

        def readable() -> None:
            now = loop.time()
            touched = set()
            for _ in range(64):
                packet = tun.read()
                if packet is None:
                    break
                for by_packed, pump in owners:
                    if packet[16:20] in by_packed:
                        pump.feed("send_datagram", pump.stack.send_datagram, packet, now)
                        touched.add(id(pump))
                        break
                else:
                    counters["tun_no_session"] += 1
                    self.totals["tun_no_session"] = counters["tun_no_session"]
            for pump in self.pumps.values():
                if id(pump) in touched:
                    pump.flush()

        loop.add_reader(tun.fd, readable)
        self._tun_reader = readable

    async def _end_calls(self, loop: asyncio.AbstractEventLoop) -> None:
        """Shutdown, first the PPP way (RFC 1661 §5.5, as RRAS does): each stack sends LCP
        Terminate-Request on its open calls; wait until their Terminate-Acks have ended them
        or the stacks' bound (SHUTDOWN_GRACE) passes. The stacks decide; this only waits,
        woken by their events. The control teardown (_stop_everything) clears the calls."""
        started = loop.time()
        changed = asyncio.Event()
        for name, stack in self.stacks.items():
            pump = self.pumps[name]
            pump.on_event = _also_setting(pump.on_event, changed)
            pump.feed("begin_shutdown", stack.begin_shutdown, SHUTDOWN_REASON, started)
            pump.flush()
        stacks = list(self.stacks.values())
        deadline = max((s.shutdown_deadline or started for s in stacks), default=started)
        while not all(s.shutdown_finished(loop.time()) for s in stacks):
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                pass
        reports = {name: stack.shutdown_report() for name, stack in self.stacks.items()}
        self.emit("calls-terminated",
                  **{k: sum(r[k] for r in reports.values())
                     for k in ("lcp_terminated", "acked", "unanswered")},
                  waited=round(loop.time() - started, 3), bound=SHUTDOWN_GRACE,
                  protocols=reports)

    def _stop_everything(self) -> None:
        """Then the tunnels' control: PPTP StopCCRQ (reason 3) on each control connection,
        L2TP StopCCN (result 6) on each tunnel; calls not ended by LCP go with them."""
        if "pptp" in self.stacks:
            pump = self.pumps["pptp"]
            for conn_id in list(self.stacks["pptp"].connections):
                pump.feed("stop", self._stop_connection, conn_id, pump.now())
            pump.flush()
        for name in ("l2tp", "l2tp-ipsec"):
            if name in self.stacks:
                pump = self.pumps[name]
                pump.feed("stop", self.stacks[name].stop_all, SHUTDOWN_REASON, pump.now())
                pump.flush()

    def _stop_connection(self, conn_id: int, now: float) -> None:
        """One PPTP control connection (each in its own feed: one failing stops no other)."""
        self.stacks["pptp"].stop_connection(conn_id, SHUTDOWN_REASON, now)

    def _fatal(self, reason: str) -> int:
        self.emit("failed", reason=reason)
        print(f"vpnlab server: {reason}", file=sys.stderr, flush=True)
        return 1

    def _refresh_status(self, loop: asyncio.AbstractEventLoop,
                        handles: list[asyncio.TimerHandle]) -> None:
        """Counters move without events: rewrite the status file every STATUS_REFRESH s."""
        if self.status_path is None:
            return

        def tick() -> None:
            self._write_status()
            # O(sessions) per rewrite: one second apart per 1000 sessions
            pause = STATUS_REFRESH * max(1.0, len(self.sessions) / 1000)
            handles[:] = [loop.call_later(pause, tick)]

        handles[:] = [loop.call_later(STATUS_REFRESH, tick)]


class _ControlConnection(asyncio.Protocol):
    """One PPTP control connection (TCP 1723), fed straight into the pump: no task and no
    stream objects per connection (a task per call was the largest single cost of setting
    up 5000 calls, issue 8). The transport is the pump's writer (write, close,
    is_closing)."""

    def __init__(self, server: VPNServer, pump: StackPump):
        self.server, self.pump = server, pump
        self.conn_id = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server, pump = self.server, self.pump
        self.conn_id = server._next_conn
        server._next_conn += 1
        server.totals["control_connections"] += 1
        peer = transport.get_extra_info("peername")[0]
        pump.writers[self.conn_id] = transport
        pump.feed("connection_made", server.stacks["pptp"].connection_made, self.conn_id,
                  peer, pump.now())
        pump.flush()

    def data_received(self, data: bytes) -> None:
        pump = self.pump
        pump.feed("receive_control", self.server.stacks["pptp"].receive_control, self.conn_id,
                  data, pump.now())
        pump.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        pump = self.pump
        pump.feed("connection_lost", self.server.stacks["pptp"].connection_lost, self.conn_id,
                  pump.now())
        pump.writers.pop(self.conn_id, None)
        pump.flush()


def _also_setting(on_event: Callable[[Any], None], changed: asyncio.Event
                  ) -> Callable[[Any], None]:
    """A pump's event handler that also wakes the shutdown's wait (_end_calls)."""
    def handle(event: Any) -> None:
        on_event(event)
        changed.set()
    return handle


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


class _NoAddresses:
    """Before DHCP leased anything: every call is refused (the server is not listening yet)."""

    source = "dhcp"
    server_address = None

    def take(self, key: Any) -> None:
        return None

    def claim(self, key: Any, address: str) -> bool:
        return False

    def give_back(self, key: Any) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"source": "dhcp", "server_address": None, "state": "leasing"}

