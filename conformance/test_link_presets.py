"""Link shaping on the wire, loosely (exact figures are bench/link_presets.py's job)."""

from __future__ import annotations

import re

import pytest

from conformance.plugin import start_scenario
from testbed.shaping import LinkShape

pytestmark = pytest.mark.netns


def _ping(lab, count: int, interval: str = "0.02") -> tuple[float, float]:
    out = lab.node("client").run(["ping", "-c", str(count), "-i", interval, "-W", "2", "-q",
                                  "-n", lab.address("www")], timeout=count + 30).stdout
    loss = float(re.search(r"([\d.]+)% packet loss", out).group(1))
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    return loss, float(rtt.group(1)) if rtt else float("nan")


@pytest.fixture(scope="module")
def internet_link():
    with start_scenario("internet", link="internet") as lab:
        yield lab


def test_internet_preset_rtt(internet_link):
    _, rtt = _ping(internet_link, 30)
    assert 36 <= rtt <= 60, f"RTT {rtt} ms for 2 x 20 ms"


def test_runtime_change_of_delay_and_loss(internet_link):
    link = internet_link.link("homenat", "isp")
    link.set_shape(LinkShape(rate_bps=10_000_000, delay_ms=50))
    _, rtt = _ping(internet_link, 10)
    assert 95 <= rtt <= 130, f"RTT {rtt} ms for 2 x 50 ms"
    link.set_shape(LinkShape(rate_bps=10_000_000, delay_ms=1, loss_pct=40))
    loss, _ = _ping(internet_link, 150, "0.01")
    assert 45 <= loss <= 85, f"{loss}% ping loss for 40% per direction (expect ~64%)"
    link.set_shape(LinkShape(rate_bps=10_000_000, delay_ms=20, loss_pct=0.5))


def test_cut_and_restore(internet_link):
    link = internet_link.link("homenat", "isp")
    link.cut()
    loss, _ = _ping(internet_link, 5)
    assert loss == 100.0
    assert link.stats()["ab"]["lost"] > 0
    link.restore()
    loss, _ = _ping(internet_link, 5)
    assert loss < 100.0


def test_modem_serialization_and_delay():
    with start_scenario("internet", link="modem-56k") as lab:
        _, rtt = _ping(lab, 10, "0.3")
        # 2 x 100 ms plus a 98-byte frame clocked out at 33.6k up and 53k down (~38 ms)
        assert 225 <= rtt <= 300, f"RTT {rtt} ms"
