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
