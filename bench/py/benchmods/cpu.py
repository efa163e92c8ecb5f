"""CPU-bound Python, timed where it runs: in a worker, or under
/usr/bin/python3 by bench/baselines.py."""

import time

# About 30 ms of work on the machines pyproc is measured on.
N = 1_000_000


def spin(n=N):
    """Seconds that a pure-Python loop of n steps took, by the clock of
    the process that ran it."""
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - t0
