"""Streams and calls for event-loop hosts (tests/test_events.c)."""

import asyncio

produced = 0


def numbers(n):
    """Counts what it has handed out, so the host can see it park."""
    global produced
    produced = 0
    for i in range(n):
        produced += 1
        yield i


def how_many_produced():
    return produced


def twice(x):
    return 2 * x


async def later(x, seconds):
    await asyncio.sleep(seconds)
    return x
