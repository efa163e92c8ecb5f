"""What a worker sees of its own process, and what it says on its way."""

import os
import resource
import sys


def env(name):
    return os.environ.get(name)


def cwd():
    return os.getcwd()


def rlimit(name):
    soft, hard = resource.getrlimit(getattr(resource, name))
    return [soft, hard]


def allocate(n):
    block = bytearray(n)
    return len(block)


def say():
    print("first line")
    print("second", "line")
    sys.stderr.write("no newline")
    return 1


def say_a_lot(lines):
    for i in range(lines):
        print(f"line {i}")
    return lines
