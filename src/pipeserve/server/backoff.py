"""How long to wait before respawning a process that died (a worker, a front end): longer with
each death in a row, afresh once it had served a while, so a crash loop backs off."""

import asyncio
from collections.abc import Callable, Coroutine

_DELAYS_S = (0.5, 1, 2, 5, 10, 30)
_HEALTHY_AFTER_S = 60.0


class Backoff:
    def __init__(self) -> None:
        self._deaths: dict[int, int] = {}

    def delay_s(self, slot: int, lived_s: float) -> float:
        """The wait before respawning process `slot`, which died after `lived_s` seconds."""
        if lived_s > _HEALTHY_AFTER_S:
            self._deaths[slot] = 0
        deaths = self._deaths[slot] = self._deaths.get(slot, 0) + 1
        return _DELAYS_S[min(deaths, len(_DELAYS_S)) - 1]

    def respawn_later(
        self, slot: int, lived_s: float, respawn: Callable[[], Coroutine[None, None, None]]
    ) -> float:
        """Runs `respawn()` on the event loop after `delay_s`, which it returns."""
        delay = self.delay_s(slot, lived_s)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(respawn()))
        return delay
