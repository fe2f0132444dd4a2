"""One next deadline for many timers: what the PPTP and L2TP stacks hand the pump.

Each timer owner (a control connection, a tunnel, a session) has at most one deadline under a
key; they sit in a heap with lazy deletion, so `next()` and `due()` touch only what is due,
never every session, and rescheduling is O(log n): the per-packet path stays independent of
the number of sessions (issue 8's "no per-packet scan of all sessions").
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable


class DeadlineHeap:
    def __init__(self) -> None:
        self._deadline: dict[Hashable, float] = {}
        self._heap: list[tuple[float, Hashable]] = []
        # bumped by every schedule() and due(): equal counts mean next() has not moved, so a
        # pump need not re-arm its timer (runtime/pump.py's one-call flush)
        self.moves = 0

    def get(self, key: Hashable) -> float | None:
        return self._deadline.get(key)

    def schedule(self, key: Hashable, deadline: float | None) -> None:
        """Set (or with None, clear) the deadline of `key`."""
        self.moves += 1
        if deadline is None:
            self._deadline.pop(key, None)
        elif self._deadline.get(key) != deadline:
            self._deadline[key] = deadline
            heapq.heappush(self._heap, (deadline, key))
            if len(self._heap) > 4 * len(self._deadline) + 64:  # stale entries: compact
                self._heap = [(d, k) for k, d in self._deadline.items()]
                heapq.heapify(self._heap)

    def next(self) -> float | None:
        """The earliest deadline, or None."""
        heap = self._heap
        while heap and self._deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: rescheduled or gone since it was pushed
        return heap[0][0] if heap else None

    def due(self, now: float) -> list:
        """The keys whose deadline is `now` or earlier, each cleared (the owner reschedules)."""
        self.moves += 1
        keys = []
        while self._heap and self._heap[0][0] <= now:
            deadline, key = heapq.heappop(self._heap)
            if self._deadline.get(key) == deadline:
                del self._deadline[key]
                keys.append(key)
        return keys
