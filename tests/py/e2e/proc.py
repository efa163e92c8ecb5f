"""The proc API end to end: callbacks, generators, per-worker state."""

import asyncio
import time

import pyproc


def ping():
    return {}


async def call_home(n):
    # The host's callback answers; its answer is the value of the await.
    answer = await pyproc.ret({"n": n, "from": pyproc.index})
    return answer + 1


async def call_home_hub(hub, n):
    return await hub.proc.worker.ret(n)


def gen_range(a, b):
    yield from range(a, b)


async def agen_range(a, b):
    for i in range(a, b):
        await asyncio.sleep(0)
        yield i


async def slow_agen(n, delay):
    for i in range(n):
        yield [i, time.monotonic()]
        await asyncio.sleep(delay)


def slow_gen(n, delay):
    for i in range(n):
        yield [i, time.monotonic()]
        time.sleep(delay)


def now():
    return time.monotonic()


def seed(hub, value):
    hub.t.state = value
    return [pyproc.index, value]


def bump(hub):
    hub.t.state += 1
    return hub.t.state


def bump_gen(hub, n):
    for _ in range(n):
        hub.t.state += 1
        yield hub.t.state


produced = 0


def counting_gen(n):
    global produced
    produced = 0
    for i in range(n):
        produced += 1
        yield i


def progress():
    return produced


closed = None


def closing_gen():
    global closed
    closed = False
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        closed = True


async def closing_agen():
    global closed
    closed = False
    try:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0)
    finally:
        closed = True


def was_closed():
    return closed


def gen_raises(n):
    for i in range(n):
        yield i
    raise ValueError(f"stopped after {n}")


async def nap(seconds):
    await asyncio.sleep(seconds)
    return pyproc.index


def get_attr(hub, path):
    obj = hub
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def index():
    return pyproc.index
