"""Mounted with PYPROC_SUB_PRELOAD by tests/test_template.c: says which
process imported it."""

import ctypes
import os

import pyproc

IMPORTED_IN = os.getpid()
FORKED_AS = []  # the pids this module was forked into, by after-fork hook

os.register_at_fork(after_in_child=lambda: FORKED_AS.append(os.getpid()))


def where():
    return [IMPORTED_IN, os.getpid(), pyproc.index]


def forked_as():
    return FORKED_AS


def death_signal():
    """[PR_GET_PDEATHSIG, parent pid] of this worker."""
    sig = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
    return [sig.value, os.getppid()]
