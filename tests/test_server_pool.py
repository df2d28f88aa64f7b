"""The long-request pool of the server (ServerContext.run_long): at most ``long_concurrency`` bodies
of long requests run at once, and while they all hold their slots the shared thread pool that reads
and alias moves use still answers at once. No database, no HTTP: the context's limiter alone."""

from __future__ import annotations

import asyncio
import threading

import pytest
from starlette.concurrency import run_in_threadpool

from promptreg.errors import InputError
from promptreg.server.app import ServerContext
from promptreg.server.config import ServerConfig


def _context(long_concurrency: int) -> ServerContext:
    return ServerContext(registry=None, config=ServerConfig(long_concurrency=long_concurrency), tokens=None,
                         authenticator=None, limiter=None, metrics=None)


def test_long_bodies_are_bounded_and_reads_do_not_wait_for_them():
    ctx = _context(2)
    release = threading.Event()
    lock = threading.Lock()
    running, peak, started = [0], [0], []

    def body(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(i)
        release.wait(10)
        with lock:
            running[0] -= 1
        return i

    async def scenario():
        longs = [asyncio.create_task(ctx.run_long(body, i)) for i in range(5)]
        for _ in range(200):                      # until two bodies hold both slots
            await asyncio.sleep(0.01)
            if len(started) == 2:
                break
        await asyncio.sleep(0.1)
        assert len(started) == 2, started         # the other three wait for a slot
        read = await asyncio.wait_for(run_in_threadpool(lambda: "read"), 2)   # the shared pool answers
        release.set()
        return read, await asyncio.gather(*longs)

    read, results = asyncio.run(scenario())
    assert read == "read"
    assert results == [0, 1, 2, 3, 4] and peak[0] == 2 and sorted(started) == [0, 1, 2, 3, 4]


def test_long_concurrency_must_be_positive():
    with pytest.raises(InputError, match="long_concurrency"):
        ServerConfig(long_concurrency=0).check()
