"""References and the worker's caches of them (tests/test_refs.c)."""

import sys
import types

resolved = 0  # lookups of "hit" on this module: resolve() runs once per ref


class _Counting(types.ModuleType):
    def __getattribute__(self, name):
        if name == "hit":
            global resolved
            resolved += 1
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Counting


def hit():
    return 1


def resolutions():
    return resolved


def __getattr__(name):
    # f0, f1, ...: a function per name, answering its number; long_...:
    # a reference longer than the worker's fast cache keeps.
    if name.startswith("f") and name[1:].isdigit():
        return lambda: int(name[1:])
    if name.startswith("long_"):
        return lambda: len(name)
    raise AttributeError(name)
