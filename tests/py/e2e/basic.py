"""Plain functions: identity, arguments, errors, state."""

import os

import pyproc

calls = 0


def __init__(hub):
    hub.t.inits = getattr(hub.t, "inits", 0) + 1


def pid():
    return os.getpid()


def where():
    return [pyproc.index, os.getpid()]


def echo(*args, **kwargs):
    if kwargs:
        return [list(args), kwargs]
    return list(args)


def echo_one(value):
    return value


def types_of(*args):
    return [type(a).__name__ for a in args]


def scale(a, b, factor=1.0):
    return (a + b) * factor


def count():
    global calls
    calls += 1
    return calls


def inits(hub):
    return hub.t.inits


def fail(message):
    raise KeyError(message)


class Custom(Exception):
    pass


def fail_custom():
    raise Custom("custom failure")


def countdown(n):
    return list(range(n, 0, -1))


def tagged(tag, n):
    return [tag, n]


def unsendable():
    return open(os.devnull)


def length(data):
    return len(data)


def make_bytes(n):
    return b"x" * n
