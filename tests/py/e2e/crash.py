"""Ways for a worker to die."""

import asyncio
import ctypes
import os
import signal


def segfault():
    ctypes.string_at(0)


def exit_now(code):
    os._exit(code)


def fatal():
    ctypes.pythonapi.Py_FatalError(b"a fatal error, on purpose")


def kill_self(signum):
    os.kill(os.getpid(), signum)


async def nap(seconds):
    await asyncio.sleep(seconds)
    return os.getpid()
