"""Scenarios: a topology, the daemons it runs and the checks that say whether it worked.

A scenario is data plus three functions: `build(params) -> LabSpec`, `start(lab, params)` for
daemons, `checks(lab, params) -> list[CheckResult]`. Parameters are declared with defaults and
allowed values so `vpnlab list` can show them and a typo fails before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from testbed.errors import SpecError
from testbed.model import LabSpec

if TYPE_CHECKING:
    from testbed.lab import Lab


@dataclass(frozen=True, slots=True)
class Param:
    default: str
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


Params = Mapping[str, str]


def _no_start(lab: Lab, params: Params) -> None:
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    build: Callable[[Params], LabSpec]
    checks: Callable[[Lab, Params], list[CheckResult]]
    params: Mapping[str, Param] = field(default_factory=dict)
    start: Callable[[Lab, Params], None] = _no_start

    def resolve(self, given: Mapping[str, str]) -> dict[str, str]:
        """Defaults overlaid with `given`; unknown names and values raise with what is allowed."""
        resolved = {name: p.default for name, p in self.params.items()}
        for key, value in given.items():
            if key not in self.params:
                allowed = ", ".join(self.params) or "none"
                raise SpecError(f"scenario {self.name!r}: unknown parameter {key!r} "
                                f"(parameters: {allowed})")
            choices = self.params[key].choices
            if choices and value not in choices:
                raise SpecError(f"scenario {self.name!r}: parameter {key}={value!r}: expected "
                                f"one of {', '.join(choices)}")
            resolved[key] = value
        return resolved


def parse_param_args(items: list[str]) -> dict[str, str]:
    """`--param key=value` items into a dict, with a clear error for a missing '='."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--param {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out
