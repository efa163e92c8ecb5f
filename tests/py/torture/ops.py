"""Calls of every shape for tests/torture.c: quick, slow, endless, stuck,
streaming, failing and calling home."""

import asyncio
import signal
import time

import pyproc


def echo(value):
    return value


async def nap(value, ms):
    await asyncio.sleep(ms / 1000)
    return value


def count(n):
    yield from range(n)


async def acount(n, ms):
    for i in range(n):
        yield i
        if ms:
            await asyncio.sleep(ms / 1000)


async def hang():
    await asyncio.sleep(3600)


def spin():
    # Busy in Python: the call timeout interrupts it with CallTimeout.
    while True:
        pass


def stuck(seconds):
    # Blocked in C with the interrupt signal held off: only a kill ends it.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    time.sleep(seconds)


def fail(message):
    raise ValueError(message)


async def call_home(value):
    return await pyproc.ret(value)


def cfg(hub):
    # The last value pyproc_set_attr() stored at "tt.cfg", -1 when none.
    return getattr(hub.tt, "cfg", -1)
