/*
 * Maps: one function over many inputs (pyproc_map), against
 * multiprocessing.Pool's imap_unordered() and imap() with chunksize=256
 * from the same run (bench/baselines.py).
 */
#include <errno.h>
#include <stdio.h>

#include "bench.h"

/*
 * Push n items of ref's one int argument through a map on p, reading as
 * the window fills, and read the rest; pushes items/s.
 */
static int map_run(pyproc_pool *p, const char *ref, unsigned flags, int n, struct series *s)
{
    int64_t t0 = bench_now_ns();
    pyproc_call *map = NULL;
    pyproc_msg *item = NULL;
    int got = 0, pushed = 0, err = pyproc_map(p, ref, flags, &map);

    while (!err && pushed < n) {
        if ((err = pyproc_push(map, "i", pushed)) == 0) {
            pushed++;
        } else if (err == -EAGAIN && (err = pyproc_next(map, &item)) == 1) {
            pyproc_msg_free(item);
            item = NULL;
            got++;
            err = 0;
        }
    }
    if (!err)
        err = pyproc_push_end(map);
    while (!err && (err = pyproc_next(map, &item)) == 1) {
        pyproc_msg_free(item);
        item = NULL;
        got++;
        err = 0;
    }
    if (err < 0)
        bench_fail("pyproc_map", err, item);
    else if (got != n)
        err = bench_fail("pyproc_map", -EBADMSG, NULL);
    else
        err = series_push(s, n / ((double)(bench_now_ns() - t0) / 1e9));
    pyproc_msg_free(item);
    pyproc_call_free(map);
    return err;
}

/* Repetitions of map_run() after a warm-up run of a tenth of n. */
static int map_series(pyproc_pool *p, const char *ref, unsigned flags, int n, struct series *s)
{
    const struct bench_budget *b = bench_budget(BUDGET_RATE);
    struct series warm = {0};
    int err = 0;

    for (int i = 0; i < b->warmup && !err; i++)
        err = map_run(p, ref, flags, n / 10 ? n / 10 : 1, &warm);
    for (size_t i = 0; i < b->max_samples && !err; i++)
        err = map_run(p, ref, flags, n, s);
    series_free(&warm);
    return err;
}

static int noop_row(pyproc_pool *p, const char *key, unsigned flags, int n)
{
    struct series s = {0};
    char label[80];
    int err = map_series(p, "bench.calls.noop_arg", flags, n, &s);

    if (err < 0) {
        series_free(&s);
        return err;
    }
    snprintf(label, sizeof label, "map of a no-op over %d inputs, %s", n,
             flags & PYPROC_MAP_UNORDERED ? "unordered" : "ordered");
    return bench_row_add(key, label, "items/s", ROW_RATE, 0, &s,
                         "pyproc_map + pyproc_push + pyproc_next; pool of 2 workers");
}

/*
 * Items that sleep 1 ms: two workers could do 2000 a second if a sleep
 * took exactly that.  What one takes in a worker, with nothing else
 * around it, is the ceiling; the note says it.
 */
static int slow_row(pyproc_pool *p, int n)
{
    struct series s = {0};
    char label[80], note[160];
    pyproc_msg *m = NULL;
    double sleep_s = 0;
    int err = map_series(p, "bench.calls.sleep_1ms", 0, n, &s);

    if (!err && (err = pyproc_func(p, "bench.calls.sleep_1ms_cost", &m, "i", 200)) == 0)
        err = pyproc_msg_read(m, "d", &sleep_s);
    if (err < 0) {
        bench_fail("bench.calls.sleep_1ms_cost", err, m);
        pyproc_msg_free(m);
        series_free(&s);
        return err;
    }
    pyproc_msg_free(m);
    for (size_t i = 0; i < s.n; i++)
        s.v[i] = s.v[i] / 2000.0 * 100.0;
    snprintf(label, sizeof label, "map of %d items of 1 ms each", n);
    snprintf(note, sizeof note,
             "%% of the ideal 2000 items/s; median %.0f items/s; 2 workers; a sleep(0.001) "
             "takes %.3f ms there: %.1f%% at most",
             series_median(&s) * 20.0, sleep_s * 1e3, 100.0 / (sleep_s * 1e3));
    return bench_row_add("map-1ms", label, "% ideal", ROW_RATE, 0, &s, note);
}

int bench_map(void)
{
    static const int noops[] = {10000, 200000, 1000000};
    static const int slows[] = {40, 400, 2000};
    pyproc_pool *p = NULL;
    int err = bench_pool(&p, 2);

    if (!err)
        err = noop_row(p, "map-unord", PYPROC_MAP_UNORDERED, noops[bench.level]);
    if (!err)
        err = noop_row(p, "map-ord", 0, noops[bench.level]);
    if (!err)
        err = slow_row(p, slows[bench.level]);
    pyproc_pool_free(p);
    return err;
}
