"""Coroutines and the I/O that user code does on the worker's loop."""

import asyncio
import os
import threading


async def double(x):
    return x * 2


async def nap(seconds, value=None):
    await asyncio.sleep(seconds)
    return value


async def fetch(port, path="/"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return [int(head.split()[1]), body.decode()]


async def fetch_aiohttp(port, path="/"):
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return [resp.status, await resp.text()]


async def in_task():
    # Both need a current task in the very first step.
    task = asyncio.current_task()
    async with asyncio.timeout(5):
        name = task.get_name() if task else None
    return [task is not None, name is not None]


async def timeout_fires():
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(10)
    except TimeoutError:
        return "timed out"
    return "not timed out"


async def group(n):
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(double(i)) for i in range(n)]
    return [t.result() for t in tasks]


def _blocking(x):
    return [x, threading.current_thread() is not threading.main_thread()]


async def in_executor(x):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _blocking, x)


async def subprocess_echo(text):
    proc = await asyncio.create_subprocess_exec(
        "/bin/echo", text, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return [proc.returncode, out.decode().strip()]


async def call_later(delay, value):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_later(delay, fut.set_result, value)
    return await fut


async def raise_after(seconds):
    await asyncio.sleep(seconds)
    raise ValueError("raised after a sleep")


def sync_returns_coro():
    # A plain function that hands back an awaitable is awaited too.
    return double(21)


def pid():
    return os.getpid()
