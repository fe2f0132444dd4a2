"""Probe packets sent from inside a node: `python -m testbed.probe PROTO DST [PORT]`.

Used by scenario checks and conformance cases to test filters and NAT: one TCP SYN (a connect
attempt), UDP datagram, or raw GRE / ESP packet, with a marker payload so captures can find it.
Exit status 0 when the packet was handed to the kernel (delivery is judged from captures).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

MARKER = b"vpnlab-probe"


def send(proto: str, dst: str, port: int | None, sport: int | None, count: int) -> None:
    for _ in range(count):
        if proto == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                if sport:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("", sport))
                s.sendto(MARKER, (dst, port or 9))
        elif proto == "tcp":
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if sport:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("", sport))
                s.setblocking(False)
                err = s.connect_ex((dst, port or 80))
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, f"connect to {dst}:{port}")
        elif proto in ("gre", "esp"):
            number = socket.IPPROTO_GRE if proto == "gre" else 50
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, number) as s:
                # GRE: flags/version 0, protocol 0x0800; ESP: SPI 0x00000101, seq 1
                gre, esp = b"\x00\x00\x08\x00", b"\x00\x00\x01\x01\x00\x00\x00\x01"
                head = gre if proto == "gre" else esp
                s.sendto(head + MARKER, (dst, 0))
        else:
            raise SystemExit(f"probe: unknown protocol {proto!r}: expected udp, tcp, gre or esp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.probe")
    parser.add_argument("proto", choices=["udp", "tcp", "gre", "esp"])
    parser.add_argument("dst")
    parser.add_argument("port", nargs="?", type=int)
    parser.add_argument("--sport", type=int)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        send(args.proto, args.dst, args.port, args.sport, args.count)
    except OSError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
