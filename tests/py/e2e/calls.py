"""Calls, waiting and the callback thread (tests/test_calls.c)."""

import asyncio
import os
import time

import pyproc


async def nap(seconds):
    await asyncio.sleep(seconds)
    return seconds


def ping():
    return 0


def block(seconds):
    # A plain call: the worker reads nothing from its ring meanwhile.
    time.sleep(seconds)
    return seconds


def length(data):
    return len(data)


def count(n, delay):
    for i in range(n):
        time.sleep(delay)
        yield i


async def call_home(n):
    return await pyproc.ret(n) + 1


async def call_home_pid():
    # The host's callback kills this worker while it waits.
    return await pyproc.ret(os.getpid())


async def flood(n):
    # Callbacks sent much faster than one is answered.
    got = await asyncio.gather(*(pyproc.ret(i) for i in range(n)))
    return len(got)


async def acount(n, delay):
    for i in range(n):
        await asyncio.sleep(delay)
        yield i


async def keep_busy(seconds):
    # The event loop never idles, so the worker never sleeps on its ring
    # and callers spin (and drain) while they wait.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0)
    return 0


async def nap_stamp(seconds):
    # When the answer leaves, on the host's CLOCK_MONOTONIC.
    await asyncio.sleep(seconds)
    return time.monotonic()
