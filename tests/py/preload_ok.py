"""Mounted with PYPROC_SUB_PRELOAD by tests/test_template.c: says which
process imported it."""

import ctypes
import os

import pyproc

IMPORTED_IN = os.getpid()


def where():
    return [IMPORTED_IN, os.getpid(), pyproc.index]


def death_signal():
    """[PR_GET_PDEATHSIG, parent pid] of this worker."""
    sig = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
    return [sig.value, os.getppid()]
