#!/usr/bin/python3
"""The original pop proc transport, measured for pyproc-bench.

As the pop proc subsystem did it: every worker is a fresh interpreter
started as `/usr/bin/python3 -c WORKER` that serves an asyncio Unix-socket
server; for every call the asyncio host opens a new connection, sends
msgpack [ref, args, kwargs], and the worker imports and runs the function
(awaiting it when it is a coroutine), answers msgpack [ok, value] and
closes the connection.  Prints JSON rows for pyproc-bench (see
external.c); msgpack comes from Debian's python3-msgpack:

    /usr/bin/python3 bench/popproc.py --quick --py-path bench/py
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import msgpack

PYTHON = "/usr/bin/python3"
WORKERS = 3

WORKER = r"""
import asyncio, importlib, sys, traceback
import msgpack

sock, py_path = sys.argv[1], sys.argv[2]
sys.path.insert(0, py_path)


async def read_one(reader):
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            raise EOFError
        unpacker.feed(chunk)
        for obj in unpacker:
            return obj


async def serve(reader, writer):
    try:
        ref, args, kwargs = await read_one(reader)
        mod, _, name = ref.rpartition(".")
        ret = getattr(importlib.import_module(mod), name)(*args, **kwargs)
        if asyncio.iscoroutine(ret):
            ret = await ret
        reply = [True, ret]
    except Exception:
        reply = [False, traceback.format_exc()]
    writer.write(msgpack.packb(reply, use_bin_type=True))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main():
    server = await asyncio.start_unix_server(serve, sock)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

LEVELS = {
    "smoke": dict(lat=(3, 20, 0.2), starts=1),
    "quick": dict(lat=(200, 3000, 1.0), starts=2),
    "full": dict(lat=(1000, 20000, 3.0), starts=5),
}


async def read_one(reader):
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            raise EOFError("the worker closed the connection early")
        unpacker.feed(chunk)
        for obj in unpacker:
            return obj


class Pool:
    """Workers called round robin, a connection per call."""

    def __init__(self, folder, py_path):
        self.folder, self.py_path = folder, py_path
        self.procs, self.socks, self.next = [], [], 0

    async def start(self, n):
        for i in range(n):
            sock = os.path.join(self.folder, f"w{i}.sock")
            if os.path.exists(sock):
                os.unlink(sock)
            self.socks.append(sock)
            self.procs.append(await asyncio.create_subprocess_exec(
                PYTHON, "-c", WORKER, sock, self.py_path,
                stdout=asyncio.subprocess.PIPE))
        for proc in self.procs:
            if await proc.stdout.readline() != b"ready\n":
                raise RuntimeError("a worker did not start")

    async def func(self, ref, *args, **kwargs):
        sock = self.socks[self.next]
        self.next = (self.next + 1) % len(self.socks)
        reader, writer = await asyncio.open_unix_connection(sock)
        writer.write(msgpack.packb([ref, args, kwargs], use_bin_type=True))
        await writer.drain()
        ok, value = await read_one(reader)
        writer.close()
        await writer.wait_closed()
        if not ok:
            raise RuntimeError(value)
        return value

    async def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            await proc.wait()


def emit(key, label, unit, values, note, samples=False):
    print(json.dumps(dict(key=key, label=label, unit=unit, kind="cost",
                          p99=True, samples=samples, note=note,
                          values=[round(v, 4) for v in values])), flush=True)


async def latency(pool, budget):
    warmup, most, seconds = budget
    for _ in range(warmup):
        await pool.func("benchmods.calls.noop")
    out = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while len(out) < most and (not out or clock() < deadline):
        t0 = clock()
        await pool.func("benchmods.calls.noop")
        out.append((clock() - t0) / 1e3)
    return out


async def start_once(folder, py_path):
    """From nothing to every worker having answered a call, in ms."""
    t0 = time.perf_counter()
    pool = Pool(folder, py_path)
    try:
        await pool.start(WORKERS)
        await asyncio.gather(*(pool.func("benchmods.calls.noop")
                               for _ in range(WORKERS)))
        return (time.perf_counter() - t0) * 1e3
    finally:
        await pool.stop()


async def run(lv, py_path):
    with tempfile.TemporaryDirectory(prefix="popproc-") as folder:
        starts = [await start_once(folder, py_path)
                  for _ in range(lv["starts"])]
        pool = Pool(folder, py_path)
        try:
            await pool.start(WORKERS)
            lat = await latency(pool, lv["lat"])
        finally:
            await pool.stop()
    emit("popproc-lat", "pop proc call round trip", "us", lat,
         f"asyncio host, {WORKERS} workers round robin, no-op", samples=True)
    emit("popproc-start", f"pop proc start-up, {WORKERS} workers answered",
         "ms", starts, "python3 -c workers serving asyncio Unix sockets")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    level = ap.add_mutually_exclusive_group()
    for name in LEVELS:
        level.add_argument("--" + name, dest="level", action="store_const",
                           const=name)
    ap.add_argument("--py-path", required=True,
                    help="the folder that holds the benchmods package")
    args = ap.parse_args()
    asyncio.run(run(LEVELS[args.level or "full"], args.py_path))


if __name__ == "__main__":
    main()
