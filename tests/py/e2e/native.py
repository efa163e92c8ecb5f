"""Python code that calls native functions through the hub."""


def cos(hub, x):
    # The native sub "m" that tests/test_native.c loads: libm's cos.
    return hub.m.cos(x)


def call(hub, sub, func, *args):
    return getattr(getattr(hub, sub), func)(*args)


def refused(hub, sub, func, *args):
    """Call a native function that must refuse its arguments; return the
    exception's type and message."""
    try:
        getattr(getattr(hub, sub), func)(*args)
    except Exception as e:
        return [type(e).__name__, str(e)]
    return None


def describe(hub, sub, func):
    f = getattr(getattr(hub, sub), func)
    return [f.__name__, f.signature, f.library, repr(f), repr(getattr(hub, sub))]
