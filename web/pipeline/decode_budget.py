"""How many pixels one worker holds decoded at once, across all its threads.

Each request's own size is checked (MAX_IMAGE_PIXELS), but eight threads decoding eight large
pictures at once would still multiply the memory. Decodes and drawings reserve their pixels here
first; when the budget is taken they wait a little, then the request is answered 503 with
Retry-After instead of pushing the worker out of memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from web import metrics
from web.errors import ServiceBusy

RETRY_AFTER_S = 1


class DecodeBudget:
    """A pixel budget shared by the threads of one process (`limit` pixels, waits up to `wait_s`)."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._used = 0
        self._condition = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._used

    @contextmanager
    def reserve(self, pixels: int, what: str = "pictures") -> Iterator[None]:
        """Hold `pixels` (at most the whole budget: one picture larger than it runs alone) while the
        block runs; raise ServiceBusy when they cannot be had within `wait_s`."""
        need = max(1, min(int(pixels), self.limit))
        deadline = time.monotonic() + self.wait_s
        with self._condition:
            while self._used + need > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    metrics.DECODE_REFUSALS.inc()
                    raise ServiceBusy(
                        f"the gateway is decoding too many pixels at once to take {what} of "
                        f"{pixels / 1e6:.1f} MP now (MAX_DECODE_PIXELS_IN_FLIGHT={self.limit}); try again "
                        "in a moment",
                        retry_after=RETRY_AFTER_S,
                    )
                self._condition.wait(remaining)
            self._used += need
            metrics.DECODE_PIXELS.set(self._used)
        try:
            yield
        finally:
            self.give_back(need)

    def try_take(self, pixels: int) -> int:
        """Hold `pixels` now if the budget has room, without waiting: the amount held (for
        `give_back`), 0 when there is no room. For work that can just as well be done later."""
        need = max(1, min(int(pixels), self.limit))
        with self._condition:
            if self._used + need > self.limit:
                return 0
            self._used += need
            metrics.DECODE_PIXELS.set(self._used)
        return need

    def give_back(self, held: int) -> None:
        with self._condition:
            self._used -= held
            metrics.DECODE_PIXELS.set(self._used)
            self._condition.notify_all()
