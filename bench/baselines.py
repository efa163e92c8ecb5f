#!/usr/bin/python3
"""What a Python user would pick instead of pyproc, measured for pyproc-bench.

concurrent.futures.ProcessPoolExecutor and multiprocessing.Pool, each calling
the same functions as pyproc (bench/py/benchmods/calls.py).  Prints one JSON
object per row on stdout, the samples in the row's unit (see external.c);
run by pyproc-bench with Debian's /usr/bin/python3:

    /usr/bin/python3 bench/baselines.py --quick --py-path bench/py \
        [--only KEY,...]

Pools use the platform's default start method (fork on Linux), except the
start-up row, which uses spawn as the issue asks: fresh interpreters, as
pyproc's workers are.
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import sys
import time

# (warm-up calls, most samples, most seconds) of a latency row, and the
# sizes of the throughput runs, by level.
LEVELS = {
    "smoke": dict(lat=(5, 20, 0.2), submits=(200, 1), mapped=1000,
                  imap1=200, reps=1, echo=(1, 2, 0.5), starts=1,
                  mixed=0.3),
    "quick": dict(lat=(300, 5000, 0.8), submits=(20000, 1), mapped=100000,
                  imap1=5000, reps=1, echo=(2, 10, 1.0), starts=2,
                  mixed=6.0),
    # 100k submits take about 13 s here: one run of them.  The other rates
    # are the median of 9 runs, as pyproc's throughput rows are: a pool of
    # 2 processes on 2 CPUs moves between modes (imap_unordered with
    # chunksize=256 ran from 3.7 to 6.3 M calls/s in 15 runs of one pool),
    # and 3 runs may all land in one.
    "full": dict(lat=(2000, 30000, 3.0), submits=(100000, 1), mapped=400000,
                 imap1=20000, reps=9, echo=(3, 40, 3.0), starts=5,
                 mixed=20.0),
}


def emit(key, label, unit, kind, values, p99=False, samples=False, note=""):
    print(json.dumps(dict(key=key, label=label, unit=unit, kind=kind,
                          p99=p99, samples=samples, note=note,
                          values=[round(v, 4) for v in values])), flush=True)


def latency(call, budget):
    """Round trips of call() in microseconds."""
    warmup, most, seconds = budget
    for _ in range(warmup):
        call()
    out = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while len(out) < most and (not out or clock() < deadline):
        t0 = clock()
        call()
        out.append((clock() - t0) / 1e3)
    return out


def rate(run, n, reps):
    """Calls per second of run(n), once per repetition."""
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run(n)
        out.append(n / (time.perf_counter() - t0))
    return out


def ppe_rows(lv, only):
    from benchmods.calls import echo, noop, noop_arg

    if want(only, "ppe-lat"):
        with cf.ProcessPoolExecutor(max_workers=1) as ex:
            emit("ppe-lat", "ProcessPoolExecutor submit().result()", "us",
                 "cost", latency(lambda: ex.submit(noop).result(), lv["lat"]),
                 p99=True, samples=True, note="max_workers=1, no-op")

    def submits(n):
        futures = [ex.submit(noop) for _ in range(n)]
        for f in futures:
            f.result()

    def mapped(n):
        for _ in ex.map(noop_arg, range(n), chunksize=256):
            pass

    with cf.ProcessPoolExecutor(max_workers=2) as ex:
        ex.submit(noop).result()
        if want(only, "ppe-100k"):
            n, reps = lv["submits"]
            emit("ppe-100k", f"ProcessPoolExecutor {n} submits in flight",
                 "calls/s", "rate", rate(submits, n, reps),
                 note="max_workers=2; all submitted, then every result")
        if want(only, "ppe-map256"):
            emit("ppe-map256", "ProcessPoolExecutor map(chunksize=256)",
                 "calls/s", "rate", rate(mapped, lv["mapped"], lv["reps"]),
                 note="max_workers=2")

    if want(only, "ppe-echo-16MiB"):
        data = bytes(range(256)) * (1 << 16)
        with cf.ProcessPoolExecutor(max_workers=1) as ex:
            rtt = latency(lambda: ex.submit(echo, data).result(), lv["echo"])
        emit("ppe-echo-16MiB", "ProcessPoolExecutor echo bytes of 16MiB",
             "GB/s", "rate", [len(data) / (us * 1e3) for us in rtt],
             note="payload bytes / round trip; max_workers=1")

    if want(only, "ppe-start"):
        spawn = multiprocessing.get_context("spawn")
        times = []
        for _ in range(lv["starts"]):
            t0 = time.perf_counter()
            with cf.ProcessPoolExecutor(max_workers=4, mp_context=spawn) as ex:
                ex.submit(noop).result()
                times.append((time.perf_counter() - t0) * 1e3)
        emit("ppe-start", "ProcessPoolExecutor start-up to first answer",
             "ms", "cost", times, p99=True,
             note="spawn, max_workers=4 (the first call starts one process)")


def ppe_mixed(lv, only):
    """The mixed load of bench/mixed.c: 90% calls of 1 ms, 10% of 50 ms,
    4 workers, Poisson arrivals at 70% of capacity, open loop; latency
    from the scheduled arrival to the future's done callback."""
    import math
    import random
    import threading
    from benchmods.calls import work

    # Asked for by name only: pyproc-bench's step "mixed" runs it beside
    # its own rows.
    if not only or "ppe-mixed" not in only:
        return
    short, long_, share, load, workers = 1.0, 50.0, 0.10, 0.70, 4
    mean = (1 - share) * short + share * long_
    gap = mean / (workers * load) / 1e3
    n = int(lv["mixed"] / gap)
    rng = random.Random(1)
    clock = time.perf_counter
    lat = [None] * n
    left = threading.Semaphore(0)
    with cf.ProcessPoolExecutor(max_workers=workers) as ex:
        for f in [ex.submit(work, 0.001) for _ in range(4 * workers)]:
            f.result()
        at = clock() + 0.01
        for i in range(n):
            at += -math.log(1 - rng.random()) * gap
            secs = (long_ if rng.random() < share else short) / 1e3
            wait = at - clock()
            if wait > 0:
                time.sleep(wait)

            def done(f, i=i, at=at):
                lat[i] = (clock() - at) * 1e3
                left.release()
            ex.submit(work, secs).add_done_callback(done)
        for _ in range(n):
            left.acquire()
    emit("ppe-mixed", "ProcessPoolExecutor, the same mixed load", "ms",
         "cost", lat, p99=True,
         note="max_workers=4, one shared queue; bench/mixed.c's load")


def mp_rows(lv, only):
    from benchmods.calls import noop, noop_arg

    if want(only, "mp-apply"):
        with multiprocessing.Pool(1) as pool:
            emit("mp-apply", "multiprocessing.Pool apply()", "us", "cost",
                 latency(lambda: pool.apply(noop), lv["lat"]),
                 p99=True, samples=True, note="1 process, no-op")

    def imap(chunksize, ordered=False):
        def run(n):
            it = pool.imap if ordered else pool.imap_unordered
            for _ in it(noop_arg, range(n), chunksize):
                pass
        return run

    with multiprocessing.Pool(2) as pool:
        pool.apply(noop)
        if want(only, "mp-imap1"):
            emit("mp-imap1", "multiprocessing.Pool imap_unordered chunksize=1",
                 "calls/s", "rate", rate(imap(1), lv["imap1"], lv["reps"]),
                 note="2 processes")
        if want(only, "mp-imap256"):
            emit("mp-imap256",
                 "multiprocessing.Pool imap_unordered chunksize=256",
                 "calls/s", "rate", rate(imap(256), lv["mapped"], lv["reps"]),
                 note="2 processes")
        if want(only, "mp-imap256o"):
            emit("mp-imap256o", "multiprocessing.Pool imap chunksize=256",
                 "calls/s", "rate",
                 rate(imap(256, ordered=True), lv["mapped"], lv["reps"]),
                 note="2 processes; results in input order")


def want(only, key):
    return not only or key in only


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    level = ap.add_mutually_exclusive_group()
    for name in LEVELS:
        level.add_argument("--" + name, dest="level", action="store_const",
                           const=name)
    ap.add_argument("--py-path", required=True,
                    help="the folder that holds the benchmods package")
    ap.add_argument("--only", help="comma-separated row keys")
    args = ap.parse_args()
    sys.path.insert(0, args.py_path)
    lv = LEVELS[args.level or "full"]
    only = set(args.only.split(",")) if args.only else None
    ppe_rows(lv, only)
    ppe_mixed(lv, only)
    mp_rows(lv, only)


if __name__ == "__main__":
    main()
