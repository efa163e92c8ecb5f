"""Starts a thread as it is imported: not fit for PYPROC_SUB_PRELOAD,
which tests/test_template.c checks the pool copes with."""

import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def ping():
    return 1
