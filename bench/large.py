#!/usr/bin/python3
"""Large data to a worker the Python way, for pyproc-bench's shared-buffer
rows: ProcessPoolExecutor calling numpy.sum over a block of
multiprocessing.shared_memory, and over the bytes pickled whole.  Prints one
JSON object per row, as baselines.py does.

    /usr/bin/python3 bench/large.py --quick --py-path bench/py
"""

import argparse
import concurrent.futures as cf
import json
import sys
import time
from multiprocessing import shared_memory

LEVELS = {
    "smoke": dict(sizes=(1,), samples=2, seconds=0.5),
    "quick": dict(sizes=(1, 64, 256), samples=10, seconds=1.5),
    "full": dict(sizes=(1, 64, 256), samples=30, seconds=5.0),
}


def emit(key, label, values, note):
    print(json.dumps(dict(key=key, label=label, unit="ms", kind="cost", p99=False,
                          samples=False, note=note,
                          values=[round(v, 4) for v in values])), flush=True)


def timed(call, samples, seconds):
    call()  # warm: the worker imports numpy, attaches the block
    out, deadline = [], time.perf_counter() + seconds
    while len(out) < samples and (not out or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    level = ap.add_mutually_exclusive_group()
    for name in LEVELS:
        level.add_argument("--" + name, dest="level", action="store_const", const=name)
    ap.add_argument("--py-path", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.py_path)
    from benchmods.large import shm_total, total

    lv = LEVELS[args.level or "full"]
    with cf.ProcessPoolExecutor(1) as ex:
        for mib in lv["sizes"]:
            size = mib << 20
            shm = shared_memory.SharedMemory(create=True, size=size)
            try:
                shm.buf[:size] = b"\x07" * size
                emit(f"ppe-shm-sum-{mib}MiB",
                     f"PPE numpy.sum of {mib} MiB in shared_memory", timed(
                         lambda: ex.submit(shm_total, shm.name, size).result(),
                         lv["samples"], lv["seconds"]),
                     "ProcessPoolExecutor(1); the block attached once per worker")
                data = bytes(shm.buf[:size])
                emit(f"ppe-bytes-sum-{mib}MiB", f"PPE numpy.sum of {mib} MiB of bytes",
                     timed(lambda: ex.submit(total, data).result(), lv["samples"],
                           lv["seconds"]),
                     "ProcessPoolExecutor(1); the bytes pickled with the call")
            finally:
                shm.close()
                shm.unlink()


if __name__ == "__main__":
    main()
