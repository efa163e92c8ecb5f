"""What the tests of pools over MPI ask a worker (tests/mpi_e2e.c)."""

import os


def agent_pid():
    # The worker's parent is the pyproc-agent that started it.
    return os.getppid()


def items(n):
    # As fast as a generator goes: the stream's own cost is measured.
    yield from range(n)


def env(name):
    return os.environ.get(name, "")
