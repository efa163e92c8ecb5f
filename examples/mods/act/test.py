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
