"""What Python code running in a pyproc worker can use: ``import pyproc``.

The module exists only inside ``pyproc-worker`` (it is compiled into the
worker); this stub lets type checkers and editors know it.  Install it
where they look (``make install`` puts it in
``lib/python3/dist-packages/pyproc-stubs/``) or add its folder to
``MYPYPATH``.
"""

from types import SimpleNamespace
from typing import Any

#: This worker's index in its pool, 0 to workers - 1.  A respawned worker
#: keeps the index of the one it replaces.
index: int

#: The name the host gave the pool (``pyproc_pool_new``'s ``name``).
pool: str

class Hub(SimpleNamespace):
    """The hub: every sub is an attribute (``hub.<name>``), and subs keep
    their state on it.  A function whose first parameter is named ``hub``
    gets it."""

    def __getattr__(self, name: str) -> Any: ...

#: This worker's hub.
hub: Hub

class SharedMapping:
    """A shared buffer mapped into this worker.  It exports its memory with
    the buffer protocol: ``memoryview(b)``, ``numpy.frombuffer(b, dtype)``."""

def buffer(nbytes: int) -> SharedMapping:
    """A new zero-filled shared buffer of ``nbytes``.  Returned to the host,
    it, a memoryview of it, or any object whose memory lies inside it (a
    numpy array over it) travels as a reference, not as bytes; the host
    reads it with format code ``B``.  A ``B`` argument arrives as a
    writable ``memoryview`` over such a mapping."""

async def ret(payload: Any) -> Any:
    """Send ``payload`` to the host's callback (``pyproc_opts.callback``)
    and return its answer.  Raises CallbackError when the host has no
    callback or its callback failed.  ``payload`` and the answer are
    msgpack values: None, bool, int, float, str, bytes, and lists, tuples
    and dicts of them."""

class UnknownReference(LookupError):
    """A reference names no sub, module or function of this worker (the host
    sees -ENOENT)."""

class CallbackError(RuntimeError):
    """The host's callback failed, or the pool has none."""

class CallTimeout(BaseException):
    """Raised inside a plain function that ran past the pool's call timeout.

    A BaseException, like asyncio.CancelledError, so that ``except
    Exception`` does not swallow it; let it propagate."""
