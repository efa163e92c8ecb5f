"""The measured functions: as little work as a call can do, so that the
figures are the cost of the transport alone."""

import asyncio
import os


def noop():
    return None


def noop_arg(x):
    # map() and imap_unordered() hand every call one item.
    return None


async def anoop():
    return None


async def asleep0():
    # One trip through the event loop.
    await asyncio.sleep(0)


def echo(data):
    return data


def pid():
    return os.getpid()


def items(n):
    yield from range(n)


def touch(data):
    # Reads both ends: what a function that gets a large argument pays
    # before it can look at it.
    return data[0] + data[len(data) - 1]
