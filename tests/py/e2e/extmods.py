"""Extension modules loaded from shared objects: each finds the C API in
the worker's executable (see test_extmods.c), and the interpreter is the
one linked into it."""

import os


def no_libpython():
    """True when no libpython shared object is mapped: the interpreter
    runs from the executable itself."""
    with open("/proc/self/maps") as f:
        return not any("libpython" in line for line in f)


def runs_as_python():
    """True when this process is sys.executable itself (pyproc-worker
    exec'd it), not a program that embeds Python."""
    import sys
    return os.path.realpath("/proc/self/exe") == os.path.realpath(sys.executable)


def ssl_context():
    import ssl
    ctx = ssl.create_default_context()
    # A client handshake over memory BIOs: builds its ClientHello.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return [ctx.verify_mode == ssl.CERT_REQUIRED, outgoing.pending > 0,
            ssl.OPENSSL_VERSION.split()[0]]


def decimal_sum():
    import _decimal
    ctx = _decimal.Context(prec=30)
    third = ctx.divide(_decimal.Decimal(1), _decimal.Decimal(3))
    return str(ctx.add(third, _decimal.Decimal("0.000000000000000000000000000001")))


def json_c():
    import json.decoder
    import json.encoder
    import _json
    value = {"a": [1, 2.5, "é"], "b": None}
    text = json.dumps(value, sort_keys=True)
    return [json.decoder.c_scanstring is _json.scanstring,
            json.encoder.c_make_encoder is not None, text, json.loads(text) == value]


async def asyncio_c():
    import asyncio
    import _asyncio

    async def twice(x):
        await asyncio.sleep(0)
        return 2 * x

    task = asyncio.get_running_loop().create_task(twice(21))
    return [type(task) is _asyncio.Task, await task]


def numpy_dot():
    import numpy
    a = numpy.arange(12, dtype=numpy.float64).reshape(3, 4)
    return [float((a @ a.T).trace()), os.path.basename(numpy.core._multiarray_umath.__file__)]
