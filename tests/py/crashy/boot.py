import os


def __init__(hub):
    marker = os.environ.get("PYPROC_TEST_CRASH_MARKER", "")
    if marker and os.path.exists(marker):
        os._exit(7)


def ok():
    return True
