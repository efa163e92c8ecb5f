"""A module slow to import, so that a worker replaying it takes a while to
come up (tests/test_lifecycle.c)."""
import time

time.sleep(0.1)


def ok():
    return True
