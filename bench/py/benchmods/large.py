"""Functions over large data, for the shared-buffer rows of pyproc-bench
(bench/large.c) and their Python baselines (bench/large.py)."""

import time

# numpy is imported by the functions that use it, not here: every bench pool
# loads this package, and the start-up rows must not pay for numpy.

_private = {}


def total(data):
    """numpy.sum of the bytes, however they came."""
    import numpy

    return int(numpy.frombuffer(data, dtype=numpy.uint8).sum(dtype=numpy.uint64))


def noop(data):
    return None


def sum_time(data):
    """Seconds numpy.sum takes over the memory it was given."""
    import numpy

    a = numpy.frombuffer(data, dtype=numpy.uint8)
    t0 = time.perf_counter()
    a.sum(dtype=numpy.uint64)
    return time.perf_counter() - t0


def private_sum_time(n):
    """The same over an array of this worker's own memory, made once."""
    import numpy

    a = _private.get(n)
    if a is None:
        a = _private[n] = numpy.full(n, 7, dtype=numpy.uint8)
    t0 = time.perf_counter()
    a.sum(dtype=numpy.uint64)
    return time.perf_counter() - t0


# ---- ProcessPoolExecutor's side ----

_attached = {}


def shm_total(name, size):
    """numpy.sum over a multiprocessing.shared_memory block, attached once
    per worker, as a user keeping it mapped would."""
    from multiprocessing import shared_memory

    shm = _attached.get(name)
    if shm is None:
        shm = _attached[name] = shared_memory.SharedMemory(name=name)
    return total(shm.buf[:size])
