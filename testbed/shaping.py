"""Link shapes: what a link does to traffic, and the commands that make it so.

Pure functions from a validated `LinkShape` to argv lists (style.md 13): Mininet's TCLink
"ignores" bad values with a warning; here a bad value raises with the field and what was
expected. Rate uses `tbf` with a byte limit (design.md: tbf is accurate here, htb overfills slow
links). Delay, jitter and loss need netem, which the CI kernel lacks: `probe_netem()` says which
method a machine gets, and the testbed then runs the userspace wire (`testbed.wire`) in a link
namespace between the two ends instead.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from dataclasses import dataclass

from testbed.errors import SpecError


@dataclass(frozen=True, slots=True)
class LinkShape:
    """Rate in bit/s from A to B (`rate_bps`) and from B to A (`reverse_rate_bps`, default the
    same); one-way `delay_ms` and `jitter_ms` in each direction; `loss_pct` per direction."""

    rate_bps: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    reverse_rate_bps: int | None = None

    def __post_init__(self) -> None:
        for name in ("rate_bps", "reverse_rate_bps"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 1000 <= value <= 10**11):
                raise SpecError(f"link shape: {name}={value!r}: expected an integer bit/s in "
                                "1000..100000000000, or None for no rate limit")
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 10_000:
                raise SpecError(f"link shape: {name}={value!r}: expected 0..10000 ms")
        if self.jitter_ms > self.delay_ms:
            raise SpecError(
                f"link shape: jitter_ms={self.jitter_ms} exceeds delay_ms={self.delay_ms}: "
                "expected jitter no larger than the delay"
            )
        if not _is_number(self.loss_pct) or not 0 <= self.loss_pct <= 100:
            raise SpecError(f"link shape: loss_pct={self.loss_pct!r}: expected 0..100 (percent)")

    @property
    def rate_b_to_a(self) -> int | None:
        return self.reverse_rate_bps if self.reverse_rate_bps is not None else self.rate_bps

    @property
    def impairs(self) -> bool:
        """True when the link adds delay, jitter or loss (netem's job, or the wire's)."""
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0

    def describe(self) -> str:
        parts = []
        if self.rate_bps:
            parts.append(_rate_text(self.rate_bps))
            if self.reverse_rate_bps and self.reverse_rate_bps != self.rate_bps:
                parts[-1] += f"/{_rate_text(self.reverse_rate_bps)}"
        if self.delay_ms:
            jitter = f"±{self.jitter_ms:g}" if self.jitter_ms else ""
            parts.append(f"{self.delay_ms:g} ms{jitter}")
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g}% loss")
        return ", ".join(parts) or "unshaped"


def _is_number(value: object) -> bool:
    """int or float but not bool, NaN or infinity (which compare false and slip through)."""
    return (type(value) in (int, float)) and math.isfinite(value)  # type: ignore[arg-type]


def _rate_text(bps: int) -> str:
    if bps >= 1_000_000:
        return f"{bps / 1e6:g} Mbit/s"
    return f"{bps / 1e3:g} kbit/s"


PRESETS: dict[str, LinkShape] = {
    "ethernet": LinkShape(),
    "t1": LinkShape(rate_bps=1_544_000, delay_ms=5),
    "isdn-128k": LinkShape(rate_bps=128_000, delay_ms=10),
    # A V.90 modem. By convention a link's A end is the subscriber: 33.6 kbit/s up (A→B),
    # about 53 kbit/s down (B→A), 100 ms each way.
    "modem-56k": LinkShape(rate_bps=33_600, reverse_rate_bps=53_000, delay_ms=100),
    "internet": LinkShape(rate_bps=10_000_000, delay_ms=20, loss_pct=0.5),
}


def preset(name: str) -> LinkShape:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown link preset {name!r}: expected one of {', '.join(PRESETS)}"
        ) from None


@dataclass(frozen=True, slots=True)
class ShapingMethod:
    """What `vpnlab doctor` reports: "netem", or the wire with the reason netem is missing."""

    netem: bool
    reason: str = ""

    def __str__(self) -> str:
        if self.netem:
            return "netem"
        return f"userspace wire (netem missing: {self.reason})"


@functools.cache
def _netem_error() -> str:
    try:
        done = subprocess.run(
            ["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"probe failed: {exc}"
    if done.returncode == 0:
        return ""
    return (done.stderr.strip() or f"tc exited {done.returncode}").splitlines()[0]


def probe_netem() -> bool:
    """Try netem in a throwaway network namespace; the answer (cached) holds for the machine."""
    return _netem_error() == ""


def probe_method() -> ShapingMethod:
    return ShapingMethod(netem=probe_netem(), reason=_netem_error())


def shaping_method() -> str:
    return str(probe_method())


def needs_link_namespace(shape: LinkShape | None, netem: bool | None = None) -> bool:
    """Any shaped link gets a hidden link namespace L between its ends (A—L—B), with or without
    netem: shaping on a sender's own egress fails (design.md: an egress drop gives the sender
    EPERM, a queue there counts against its socket buffer) and inside the receiver ping
    timestamps too early. `netem` does not change the answer; it is accepted for symmetry."""
    del netem
    return shape is not None and (shape.impairs or shape.rate_bps is not None
                                  or shape.reverse_rate_bps is not None)


def tbf_argv(iface: str, rate_bps: int) -> list[str]:
    """tbf with a burst of at least one MTU and a queue of ~100 ms at the rate (min 3 MTUs)."""
    burst = max(1600, rate_bps // 8 // 100)
    limit = max(3 * 1600, rate_bps // 8 // 10)
    return ["tc", "qdisc", "replace", "dev", iface, "root", "tbf",
            "rate", f"{rate_bps}bit", "burst", str(burst), "limit", str(limit)]


def netem_argv(iface: str, shape: LinkShape, rate_bps: int | None) -> list[str]:
    argv = ["tc", "qdisc", "replace", "dev", iface, "root", "netem"]
    if shape.delay_ms:
        argv += ["delay", f"{shape.delay_ms}ms"]
        if shape.jitter_ms:
            argv += [f"{shape.jitter_ms}ms"]
    if shape.loss_pct:
        argv += ["loss", f"{shape.loss_pct}%"]
    if rate_bps:
        argv += ["rate", f"{rate_bps}bit"]
    return argv


def tc_commands(shape: LinkShape, toward_a: str, toward_b: str, netem: bool) -> list[list[str]]:
    """Commands for the link namespace: the egress toward B carries A→B traffic and vice versa.

    With netem, one qdisc per egress: netem (with its `rate`) when the link impairs, else tbf.
    Without netem, the userspace wire does delay, jitter, loss and rate itself (serialization at
    the rate, as netem's `rate`), so no qdisc: a tbf after the wire would queue a second time.
    """
    if not netem:
        return []
    commands = []
    for iface, rate in ((toward_b, shape.rate_bps), (toward_a, shape.rate_b_to_a)):
        if shape.impairs:
            commands.append(netem_argv(iface, shape, rate))
        elif rate:
            commands.append(tbf_argv(iface, rate))
    return commands


def wire_argv(shape: LinkShape, iface_a: str, iface_b: str, control_path: str,
              netem: bool | None = None) -> list[str] | None:
    """The userspace wire's command line (run inside L), or None when netem does the job or
    the link is unshaped. `netem=None` probes the machine."""
    if netem is None:
        netem = probe_netem()
    if netem or not needs_link_namespace(shape):
        return None
    argv = [sys.executable, "-m", "testbed.wire", "--a", iface_a, "--b", iface_b,
            "--control", control_path,
            "--delay-ms", str(shape.delay_ms), "--jitter-ms", str(shape.jitter_ms),
            "--loss-pct", str(shape.loss_pct)]
    if shape.rate_bps:
        argv += ["--rate-ab", str(shape.rate_bps)]
    if shape.rate_b_to_a:
        argv += ["--rate-ba", str(shape.rate_b_to_a)]
    return argv


def offload_off_commands(iface: str) -> list[list[str]]:
    """The brief's name for `offload_off_argv`, as a command list."""
    return [offload_off_argv(iface)]


def offload_off_argv(iface: str) -> list[str]:
    """Checksum and segmentation offloads off, so frames on a wire are what a NIC would send."""
    return ["ethtool", "-K", iface, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
            "gro", "off"]
