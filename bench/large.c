/*
 * Large data: numpy.sum over 1, 64 and 256 MiB handed to a worker as a
 * shared buffer ('B') and as bytes ('y', copied through the ring); a no-op
 * taking a 4 KiB and a 256 MiB buffer (passing should cost the same); and
 * the sum's own time in the worker over the shared buffer and over the
 * worker's private memory.  The Python baselines of the same rows come
 * from bench/large.py.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

struct large_arg {
    pyproc_pool *pool;
    const char *ref;
    pyproc_buf *buf; /* passed as 'B' when shared, else its bytes as 'y' */
    bool shared;
    size_t len;
    double worker_s; /* what the last call answered, for the sum_time rows */
};

static int large_once(void *arg)
{
    struct large_arg *a = arg;
    pyproc_msg *m = NULL;
    int err = a->shared ? pyproc_func(a->pool, a->ref, &m, "B", a->buf, (size_t)0, a->len)
                        : pyproc_func(a->pool, a->ref, &m, "y", pyproc_buf_data(a->buf), a->len);

    if (err < 0)
        bench_fail(a->ref, err, m);
    else if (pyproc_msg_type(m) == PYPROC_FLOAT)
        pyproc_msg_read(m, "d", &a->worker_s);
    pyproc_msg_free(m);
    return err;
}

/* Round trips in ms. */
static int large_row(struct large_arg *a, const char *key, const char *label, const char *note)
{
    struct series s = {0}, ms = {0};
    int err = bench_latency(&s, bench_budget(BUDGET_BULK), 0, large_once, a);

    for (size_t i = 0; !err && i < s.n; i++)
        err = series_push(&ms, s.v[i] / 1e3);
    series_free(&s);
    if (err < 0) {
        series_free(&ms);
        return err;
    }
    return bench_row_add(key, label, "ms", ROW_COST, 0, &ms, note);
}

/* The sum's own time in the worker, as it reports it, in ms. */
static int compute_row(pyproc_pool *p, pyproc_buf *buf, size_t len, bool shared)
{
    struct series s = {0};
    int err = 0;

    for (int i = 0; i < 12 && !err; i++) {
        pyproc_msg *m = NULL;
        double t = 0;
        err = shared ? pyproc_func(p, "bench.large.sum_time", &m, "B", buf, (size_t)0, len)
                     : pyproc_func(p, "bench.large.private_sum_time", &m, "u", (uint64_t)len);
        if (err == 0 && pyproc_msg_read(m, "d", &t) == 0 && i >= 2) /* two warm-ups */
            err = series_push(&s, t * 1e3);
        if (err < 0)
            bench_fail("sum_time", err, m);
        pyproc_msg_free(m);
    }
    if (err < 0) {
        series_free(&s);
        return err;
    }
    return shared ? bench_row_add("sum-256MiB-in-buf", "numpy.sum itself, over a shared buffer",
                                  "ms", ROW_COST, 0, &s, "timed inside the worker")
                  : bench_row_add("sum-256MiB-in-private",
                                  "numpy.sum itself, over the worker's own memory", "ms", ROW_COST,
                                  0, &s, "timed inside the worker");
}

static int size_rows(pyproc_pool *p, pyproc_buf *buf, size_t mib)
{
    struct large_arg shared = {p, "bench.large.total", buf, true, mib << 20, 0};
    struct large_arg copied = {p, "bench.large.total", buf, false, mib << 20, 0};
    char key[32], label[64];
    int err;

    snprintf(key, sizeof key, "sum-%zuMiB-buf", mib);
    snprintf(label, sizeof label, "numpy.sum of %zu MiB, shared buffer ('B')", mib);
    err = large_row(&shared, key, label, "round trip; pool of 1 worker");
    if (err < 0)
        return err;
    snprintf(key, sizeof key, "sum-%zuMiB-copy", mib);
    snprintf(label, sizeof label, "numpy.sum of %zu MiB, bytes ('y')", mib);
    return large_row(&copied, key, label, "round trip; the bytes copied through the ring");
}

int bench_large(void)
{
    static const size_t sizes[] = {1, 64, 256};
    size_t n = bench.level == BENCH_SMOKE ? 1 : 3;
    pyproc_buf *big = NULL, *small = NULL;
    pyproc_pool *p = NULL;
    int err = bench_pool(&p, 1);

    if (!err)
        err = pyproc_buf_new(p, 256u << 20, &big);
    if (!err)
        err = pyproc_buf_new(p, 4096, &small);
    if (!err)
        memset(pyproc_buf_data(big), 7, 256u << 20);
    for (size_t i = 0; !err && i < n; i++)
        err = size_rows(p, big, sizes[i]);
    if (!err) {
        struct large_arg a4k = {p, "bench.large.noop", small, true, 4096, 0};
        struct large_arg a256 = {p, "bench.large.noop", big, true, 256u << 20, 0};
        err = large_row(&a4k, "noop-4KiB-buf", "no-op taking a 4 KiB shared buffer",
                        "round trip; pool of 1 worker");
        if (!err)
            err = large_row(&a256, "noop-256MiB-buf", "no-op taking a 256 MiB shared buffer",
                            "round trip; pool of 1 worker");
    }
    if (!err && n == 3)
        err = compute_row(p, big, 256u << 20, true);
    if (!err && n == 3)
        err = compute_row(p, big, 256u << 20, false);
    pyproc_buf_free(small);
    pyproc_buf_free(big);
    pyproc_pool_free(p);
    return err < 0 ? bench_fail("large data", err, NULL) : 0;
}
