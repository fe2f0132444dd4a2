"""The VPN client daemon (a remote access client, or a calling router).

PPTP: connects to the server's TCP 1723 and runs the PPTP client stack over it and raw GRE.
L2TP: binds UDP 1701 on the address that reaches the server and runs the L2TP LAC stack.
When PPP's network phase opens it creates the TUN device with the assigned address and
installs routes (the server through the original gateway first). It exits 0 after a clean
hang-up (SIGTERM/SIGINT) and 1 with a named reason when the tunnel could not come up or went
down (after an L2TP server's StopCCN, once `stop_linger` has passed: RFC 2661 §5.7).
Reconnecting is off by default (`--reconnect N` turns it on): a test or a person should see
the failure, not a retry loop hiding it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tunnels.config import ClientConfig
from tunnels.l2tp.control import CallMode, TunnelConfig
from tunnels.ppp.config import EncryptionLevel, PPPConfig
from tunnels.runtime.pump import StackPump
from tunnels.runtime.rawgre import GRESocket
from tunnels.runtime.routes import ClientRoutes, RouteError
from tunnels.runtime.tun import TunDevice, TunError
from tunnels.runtime.ipsec_sockets import MultiSocket
from tunnels.runtime.keylog import log_child_keys
from tunnels.runtime.udp import UDPSocket, local_address_toward
from tunnels.stacks.l2tp import L2TPClient
from tunnels.stacks.pptp import ControlClosed, PPTPClient, SessionDown, SessionEvent, SessionUp

TUN_MTU = 1400  # GRE + PPP + MPPE overhead inside a 1500-byte path
HANG_UP_GRACE = 3.0  # seconds to wait for the server's answers to our Terminate/Stop
# L2TP: then up to this long for the StopCCN's acknowledgement, so a lost one is sent again
# (RFC 2661 §5.8 back-off: 1, 2, 4 s); a server that is gone costs this much on hang-up
L2TP_STOP_GRACE = 8.0


class VPNClient:
    def __init__(self, config: ClientConfig, json_lines: bool = False,
                 status_path: Path | None = None, connect_timeout: float = 10.0):
        self.config = config
        self.json_lines = json_lines
        self.status_path = status_path
        self.connect_timeout = connect_timeout
        self.state: dict[str, Any] = {"role": "client", "protocol": config.protocol,
                                      "server": config.server, "state": "connecting"}
        self.done = asyncio.Event()
        self.hung_up = False
        self.pump: StackPump | None = None
        self.gre: GRESocket | None = None
        self.routes: ClientRoutes | None = None
        self.started = 0.0
        self.attempt = 0  # 0: the first connection; n: the n-th reconnection

    # -- reporting -------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self.write_status()  # first, so a reader woken by the line sees the new state
        if self.json_lines:
            print(json.dumps(record, default=str), flush=True)
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"vpnlab connect: {event} {detail}", flush=True)

    def write_status(self) -> None:
        if self.status_path is None:
            return
        status = dict(self.state)
        if self.pump is not None:
            stack = self.pump.stack.status()
            status["counters"] = {"pump": dict(self.pump.counters),
                                  "stack": stack.get("counters", {})}
            for part in ("tunnels", "ipsec"):  # L2TP channels, SAs: retransmissions, drops
                if part in stack:  # the ipsec-up fields (cipher, SPIs) stay beside the counters
                    status[part] = {**stack[part], **self.state.get(part, {})} \
                        if isinstance(stack[part], dict) else stack[part]
        if self.gre is not None:
            status.setdefault("counters", {})["gre_socket"] = dict(self.gre.counters)
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, default=str))
        tmp.replace(self.status_path)

    def _internal_error(self, detail: str) -> None:
        print(f"vpnlab connect: internal error (counted, going on): {detail}", file=sys.stderr,
              flush=True)

    # -- stack events ----------------------------------------------------------------------
    def _ppp_config(self) -> PPPConfig:
        c = self.config
        # L2TP/IPsec: --encryption names the ESP level; PPP itself does not encrypt
        encryption = EncryptionLevel.NONE if c.protocol == "l2tp-ipsec" else c.encryption
        return PPPConfig(False, c.auth, username=c.username, password=c.password,
                         encryption=encryption, mppe_stateless=c.mppe_stateless,
                         echo_interval=c.echo_interval)

    def on_event(self, event: Any) -> None:
        if isinstance(event, SessionUp):
            self._tunnel_up(event)
        elif isinstance(event, (SessionDown, ControlClosed)):
            self._tunnel_down(event.reason)
        elif getattr(event, "LOG_NAME", None) is not None:  # IKE/IPsec events
            self._ipsec_event(event)
        elif isinstance(event, SessionEvent):
            name = type(event.event).__name__
            fields = {k: getattr(event.event, k) for k in event.event.__slots__}
            if name in ("Authenticated", "AuthenticationFailed", "EncryptionNegotiated",
                        "LinkEstablished"):
                self.state.setdefault("ppp", {})[name] = fields
                self.emit(name, **fields)

    def _ipsec_event(self, event: Any) -> None:
        name = event.LOG_NAME
        fields = {k: getattr(event, k) for k in event.__slots__}
        if name == "ipsec-up":
            self.state["ipsec"] = fields
            if self.pump is not None:
                log_child_keys(self.config.keylog, self.pump.stack, event)
        elif name == "ike-established":
            self.state["ike"] = fields
        self.emit(name, **fields)
        if name == "ipsec-failed" and self.state.get("state") != "up":
            self.state["reason"] = fields["reason"]
            self._tunnel_down(fields["reason"])

    def _tunnel_up(self, event: SessionUp) -> None:
        assert self.pump is not None
        if self.pump.tun is not None:
            # IPCP renegotiated (e.g. its Configure-Ack was lost, RFC 1661 §4.1: RCR in
            # Opened): the same addresses keep the interface; new ones rebuild it.
            if (event.local_address, event.peer_address) == (
                    self.state.get("local_address"), self.state.get("peer_address")):
                self.emit("renegotiated", local_address=event.local_address,
                          peer_address=event.peer_address)
                return
            self._teardown_local()
        try:
            self._make_interface(event)
        except (TunError, RouteError) as exc:
            self._fail_locally(f"tunnel negotiated but the local side failed: {exc}")
            return
        session = self.pump.stack.sessions.get(event.call_id)
        ppp = session.ppp.status() if session else {}
        assert self.routes is not None
        self.state.update(state="up", interface=self.config.interface,
                          local_address=event.local_address, peer_address=event.peer_address,
                          dns=list(event.dns), nbns=list(event.nbns), call_id=event.call_id,
                          peer_call_id=_peer_id(session),
                          auth=ppp.get("auth_method"), encryption=ppp.get("encryption"),
                          routes=self.config.routes, route_table=self.routes.described(),
                          bringup_seconds=round(self.pump.now() - self.started, 3))
        keys = ["interface", "local_address", "peer_address", "dns", "nbns", "auth",
                "encryption", "call_id", "peer_call_id", "route_table", "bringup_seconds"]
        if self.config.protocol in ("l2tp", "l2tp-ipsec") and session is not None:
            # L2TP's own identifiers: Session ID = call_id, plus the tunnel's (RFC 2661 §3.1)
            self.state.update(tunnel_id=session.tunnel.tunnel_id,
                              peer_tunnel_id=session.tunnel.peer_tunnel_id,
                              call_mode=session.control.mode.value,
                              data_sequencing=session.control.sequencing,
                              encrypted_transport=self.config.protocol == "l2tp-ipsec")
            keys += ["tunnel_id", "peer_tunnel_id", "call_mode", "data_sequencing",
                     "encrypted_transport"]
            if "ipsec" in self.state:
                keys.append("ipsec")
        self.emit("tunnel-up", **{k: self.state[k] for k in keys})

    def _make_interface(self, event: SessionUp) -> None:
        assert self.pump is not None
        tun = TunDevice(self.config.interface)
        try:
            tun.configure(event.local_address, event.peer_address, TUN_MTU)
        except TunError:
            tun.close()
            raise
        self.pump.attach_tun(tun)
        self.routes = ClientRoutes(self.config.server, tun.name, self.config.routes,
                                   self.config.split)
        self.routes.install()

    def _fail_locally(self, reason: str) -> None:
        """Our side cannot carry the tunnel: hang the call up and exit with the reason."""
        assert self.pump is not None
        self.state["reason"] = reason
        self.pump.feed("hang_up", self.pump.stack.hang_up, self.pump.now(), reason)
        self.pump.flush()
        self._down_later(reason)

    def _down_later(self, reason: str) -> None:
        """Give the peer HANG_UP_GRACE s to answer, then end this attempt (not a later one)."""
        attempt = self.attempt

        def expire() -> None:
            if self.attempt == attempt:
                self._tunnel_down(reason)

        asyncio.get_running_loop().call_later(HANG_UP_GRACE, expire)

    def _tunnel_down(self, reason: str) -> None:
        if self.done.is_set():
            return
        reason = self.state.get("reason") or reason
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

    # -- main ------------------------------------------------------------------------------
    async def run(self) -> int:
        """Connect; with `reconnect` > 0, try again that many times after a failure or a
        drop (never after the user hung up)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._hang_up)
        code = await self._connect_once()
        while code != 0 and not self.hung_up and self.attempt < self.config.reconnect:
            self.attempt += 1
            reason = self.state.get("reason")
            self.done = asyncio.Event()
            self.pump, self.gre, self.routes = None, None, None
            self.state = {"role": "client", "protocol": self.config.protocol,
                          "server": self.config.server,
                          "state": "waiting", "attempt": self.attempt, "previous": reason}
            self.emit("reconnecting", attempt=self.attempt, of=self.config.reconnect,
                      after=reason, delay=self.config.reconnect_delay)
            try:
                await asyncio.wait_for(self.done.wait(), self.config.reconnect_delay)
            except asyncio.TimeoutError:
                pass
            if self.hung_up:
                return 0
            self.state["state"] = "connecting"
            code = await self._connect_once()
        return code

    async def _connect_once(self) -> int:
        if self.config.protocol in ("l2tp", "l2tp-ipsec"):
            return await self._l2tp_session()
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.emit("connecting", server=self.config.server, port=1723)
        connect = asyncio.ensure_future(asyncio.wait_for(
            asyncio.open_connection(self.config.server, 1723), self.connect_timeout))
        stopped = asyncio.ensure_future(self.done.wait())
        await asyncio.wait({connect, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not connect.done():  # hung up while connecting
            connect.cancel()
            self.state.update(state="down", reason="user hung up")
            self.emit("tunnel-down", reason="user hung up")
            return 0
        try:
            reader, writer = connect.result()
        except (OSError, asyncio.TimeoutError) as exc:
            self.state.update(state="down", reason=f"cannot reach {self.config.server}:1723: "
                                                   f"{exc or 'timed out'}")
            self.emit("tunnel-down", reason=self.state["reason"])
            return 1
        return await self._session(reader, writer)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        loop = asyncio.get_running_loop()
        local = writer.get_extra_info("sockname")[0]
        try:
            self.gre = gre = GRESocket(local)
        except OSError as exc:
            writer.close()
            self.state.update(state="down", reason=f"cannot open a raw GRE socket on {local}: "
                                                   f"{exc.strerror or exc}")
            self.emit("tunnel-down", reason=self.state["reason"])
            return 1
        stack = PPTPClient(self._ppp_config(), self.config.server,
                           echo_interval=self.config.control_echo)
        self.pump = pump = StackPump(loop, stack, gre, self.on_event, self._internal_error)
        pump.writers[0] = writer
        self.state.update(state="negotiating", local_carrier_address=local)
        self.emit("control-connected", local=local, server=self.config.server)
        pump.feed("start", stack.start, pump.now())
        pump.flush()
        reading = asyncio.create_task(self._read(reader, stack, pump))
        try:
            await self.done.wait()
            await asyncio.sleep(0.05)  # let the last Stop/Clear messages leave
        finally:
            reading.cancel()
            self._teardown_local()
            self.write_status()
            pump.close()
            gre.close()
            writer.close()
        return 0 if self.hung_up else 1

    def _tunnel_config(self) -> TunnelConfig:
        c = self.config
        return TunnelConfig(host_name="vpnlab-client", secret=c.tunnel_secret.encode() or None,
                            hide_avps=c.hide_avps, hello_interval=c.hello_interval,
                            call_mode=CallMode(c.call_mode), linger=c.stop_linger)

    async def _l2tp_session(self) -> int:
        """L2TP: UDP 1701 from the address that reaches the server, to 1701; with IPsec,
        IKE (UDP 500, then 4500 behind a NAT) first and L2TP only inside ESP."""
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        server, ipsec = self.config.server, self.config.protocol == "l2tp-ipsec"
        self.emit("connecting", server=server, port=500 if ipsec else 1701,
                  protocol=self.config.protocol)
        try:
            local = local_address_toward(server)
            sock = MultiSocket(local) if ipsec else UDPSocket(local)
        except OSError as exc:
            what = "the IPsec sockets (raw ESP, UDP 500, 4500)" if ipsec else "UDP 1701"
            self.state.update(state="down", reason=f"cannot open {what} toward {server}: "
                                                   f"{exc.strerror or exc}")
            self.emit("tunnel-down", reason=self.state["reason"])
            return 1
        self.gre = sock  # type: ignore[assignment]
        stack = self._l2tp_stack(local, ipsec)
        self.pump = pump = StackPump(loop, stack, sock, self.on_event, self._internal_error)
        self.state.update(state="negotiating", local_carrier_address=local)
        if not ipsec:
            self.state["note"] = ("L2TP without IPsec: PPP's encryption (MPPE) is the only "
                                  "protection; the chapter's VPN connection is L2TP/IPsec")
        pump.feed("start", stack.start, pump.now())
        pump.flush()
        try:
            await self.done.wait()
            await self._l2tp_closed(stack)
        finally:
            self._teardown_local()
            self.write_status()
            pump.close()
            sock.close()
        return 0 if self.hung_up else 1

    async def _l2tp_closed(self, stack: Any) -> None:
        """Our StopCCN acknowledged and the SAs deleted (or given up) before we go; after the
        server's StopCCN, its retransmissions re-acked for `stop_linger` (RFC 2661 §5.7, in
        case our ZLB was lost). The tunnel is down and vpn0 gone meanwhile; a hang-up (SIGTERM)
        or a redial ends the linger at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + L2TP_STOP_GRACE + self.config.stop_linger
        told = False
        while not stack.done and loop.time() < deadline:
            if stack.lingering:
                if self.hung_up or self.attempt < self.config.reconnect:
                    return
                if not told:
                    told = True
                    self.emit("stop-linger", seconds=self.config.stop_linger,
                              why="re-acking the server's StopCCN if it comes again "
                                  "(RFC 2661 §5.7); SIGTERM ends it")
            elif loop.time() >= deadline - self.config.stop_linger:
                return  # what we sent was never acknowledged: give up as before
            await asyncio.sleep(0.05)

    def _l2tp_stack(self, local: str, ipsec: bool) -> Any:
        if not ipsec:
            return L2TPClient(self._ppp_config(), self.config.server, self._tunnel_config())
        from tunnels.stacks.l2tp_ipsec import L2TPIPsecClient, ike_config_from

        c = self.config
        return L2TPIPsecClient(self._ppp_config(), c.server, self._tunnel_config(),
                               ike_config_from(c), local)

    async def _read(self, reader: asyncio.StreamReader, stack: PPTPClient,
                    pump: StackPump) -> None:
        try:
            while data := await reader.read(4096):
                pump.feed("receive_control", stack.receive_control, 0, data, pump.now())
                pump.flush()
        except ConnectionError:
            pass
        pump.feed("connection_lost", stack.connection_lost, 0, pump.now())
        pump.flush()
        self._tunnel_down(stack.reason or "the server closed the control connection")

    def _hang_up(self) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        if self.pump is None:
            self.done.set()
            return
        self.pump.feed("hang_up", self.pump.stack.hang_up, self.pump.now(), "user hung up")
        self.pump.flush()
        # If the server never answers the Terminate-Request, give up after a few seconds.
        self._down_later("user hung up")


def _peer_id(session: Any) -> int | None:
    """The peer's identifier of this call: PPTP's peer Call ID, L2TP's peer Session ID."""
    if session is None:
        return None
    if hasattr(session, "gre"):
        return session.gre.peer_call_id
    return session.control.peer_session_id


def main(config: ClientConfig, json_lines: bool, status: str | None) -> int:
    client = VPNClient(config, json_lines, Path(status) if status else None)
    return asyncio.run(client.run())
