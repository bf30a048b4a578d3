"""Knowing when a child process (a worker, a front end) has exited without holding a thread
for its lifetime: the event loop watches the process's sentinel, a descriptor that becomes
readable when it ends. A thread per process from the loop's default pool would starve that
pool with enough processes, and reaping, respawning and health would wait behind it."""

import asyncio
from multiprocessing.process import BaseProcess


def when_exited(process: BaseProcess) -> asyncio.Future[None]:
    """A future done once `process` has exited and been reaped (call it once per process)."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    sentinel = process.sentinel

    def reap() -> None:
        loop.remove_reader(sentinel)
        process.join()  # it has ended: this only collects its exit code
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(sentinel, reap)
    return exited
