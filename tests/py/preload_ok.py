"""Mounted with PYPROC_SUB_PRELOAD by tests/test_template.c: says which
process imported it."""

import ctypes
import os

import pyproc

IMPORTED_IN = os.getpid()
FORKED_AS = []  # the pids this module was forked into, by after-fork hook

# A file opened at import, in the template: its fd number in a forked
# worker.
IMPORT_FD = os.open(__file__, os.O_RDONLY)
HOOK_FD = []  # a file opened by the after-fork hook


def _after_fork():
    FORKED_AS.append(os.getpid())
    HOOK_FD.append(os.open(os.devnull, os.O_RDONLY))


os.register_at_fork(after_in_child=_after_fork)


def where():
    return [IMPORTED_IN, os.getpid(), pyproc.index]


def forked_as():
    return FORKED_AS


def death_signal():
    """[PR_GET_PDEATHSIG, parent pid] of this worker."""
    sig = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
    return [sig.value, os.getppid()]


def fds():
    """[the import's fd, whether it still is this file; the hook's fd,
    whether it is open] (-1, False: no hook ran)."""

    def is_open(fd):
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False

    mine = is_open(IMPORT_FD) and os.path.samestat(os.fstat(IMPORT_FD), os.stat(__file__))
    hook = HOOK_FD[-1] if HOOK_FD else -1
    return [IMPORT_FD, mine, hook, hook >= 0 and is_open(hook)]
