"""Link shapes: what a link does to traffic, and the commands that make it so.

Pure functions from a validated `LinkShape` to argv lists (style.md 13): Mininet's TCLink
"ignores" bad values with a warning; here a bad value raises with the field and what was
expected. Rate uses `tbf` with a byte limit (design.md: tbf is accurate here, htb overfills slow
links). Delay, jitter, loss and reordering need netem, which the CI kernel lacks:
`probe_netem()` says which method a machine gets, and the testbed then runs the userspace wire
(`testbed.wire`) in a link namespace between the two ends instead.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from testbed.errors import SpecError


@dataclass(frozen=True, slots=True)
class LinkShape:
    """Rate in bit/s from A to B (`rate_bps`) and from B to A (`reverse_rate_bps`, default the
    same); one-way `delay_ms` and `jitter_ms` in each direction; `loss_pct` per direction.

    Reordering has netem's meaning (`reorder PERCENT gap N`, tc-netem(8)): a frame picked for
    reordering skips the delay (and jitter) and so overtakes the frames still in flight; the
    others wait the delay. With `reorder_gap` N, the N-1 frames after a reordered one are
    always delayed, and from then on each frame is picked with probability `reorder_pct`
    (netem's counter), so the reordered fraction is 1 / (N - 1 + 100 / reorder_pct): exactly
    `reorder_pct` with the default gap 1. Reordering needs a delay, as in netem.
    `seed` makes the userspace wire's random choices (loss, jitter, reordering) repeatable;
    netem has no such option here and ignores it."""

    rate_bps: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    reverse_rate_bps: int | None = None
    reorder_pct: float = 0.0
    reorder_gap: int = 1
    seed: int | None = None

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
        self._check_reorder()

    def _check_reorder(self) -> None:
        if not _is_number(self.reorder_pct) or not 0 <= self.reorder_pct <= 100:
            raise SpecError(f"link shape: reorder_pct={self.reorder_pct!r}: expected 0..100 "
                            "(percent of frames sent out of order)")
        if type(self.reorder_gap) is not int or not 1 <= self.reorder_gap <= 2**32 - 1:
            raise SpecError(f"link shape: reorder_gap={self.reorder_gap!r}: expected an integer "
                            ">= 1 (netem's gap: 1 = any frame may be reordered)")
        if self.reorder_pct and not self.delay_ms:
            raise SpecError(f"link shape: reorder_pct={self.reorder_pct:g} with delay_ms=0: "
                            "expected a delay_ms > 0 (a reordered frame skips the delay, so "
                            "without one nothing is overtaken; netem refuses it too)")
        if self.seed is not None and (type(self.seed) is not int or
                                      not 0 <= self.seed <= 2**63 - 1):
            raise SpecError(f"link shape: seed={self.seed!r}: expected a non-negative integer "
                            "or None (a fresh random seed)")

    @property
    def rate_b_to_a(self) -> int | None:
        return self.reverse_rate_bps if self.reverse_rate_bps is not None else self.rate_bps

    @property
    def impairs(self) -> bool:
        """True when the link adds delay, jitter, loss or reordering (netem's job, or the
        wire's)."""
        return (self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0
                or self.reorder_pct > 0)

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
        if self.reorder_pct:
            gap = f" gap {self.reorder_gap}" if self.reorder_gap != 1 else ""
            parts.append(f"{self.reorder_pct:g}% reordered{gap}")
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
    if shape.reorder_pct:
        argv += ["reorder", f"{shape.reorder_pct}%", "gap", str(shape.reorder_gap)]
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
    if shape.reorder_pct:
        argv += ["--reorder-pct", str(shape.reorder_pct), "--reorder-gap", str(shape.reorder_gap)]
    if shape.seed is not None:
        argv += ["--seed", str(shape.seed)]
    if shape.rate_bps:
        argv += ["--rate-ab", str(shape.rate_bps)]
    if shape.rate_b_to_a:
        argv += ["--rate-ba", str(shape.rate_b_to_a)]
    return argv


def wire_control(shape: LinkShape) -> dict[str, object]:
    """The control message that gives a running wire `shape` (every field, so nothing of the
    previous shape is left): `send_wire_control(path, **wire_control(shape))`."""
    change: dict[str, object] = {
        "delay_ms": shape.delay_ms, "jitter_ms": shape.jitter_ms, "loss_pct": shape.loss_pct,
        "reorder_pct": shape.reorder_pct, "reorder_gap": shape.reorder_gap,
        "rate_ab": shape.rate_bps or 0, "rate_ba": shape.rate_b_to_a or 0}
    if shape.seed is not None:
        change["seed"] = shape.seed
    return change


def impaired_path(params: Mapping[str, str], prefix: str, where: str,
                  delay_ms: float = 20.0) -> LinkShape | None:
    """A scenario's Internet path from its text parameters `{prefix}loss`, `{prefix}reorder`
    (percent) and `{prefix}seed` (empty: a fresh one), or None when neither loss nor reordering
    is asked for. `where` (the scenario and the link) starts every error. The delay (20 ms one
    way, the `internet` preset's) is what the reordered frames skip."""
    values = {}
    for name in ("loss", "reorder"):
        text = params[prefix + name]
        try:
            values[name] = float(text)
        except ValueError:
            raise SpecError(f"{where}: {prefix}{name}={text!r}: expected a percentage "
                            "0..100") from None
    seed = params[prefix + "seed"].strip()
    if seed and not seed.isdigit():
        raise SpecError(f"{where}: {prefix}seed={seed!r}: expected a non-negative integer, or "
                        "empty for a fresh random seed")
    if not (values["loss"] or values["reorder"]):
        return None
    try:
        return LinkShape(delay_ms=delay_ms, loss_pct=values["loss"],
                         reorder_pct=values["reorder"], seed=int(seed) if seed else None)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def offload_off_commands(iface: str) -> list[list[str]]:
    """The brief's name for `offload_off_argv`, as a command list."""
    return [offload_off_argv(iface)]


def offload_off_argv(iface: str) -> list[str]:
    """Checksum and segmentation offloads off, so frames on a wire are what a NIC would send."""
    return ["ethtool", "-K", iface, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
            "gro", "off"]
