"""The measured functions: as little work as a call can do, so that the
figures are the cost of the transport alone."""

import asyncio
import os
import time


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


def work(seconds):
    # The mixed load's calls (bench/mixed.c): a plain function that holds
    # its worker, as CPU-bound code would, without using a CPU.
    time.sleep(seconds)


def sleep_1ms(x):
    # A map's slow item: the workers' time is the whole cost.
    time.sleep(0.001)


def nap_1ms():
    # Slower than any spin: its answer comes by the doorbell.
    time.sleep(0.001)


def sleep_1ms_cost(n):
    # What sleep_1ms's sleep itself takes here: the ceiling of a map of it.
    t0 = time.perf_counter()
    for _ in range(n):
        time.sleep(0.001)
    return (time.perf_counter() - t0) / n


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
