"""The baselines of the MPI rows: mpi4py.futures' MPIPoolExecutor on the
same ranks and transport as the MPI pool (bench/mpi.sh runs it under
mpirun -n 3 python3 -m mpi4py.futures).  Prints one "key value" line per
figure, each the median of its rounds.  The task is abs(), a builtin,
which every worker resolves without importing this file."""
import statistics
import time

from mpi4py.futures import MPIPoolExecutor


def rtt_us(pool, rounds=15, calls=200):
    """One submit().result() at a time."""
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(calls):
            pool.submit(abs, i).result()
        per_round.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(per_round)


def in_flight_per_s(pool, rounds=3, calls=20000):
    """calls submitted at once, then every result."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        futures = [pool.submit(abs, i) for i in range(calls)]
        for f in futures:
            f.result()
        rates.append(calls / (time.perf_counter() - start))
    return statistics.median(rates)


def map_per_s(pool, rounds=3, items=200000):
    """map() in chunks of 256."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in pool.map(abs, range(items), chunksize=256):
            pass
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


if __name__ == "__main__":
    with MPIPoolExecutor() as pool:
        pool.submit(abs, 0).result()  # every worker up
        print("mpi4py-submit-rtt %.1f" % rtt_us(pool))
        print("mpi4py-inflight-per-s %.0f" % in_flight_per_s(pool))
        print("mpi4py-map256-per-s %.0f" % map_per_s(pool))
