"""Values that JSON cannot hold as they are, for the command-line tool."""

import os
import time

import pyproc


def odd_values():
    return [float("nan"), float("inf"), 2**64 - 1, -(2**63), b"\x00\xff", {1: "one", None: 2}]


def quoted():
    return ["it's", "tab\there", b"a'b\\", 1.0, 0.1, True, None]


def die():
    os._exit(3)


def slow(seconds):
    time.sleep(seconds)
    return seconds


def ticks(n):
    for i in range(n):
        yield i


def index_and(value):
    return [pyproc.index, value]


def module_names():
    """The public names of the worker's `pyproc` module, with their kinds."""
    import inspect

    kinds = {}
    for name in dir(pyproc):
        if name.startswith("_"):
            continue
        obj = getattr(pyproc, name)
        if inspect.isclass(obj):
            kinds[name] = "class " + obj.__mro__[1].__name__
        elif inspect.iscoroutinefunction(obj):
            kinds[name] = "async def"
        else:
            kinds[name] = type(obj).__name__
    return kinds
