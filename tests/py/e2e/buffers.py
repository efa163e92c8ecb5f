"""Shared buffers seen from Python (tests/test_buffers.c)."""

import gc
import time

kept = []


def describe(view):
    """What the worker got: a writable memoryview over a mapping."""
    return [type(view).__name__, type(view.obj).__name__, len(view), view.readonly,
            view.contiguous]


def total(view):
    return sum(view)


def fill(view, value):
    for i in range(len(view)):
        view[i] = value
    return len(view)


def numpy_double(view):
    import numpy

    a = numpy.frombuffer(view, dtype=numpy.uint32)
    a *= 2
    return int(a.sum())


def slow_fill(view, value, seconds):
    time.sleep(seconds)
    view[:] = bytes([value]) * len(view)
    return sum(view)


def keep(view):
    kept.append(view)
    return len(kept)


def read_kept():
    return bytes(kept[-1][:4])


def drop_kept():
    kept.clear()
    gc.collect()
    return 0


def mapped_buffers():
    """How many shared buffers this worker has mapped now."""
    gc.collect()
    with open("/proc/self/maps") as f:
        return sum("pyproc-buffer" in line for line in f)


def two(a, b):
    return [len(a), len(b), a[0], b[0]]


def nested(items):
    return [bytes(v[:1]) for v in items["views"]]


def make(n, value):
    import pyproc

    b = pyproc.buffer(n)
    memoryview(b)[:] = bytes([value]) * n
    return b


def make_numpy(n):
    import numpy
    import pyproc

    a = numpy.frombuffer(pyproc.buffer(4 * n), dtype=numpy.uint32)
    a[:] = numpy.arange(n, dtype=numpy.uint32)
    return a[10:20]


def make_view(n):
    import pyproc

    v = memoryview(pyproc.buffer(n))[100:200]
    v[:] = b"v" * 100
    return v


def same_view(view):
    return view


def make_nested():
    import pyproc

    return {"a": pyproc.buffer(10), "b": [pyproc.buffer(20), 5]}


def gen_buffers(k):
    import pyproc

    for i in range(k):
        b = pyproc.buffer(16)
        memoryview(b)[0] = i % 256
        yield b


def too_many():
    import pyproc

    return [pyproc.buffer(1) for _ in range(65)]


def plain_numpy():
    import numpy

    return numpy.zeros(4)


def bad_sizes():
    import pyproc

    for n in (0, -1):
        try:
            pyproc.buffer(n)
        except ValueError:
            continue
        return False
    return True


def mapping_id(view):
    return id(view.obj)
