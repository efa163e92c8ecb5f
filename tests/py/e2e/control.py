"""Functions for the tests of stopping calls and of worker-side faults."""

import asyncio
import os
import time

ran = []


def spin(seconds=3600.0):
    """A Python loop: only the interrupt signal ends it early."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return "spun"


def spin_then_linger(linger):
    """As spin(), and once interrupted, keep the worker `linger` seconds
    more before the interruption ends the call."""
    try:
        spin()
    except BaseException:
        time.sleep(linger)
        raise


def take(data):
    """A large argument; answers its size."""
    return len(data)


def nap(seconds):
    time.sleep(seconds)
    return "napped"


def record(what):
    ran.append(what)
    return what


def seen():
    return list(ran)


def pid():
    return os.getpid()


def fork_and_return():
    """Fork, and return in both processes: only the worker's answer counts."""
    child = os.fork()
    if child == 0:
        return ["child", os.getpid()]
    return ["parent", child]


def alive(pid):
    """Whether a process of ours still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---- task factories ----

factory_used = 0


def _done_factory(loop, coro, **kw):
    """Runs a coroutine that never waits to its end at once and returns a
    done future, as an eager task factory does; others become Tasks."""
    global factory_used
    factory_used += 1
    if getattr(coro, "__name__", "") != "double":
        return asyncio.Task(coro, loop=loop, **kw)
    fut = loop.create_future()
    try:
        coro.send(None)
    except StopIteration as e:
        fut.set_result(e.value)
    except BaseException as e:
        fut.set_exception(e)
    else:
        coro.close()
        fut.set_exception(RuntimeError("double() waited"))
    return fut


def _busy_factory(loop, coro, **kw):
    """A Task, and one more callback scheduled after its first step."""
    global factory_used
    factory_used += 1
    task = asyncio.Task(coro, loop=loop, **kw)
    loop.call_soon(ran.append, "after-task")
    return task


def use_factory(name):
    global factory_used
    factory_used = 0
    factory = {"done": _done_factory, "busy": _busy_factory, "none": None}[name]
    asyncio.get_running_loop().set_task_factory(factory)


def factory_count():
    return factory_used


async def double(x):
    return 2 * x


async def double_later(x):
    await asyncio.sleep(0.01)
    return 2 * x


# ---- exits from a later step ----

async def exit_later(how):
    await asyncio.sleep(0.05)
    if how == "exit":
        raise SystemExit(3)
    raise KeyboardInterrupt()


async def slow_ok():
    await asyncio.sleep(0.4)
    return "ok"
