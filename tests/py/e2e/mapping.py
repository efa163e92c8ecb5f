"""Functions that the map tests (tests/test_map.c) run over many items."""

import asyncio
import os
import time

import pyproc


def noop(x):
    return x


def square(x):
    return x * x


def odd_fails(x):
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x


def scaled(x, *, scale=1, add=0):
    return x * scale + add


def where(ms):
    """Sleep ms milliseconds, then say which worker ran the item."""
    time.sleep(ms / 1000)
    return pyproc.index


def crash_on(x, trigger, ms):
    """Sleep ms milliseconds; the trigger item kills its worker."""
    if x == trigger:
        os._exit(3)
    time.sleep(ms / 1000)
    return x


def sleepy(x, ms):
    time.sleep(ms / 1000)
    return x


async def aio_square(x):
    await asyncio.sleep(0.001)
    return x * x


async def aio_odd_fails(x):
    await asyncio.sleep(0)
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x


cancelled = []


async def aio_wait(x):
    """Waits long; records that it was cancelled."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.append(str(x))
        raise
    return x


def seen_cancelled():
    return list(cancelled)


def plus_hub(hub, x):
    """Takes the hub first: it is passed to map items too."""
    return x + (1 if hasattr(hub, "t") else 0)


def total(*args, **kwargs):
    return sum(args) + sum(kwargs.values())
