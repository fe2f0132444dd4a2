"""`vpnlab server` and `vpnlab connect`: our endpoints outside (or inside) the testbed.

Both run in whatever network namespace they are started in; `--json` prints one JSON object
per state change; SIGTERM stops them cleanly (Terminate, Call-Clear, Stop-Control-Connection,
TUN device and routes removed).
"""

from __future__ import annotations

import argparse

from tunnels.ppp.auth.base import AuthMethod
from tunnels.ppp.config import EncryptionLevel


def cmd_server(args: argparse.Namespace) -> int:
    from tunnels import server

    return server.main(args.config, args.json, args.status)


def cmd_status(args: argparse.Namespace) -> int:
    from tunnels import monitor

    return monitor.main(args.file, args.json)


def cmd_connect(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tunnels import client
    from tunnels.config import ClientConfig, ConfigError

    try:
        if args.config:
            config = ClientConfig.load(Path(args.config))
        else:
            missing = [f"--{n}" for n in ("server", "user", "password") if not getattr(args, n)]
            if missing:
                raise ConfigError(f"{', '.join(missing)}: required (or --config FILE)")
            config = ClientConfig(
                server=args.server, username=args.user, password=args.password,
                auth=tuple(AuthMethod(a) for a in args.auth) if args.auth else tuple(AuthMethod),
                encryption=EncryptionLevel(args.encryption),
                mppe_stateless=args.mppe == "stateless", routes=args.routes,
                split=tuple(args.split), echo_interval=args.echo_interval,
                control_echo=args.control_echo,
                interface=args.interface, reconnect=args.reconnect,
                reconnect_delay=args.reconnect_delay, protocol=args.protocol,
                tunnel_secret=args.tunnel_secret or "", hide_avps=args.hide_avps,
                call_mode=args.call_mode, hello_interval=args.hello_interval,
                stop_linger=args.stop_linger, psk=args.psk or "", nat_t=not args.no_nat_t,
                ipsec_ciphers=tuple(args.ipsec_cipher),
                keylog=Path(args.keylog) if args.keylog else None,
                **_credentials(args))
    except ConfigError as exc:
        print(f"vpnlab connect: configuration error: {exc}", file=sys.stderr)
        return 2
    return client.main(config, args.json, args.status)


def _credentials(args: argparse.Namespace) -> dict:
    """--cert, --key, --ca (PEM or DER files), all or none, loaded as DER."""
    from pathlib import Path

    from tunnels.config import ConfigError, load_der

    given = [n for n in ("cert", "key", "ca") if getattr(args, n)]
    if not given:
        return {}
    if len(given) != 3:
        raise ConfigError("--cert, --key and --ca: expected all three (L2TP/IPsec with "
                          "certificates)")
    try:
        return {"certificate": load_der(Path(args.cert), "certificate"),
                "private_key": load_der(Path(args.key), "key"),
                "ca": tuple(load_der(Path(c), "certificate") for c in args.ca)}
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--cert/--key/--ca: cannot load: {exc}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run our VPN server in the current network namespace")
    p.add_argument("--config", required=True, help="TOML file (see tunnels/config/server.py)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--status", help="keep a JSON status file here")
    p.set_defaults(func=cmd_server)
    p = sub.add_parser("status", help="the server's active connections (from its status file)")
    p.add_argument("file", help="the JSON status file `vpnlab server --status FILE` keeps")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("connect", help="connect our VPN client from the current namespace")
    p.add_argument("--protocol", default="pptp", choices=["pptp", "l2tp", "l2tp-ipsec"])
    p.add_argument("--config", help="TOML file with a [client] table (see "
                   "tunnels/config/client.py) instead of the options below")
    p.add_argument("--server", help="the VPN server's address")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", action="append", choices=[m.value for m in AuthMethod],
                   help="accept this method (repeat; default: all)")
    p.add_argument("--encryption", default="none", choices=[e.value for e in EncryptionLevel])
    p.add_argument("--mppe", default="stateless", choices=["stateless", "stateful"])
    p.add_argument("--routes", default="default", choices=["default", "split"])
    p.add_argument("--split", action="append", default=[], metavar="PREFIX",
                   help="with --routes split: a prefix to send through the tunnel (repeat)")
    p.add_argument("--echo-interval", type=float, default=10.0,
                   help="LCP Echo-Request interval in seconds (0: off)")
    p.add_argument("--control-echo", type=float, default=60.0,
                   help="PPTP control-connection Echo-Request interval and timeout (s)")
    p.add_argument("--tunnel-secret", metavar="SECRET",
                   help="L2TP: tunnel authentication secret (RFC 2661 §5.1.1)")
    p.add_argument("--hide-avps", action="store_true",
                   help="L2TP: hide AVPs with the tunnel secret (RFC 2661 §4.3)")
    p.add_argument("--call-mode", default="incoming", choices=["incoming", "outgoing"],
                   help="L2TP: place the call with ICRQ (incoming, as Windows and xl2tpd) or "
                        "OCRQ (outgoing, the chapter's Table 9.6)")
    p.add_argument("--hello-interval", type=float, default=60.0,
                   help="L2TP Hello keepalive interval in seconds (0: off)")
    p.add_argument("--stop-linger", type=float, default=31.0, metavar="SECONDS",
                   help="L2TP: after the server's StopCCN, keep acking its retransmissions "
                        "this long before exiting (RFC 2661 §5.7; SIGTERM ends it at once)")
    p.add_argument("--psk", metavar="KEY", help="L2TP/IPsec: IKE pre-shared key")
    p.add_argument("--no-nat-t", action="store_true",
                   help="L2TP/IPsec: no NAT traversal (through a NAT the connection then fails, "
                        "and says why)")
    p.add_argument("--ipsec-cipher", action="append", default=[],
                   choices=["des-cbc", "3des-cbc", "aes-cbc-128", "aes-cbc-256"],
                   help="L2TP/IPsec: ESP cipher to offer (repeat; default: from --encryption: "
                        "basic/strong DES, strongest 3DES)")
    p.add_argument("--cert", metavar="FILE", help="L2TP/IPsec: our certificate (PEM or DER): "
                   "IKE with RSA signatures instead of --psk")
    p.add_argument("--key", metavar="FILE", help="L2TP/IPsec: its private key")
    p.add_argument("--ca", metavar="FILE", action="append", default=[],
                   help="L2TP/IPsec: a CA certificate trusted for the server's (repeat)")
    p.add_argument("--keylog", metavar="FILE",
                   help="L2TP/IPsec: append each ESP SA's keys here (JSON lines, for scapy or "
                        "tshark to decrypt a capture)")
    p.add_argument("--interface", default="vpn0")
    p.add_argument("--reconnect", type=int, default=0, metavar="N",
                   help="after a failure or a drop, try again N times (default 0: off)")
    p.add_argument("--reconnect-delay", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true")
    p.add_argument("--status", help="keep a JSON status file here")
    p.set_defaults(func=cmd_connect)
    from tunnels import load  # `vpnlab load` (issue 8), kept in its own module

    load.register(sub)
