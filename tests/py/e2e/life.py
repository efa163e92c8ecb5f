"""Long-running pools: recycling, reload, resize (tests/test_recycle.c,
test_reload.c, test_resize.c)."""

import os
import time

held = []


def leak(mib):
    # Keeps what it allocates, on purpose, and touches every page so that
    # it counts in the worker's resident memory.
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    held.append(block)
    return len(held) * mib


def holding():
    return len(held)


def work(seconds):
    # A plain function: the worker runs nothing else meanwhile.
    time.sleep(seconds)
    return os.getpid()


def count(n, delay):
    for i in range(n):
        time.sleep(delay)
        yield i
