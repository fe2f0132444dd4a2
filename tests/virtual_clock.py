"""The in-memory networks of the stack tests share one loop: step until nothing moves, then
jump the virtual clock to the next deadline and fire the stacks that are due."""

from __future__ import annotations

from collections.abc import Callable


class VirtualClockNet:
    """Subclasses give `step() -> bool` (did anything move?), `server`, `clients`, `now`."""

    server: object
    clients: list
    now: float

    def step(self) -> bool:
        raise NotImplementedError

    def run(self, until: float = 60.0, stop: Callable[[], bool] | None = None,
            max_steps: int = 200_000) -> None:
        end = self.now + until
        for _ in range(max_steps):
            if self.step():
                if stop and stop():
                    return
                continue
            if stop and stop():
                return
            stacks = [self.server, *self.clients]
            timers = [t for s in stacks if (t := s.get_timer()) is not None]
            if not timers or min(timers) > end:
                self.now = end
                return
            self.now = max(self.now, min(timers))
            for s in stacks:
                t = s.get_timer()
                if t is not None and t <= self.now:
                    s.handle_timer(self.now)
        raise AssertionError("did not settle")
