/*
 * CPU-bound Python: the same pure-Python loop (bench/py/benchmods/cpu.py)
 * in a worker, timed inside the worker and as a round trip, and under
 * /usr/bin/python3 (baselines.py's row py-cpu) in the same step, so the
 * ratio says what running in a worker costs Python code.
 */
#include <errno.h>
#include <stdio.h>

#include "bench/bench.h"

/* Calls of spin() after one untimed call, by level. */
static const size_t samples[] = {2, 10, 30};

static int cpu_rows(pyproc_pool *p)
{
    struct series inside = {0}, rtt = {0};
    int err = 0;

    for (size_t i = 0; !err && i <= samples[bench.level]; i++) {
        pyproc_msg *m = NULL;
        double secs = 0;
        int64_t t0 = bench_now_ns();
        err = pyproc_func(p, "bench.cpu.spin", &m, NULL);
        int64_t t1 = bench_now_ns();
        if (!err)
            err = pyproc_msg_read(m, "d", &secs);
        if (err < 0)
            bench_fail("bench.cpu.spin", err, m);
        else if (i > 0 && (series_push(&inside, secs * 1e3) < 0 ||
                           series_push(&rtt, (double)(t1 - t0) / 1e6) < 0))
            err = -ENOMEM;
        pyproc_msg_free(m);
    }
    if (!err)
        err = bench_row_add("cpu", "pure-Python loop in a worker, timed inside", "ms", ROW_COST,
                            ROW_P99, &inside,
                            "time.perf_counter() around the loop; pool of 1 worker");
    if (!err)
        err = bench_row_add("cpu-rtt", "pure-Python loop in a worker, round trip", "ms", ROW_COST,
                            ROW_P99, &rtt, "pyproc_func() of the same loop");
    series_free(&inside);
    series_free(&rtt);
    return err;
}

int bench_cpu(void)
{
    pyproc_pool *p = NULL;
    int err = bench_pool(&p, 1);

    if (err < 0)
        return err;
    err = cpu_rows(p);
    pyproc_pool_free(p);
    if (err < 0)
        return err;
    return bench_baseline_rows("py-cpu");
}
