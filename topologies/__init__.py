"""The chapter's scenarios, one module each; `SCENARIOS` is what `vpnlab list/run/up` see."""

from __future__ import annotations

from testbed.scenario import Scenario
from topologies import interop, internet, managed, remote_access

SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (internet.SCENARIO, remote_access.SCENARIO, managed.SCENARIO,
                       interop.SCENARIO)
}
