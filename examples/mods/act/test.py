"""Functions that examples/demo.c calls as "act.test.<name>"."""

import asyncio
import os

import pyproc


def __init__(hub):
    # Runs once in every worker when the sub is added with PYPROC_SUB_INIT.
    hub.act.loaded_by = os.getpid()


def ping():
    return {}


def whoami(hub):
    # A first parameter named `hub` receives the worker's hub.
    return [pyproc.index, os.getpid(), hub.act.loaded_by]


def scale(a, b, factor=1.0):
    return (a + b) * factor


async def later(x, delay=0.01):
    await asyncio.sleep(delay)
    return x * 2


def divide(a, b):
    return a / b


def iterate(n):
    # A plain generator: the host reads it with pyproc_gen()/pyproc_next().
    for i in range(n):
        yield {"i": i, "square": i * i}


async def ticks(n, every):
    # An async generator: each item reaches the host as soon as it is made.
    for i in range(n):
        await asyncio.sleep(every)
        yield i


counter = 0


def count(hub):
    # State that lives in one worker: pin calls there with pyproc_ind_func().
    global counter
    counter += 1
    return [pyproc.index, counter]


async def ask_host(question):
    # Calls the host's pyproc_opts.callback and returns its answer.
    answer = await pyproc.ret(question)
    return f"the host says {answer!r}"
