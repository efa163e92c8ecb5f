"""pyproc's worker side: the hub, its subs, and the loop that serves the ring.

This module is compiled into pyproc-worker and runs as module ``pyproc``, so
user code can ``import pyproc`` to learn where it runs (``pyproc.index``,
``pyproc.pool``).  The hot path (decoding frames, calling plain functions,
encoding replies) is C, in the ``_pyproc`` module; what is here runs once per
sub, per new reference, or per coroutine.
"""

import asyncio
import gc
import importlib
import itertools
import os
import pkgutil
import selectors
import signal
import sys
import traceback
import types

import _pyproc

index = _pyproc.index
pool = _pyproc.pool

SharedMapping = _pyproc.SharedMapping


def buffer(nbytes):
    """A new zero-filled shared buffer of nbytes.

    It exports its memory with the buffer protocol (memoryview(b),
    numpy.frombuffer(b, dtype)).  Returned to the host, it, a memoryview of
    it, or any object whose memory lies inside it (a numpy array over it)
    travels as a reference to the buffer, not as bytes.
    """
    return _pyproc.buffer(nbytes)

_ENOENT = 2
_ETIMEDOUT = 110
_ECANCELED = 125


class UnknownReference(LookupError):
    """A reference names no sub, module or function of this worker."""


class CallbackError(RuntimeError):
    """The host's callback failed, or the pool has none."""


class CallTimeout(BaseException):
    """Raised inside a plain function that ran past the pool's call timeout.

    A BaseException, like asyncio.CancelledError, so that `except Exception`
    in user code does not swallow it.
    """


def _on_interrupt(signum, frame):
    why = _pyproc.take_interrupt()
    if why == _pyproc.INTERRUPT_TIMEOUT:
        raise CallTimeout("the call was interrupted: it ran past the pool's call timeout")
    if why == _pyproc.INTERRUPT_CANCEL:
        raise asyncio.CancelledError("the call was interrupted: it was cancelled")


class Sub:
    """What ``hub.<name>`` holds: the sub's modules and whatever a plugin
    sets on it."""

    def __init__(self, name, pypath):
        self._name = name
        self._pypath = pypath
        self._package = None

    def __getattr__(self, attr):
        # Only reached for missing attributes: a module not loaded yet may
        # still exist in the package.
        pkg = self.__dict__.get("_package")
        if pkg is not None and not attr.startswith("_"):
            try:
                mod = importlib.import_module(f"{self._pypath}.{attr}")
            except ModuleNotFoundError as e:
                if e.name != f"{self._pypath}.{attr}":
                    raise
            else:
                setattr(self, attr, mod)
                return mod
        raise AttributeError(f"sub {self.__dict__.get('_name')!r} has no {attr!r}")

    def __repr__(self):
        return f"<sub {self._name} from {self._pypath}>"


class Hub(types.SimpleNamespace):
    """The object every sub is mounted on, passed to functions whose first
    parameter is named ``hub``."""

    def __getattr__(self, attr):
        raise AttributeError(f"the hub has no sub {attr!r}")


hub = Hub()


def add_sub(name, pypath, init):
    """Import ``pypath`` and mount it on the hub as ``name``."""
    if not name.isidentifier():
        raise ValueError(f"sub name {name!r} is not an identifier")
    sub = Sub(name, pypath)
    setattr(hub, name, sub)  # mounted before any __init__ runs
    try:
        modules = _load(sub, pypath)
        if init:
            for mod in modules:
                if "__init__" in vars(mod):
                    mod.__init__(hub)
    except BaseException:
        delattr(hub, name)
        raise


def _load(sub, pypath):
    try:
        root = importlib.import_module(pypath)
    except Exception as e:
        raise ImportError(f"cannot import sub {sub._name!r} from {pypath!r}: "
                          f"{type(e).__name__}: {e}") from e
    if not hasattr(root, "__path__"):
        # A plain module: its functions are the sub's ("name.func").
        sub._module = root
        return [root]
    sub._package = root
    modules = []
    for info in pkgutil.iter_modules(root.__path__):
        if info.name.startswith("_"):
            continue
        full = f"{pypath}.{info.name}"
        try:
            mod = importlib.import_module(full)
        except Exception as e:
            raise ImportError(f"cannot import module {full!r} of sub {sub._name!r}: "
                              f"{type(e).__name__}: {e}") from e
        setattr(sub, info.name, mod)
        modules.append(mod)
    return modules


def preload(name, pypath):
    """In a pool's template: import a sub's modules, unmounted, so that the
    workers forked from it share them (PYPROC_SUB_PRELOAD)."""
    _set_path()
    _load(Sub(name, pypath), pypath)
    gc.freeze()


class NativeSub:
    """What ``hub.<name>`` holds for a native library: one attribute per
    declared function, each a _pyproc.NativeFunction."""

    def __init__(self, name, library, functions):
        # Dunder names: C reserves them, so no declared function collides.
        self.__name__ = name
        self.__library__ = library
        self.__dict__.update(functions)

    def __getattr__(self, attr):
        # Only reached for missing attributes.
        raise AttributeError(f"native sub {self.__dict__.get('__name__')!r} has no "
                             f"function {attr!r}")

    def __repr__(self):
        return f"<native sub {self.__name__} from {self.__library__}>"


def add_native(name, library, decls):
    """Load a shared library and mount its functions on the hub as ``name``.

    decls is a list of [function, signature] pairs, or None for the
    library's own table (see pyproc_add_native() in pyproc.h).  Nothing is
    mounted unless every function loads; a sub already there stays then.
    """
    if not name.isidentifier():
        raise ValueError(f"sub name {name!r} is not an identifier")
    functions = _pyproc.load_native(library, decls)
    setattr(hub, name, NativeSub(name, library, functions))


def set_attr(ref, value):
    """Store value at a dotted path on the hub: "mods.CONFIG"."""
    *path, last = ref.split(".")
    obj = hub
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def resolve(ref):
    """Turn "sub.module.function" into (callable, wants_hub)."""
    parts = ref.split(".")
    if len(parts) < 2 or not all(parts):
        raise UnknownReference(f"bad reference {ref!r}: expected sub.module.function")
    sub = hub.__dict__.get(parts[0])
    if sub is None:
        raise UnknownReference(f"unknown reference {ref!r}: no sub {parts[0]!r}")
    obj = sub.__dict__.get("_module", sub) if isinstance(sub, Sub) else sub
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = ".".join(parts[:i])
            raise UnknownReference(f"unknown reference {ref!r}: {where!r} has no {part!r}") from None
    if not callable(obj):
        raise TypeError(f"{ref!r} is not callable")
    return obj, _wants_hub(obj)


def _wants_hub(fn):
    code = getattr(fn, "__code__", None)
    if code is not None and not isinstance(fn, types.MethodType):
        return code.co_argcount > 0 and code.co_varnames[0] == "hub"
    try:
        import inspect
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "hub"


def error_info(exc):
    """(errno, type, message, traceback) of an exception, for an ERROR frame."""
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    if isinstance(exc, UnknownReference):
        code = _ENOENT
    elif isinstance(exc, CallTimeout):
        code = _ETIMEDOUT
    elif isinstance(exc, asyncio.CancelledError):
        code = _ECANCELED
    else:
        code = 0
    tb = "".join(traceback.format_exception(t, exc, exc.__traceback__))
    return code, name, str(exc), tb


# ---- coroutines and streams ----

_tasks = {}  # call id -> Task, for calls and streams still running


def _start_task(call_id, coro, finish):
    """Run a coroutine's first step at once, inside a real Task.

    Creating the Task schedules its first step at the end of the ready
    queue; running that handle straight away gives the coroutine a current
    task (so asyncio.timeout(), TaskGroup and friends work) without waiting
    for the loop's next turn.  A coroutine that finishes in that step is
    answered before this returns.
    """
    queued = len(_loop._ready)
    task = _loop.create_task(coro)
    # A task factory may run the first step itself, or schedule more than
    # that step: then the loop runs what was scheduled, in order.
    if _loop.get_task_factory() is None and len(_loop._ready) == queued + 1:
        step = _loop._ready.pop()
        step._run()
    if task.done():
        finish(call_id, task)
    else:
        _tasks[call_id] = task
        task.add_done_callback(lambda t: finish(call_id, t))


def start_coro(call_id, coro):
    # The C side does the same for the usual case (serve.c's start_coro());
    # this one serves awaitables it does not know how to start.
    _start_task(call_id, coro, _finish_call)


def track_task(call_id, task):
    """A call's Task suspended in its first step: answer when it ends."""
    _tasks[call_id] = task
    task.add_done_callback(lambda t: _finish_call(call_id, t))


def _answer(call_id, task, what, send_ok):
    """Answer the host for a call's or stream's Task that has ended."""
    _tasks.pop(call_id, None)
    if task.cancelled():
        _pyproc.send_error(call_id, asyncio.CancelledError(f"the {what} was cancelled"))
    elif task.exception() is not None:
        _pyproc.send_error(call_id, task.exception())
    else:
        send_ok(call_id, task.result())


def _finish_call(call_id, task):
    _answer(call_id, task, "call", _pyproc.send_result)


class _Credit:
    """How many more items a stream may send before the host reads some.

    The host grants STREAM_WINDOW items up front and more (CREDIT frames)
    as its reader takes them, so an unread stream parks its generator
    instead of filling the reply ring that every call of this worker shares.
    """

    def __init__(self):
        self.left = _pyproc.stream_window
        self._waiter = None

    def add(self, n):
        self.left += n
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self):
        while self.left <= 0:
            self._waiter = _loop.create_future()
            await self._waiter


_credits = {}  # call id -> _Credit, for running streams


def start_gen(call_id, obj):
    """Stream the items of a generator, async generator or iterable."""
    credit = _credits[call_id] = _Credit()
    if hasattr(obj, "__aiter__"):
        coro = _pump_async(call_id, obj.__aiter__(), credit)
    else:
        coro = _pump(call_id, iter(obj), credit)
    _start_task(call_id, coro, _finish_stream)


async def _pump(call_id, it, credit):
    try:
        while True:
            await credit.wait()
            sent, finished = _pyproc.pump(call_id, it, credit.left)
            credit.left -= sent
            if finished:
                return
            await asyncio.sleep(0)  # let the worker's other calls run
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


async def _pump_async(call_id, ait, credit):
    try:
        while True:
            await credit.wait()
            try:
                item = await ait.__anext__()
            except StopAsyncIteration:
                return
            _pyproc.send_yield(call_id, item)
            credit.left -= 1
    finally:
        aclose = getattr(ait, "aclose", None)
        if aclose is not None:
            await aclose()


def _finish_stream(call_id, task):
    _credits.pop(call_id, None)
    _answer(call_id, task, "stream", _pyproc.send_end)


def start_map(call_id, pending):
    """Run the awaitables of a map's chunk, [(index, awaitable)...], as
    concurrent tasks; answer each item as it ends, then end the chunk.

    The C side (embed/map.c) has run the chunk's plain items and answered
    them already.  Cancelling the chunk cancels every item still running.
    """
    async def one(index, aw):
        try:
            value = await aw
        except asyncio.CancelledError as e:
            if asyncio.current_task().cancelling():
                raise  # the chunk is being stopped
            _pyproc.send_map_item(call_id, index, False, e)
        except BaseException as e:
            _pyproc.send_map_item(call_id, index, False, e)
        else:
            _pyproc.send_map_item(call_id, index, True, value)

    async def run():
        tasks = [_loop.create_task(one(i, aw)) for i, aw in pending]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    _start_task(call_id, run(), _finish_map)


def _finish_map(call_id, task):
    _answer(call_id, task, "map", _pyproc.send_end)


def credit(call_id, n):
    c = _credits.get(call_id)
    if c is not None:
        c.add(n)


def cancel(call_id, _):
    task = _tasks.get(call_id)
    if task is not None:
        task.cancel()


# ---- callbacks to the host ----

_callbacks = {}  # callback id -> future of the host's answer
_callback_ids = itertools.count(1)


async def ret(payload):
    """Send payload to the host's callback and return what it answers."""
    cid = next(_callback_ids)
    fut = _callbacks[cid] = _loop.create_future()
    try:
        _pyproc.send_callback(cid, payload)
        return await fut
    finally:
        _callbacks.pop(cid, None)


def callback_reply(cid, reply):
    fut = _callbacks.get(cid)
    if fut is None or fut.done():
        return
    ok, value = reply
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(CallbackError(value))


hub.proc = types.SimpleNamespace(worker=types.SimpleNamespace(ret=ret))


# ---- the loop ----

class _Selector(selectors.EpollSelector):
    """Waits on the request ring's futex while user code has no fds of its
    own, and in epoll with the ring's doorbell registered when it has."""

    def select(self, timeout=None):
        if len(self._fd_to_key) <= 2:  # the loop's self-pipe and our doorbell
            if _pyproc.select(timeout, _loop._ready, _loop._scheduled, self._fd_to_key):
                return super().select(0)  # a signal: let asyncio see its byte
            return []
        if _pyproc.serve() or _loop._ready or timeout == 0:
            return super().select(0)
        if not _pyproc.spin_then_arm():
            return super().select(0)
        try:
            return super().select(timeout)
        finally:
            _pyproc.disarm()
            _pyproc.serve()


class _Loop(asyncio.SelectorEventLoop):
    def set_task_factory(self, factory):
        super().set_task_factory(factory)
        # The C side starts coroutines itself only under the default one.
        _pyproc.set_fast_tasks(factory is None)

    def _write_to_self(self):
        # call_soon_threadsafe() and friends wake the ring wait rather than
        # the self-pipe, which the futex wait does not watch.
        _pyproc.wake()


def _drain_doorbell():
    try:
        os.read(_pyproc.doorbell, 8)
    except BlockingIOError:
        pass


_loop = None
_stopping = False


def shutdown():
    global _stopping
    _stopping = True
    _loop.stop()


def _serve():
    """Run the loop until the host asks us to stop.

    SystemExit or KeyboardInterrupt raised in a task's later step comes out
    of run_forever() after the task has stored it: that call answers with
    it, as it would for any exception, and the worker serves on.
    """
    while not _stopping:
        try:
            _loop.run_forever()
            return
        except (SystemExit, KeyboardInterrupt):
            continue  # unless the host asked us to stop meanwhile


def warm():
    """In a pool's template, before it forks: make and close an event loop
    as each worker does first, so that what that imports and warms up is
    done once and shared by the workers; then keep the collector off what
    is there (gc.freeze()), which the workers would otherwise copy page by
    page as it marks it."""
    _Loop(_Selector()).close()
    gc.freeze()


_path_set = False


def _set_path():
    """The pool's python_path in front of sys.path, once (a worker forked
    from a template that preloaded code has it already)."""
    global _path_set
    if not _path_set:
        for entry in reversed([p for p in _pyproc.python_path.split(":") if p]):
            sys.path.insert(0, entry)
        _path_set = True


def main():
    global _loop
    _set_path()
    _loop = _Loop(_Selector())
    asyncio.set_event_loop(_loop)
    _loop.add_reader(_pyproc.doorbell, _drain_doorbell)
    signal.signal(_pyproc.INTERRUPT_SIGNAL, _on_interrupt)
    # A child that user code forks must neither touch our rings nor
    # outlive us (see embed/main.c).
    os.register_at_fork(after_in_child=_pyproc.forked_child)
    global create_task, ready, ready_pop
    create_task = _loop.create_task
    ready = _loop._ready
    ready_pop = _loop._ready.pop
    _pyproc.set_hub(hub, sys.modules[__name__])
    _pyproc.ready()
    try:
        _serve()
    finally:
        for task in list(_tasks.values()):
            task.cancel()
