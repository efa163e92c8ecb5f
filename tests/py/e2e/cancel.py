"""Calls that run too long, for cancellation and timeouts."""

import asyncio
import os
import signal
import time

events = []


async def wait_forever():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        events.append("cancelled")
        raise
    finally:
        events.append("finally")


def seen():
    return list(events)


def reset():
    events.clear()


def spin_forever():
    try:
        while True:
            pass
    finally:
        events.append("spin finally")


def sleep_blocked(seconds):
    # With the interrupt signal blocked, nothing can stop this but a kill.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    time.sleep(seconds)


async def stream_forever():
    i = 0
    while True:
        yield i
        i += 1
        await asyncio.sleep(0.01)


def pid():
    return os.getpid()


def quick():
    return "quick"
