/*
 * Tail latency of a mixed load: 90% calls of 1 ms and 10% of 50 ms
 * (plain functions, which hold their worker), on 4 workers, offered at
 * 70% of their capacity with open-loop (Poisson) arrivals, so a slow
 * answer never slows the offer.  The same arrivals go to a pool that
 * sends each call to its least loaded worker (the default) and to one
 * that goes blindly round robin, and ProcessPoolExecutor (one shared
 * queue) takes the same load in bench/baselines.py.  A call's latency
 * runs from its scheduled arrival to its completion callback.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/bench.h"

/* Blind round robin for this comparison: an internal knob of the static
 * library (host/pool.c), not part of the API. */
void pyproc__pool_dispatch_blind(pyproc_pool *p, bool on);

#define WORKERS 4
#define SHORT_MS 1.0
#define LONG_MS 50.0
#define LONG_SHARE 0.10
#define LOAD 0.70

struct mixed {
    pyproc_pool *pool;
    int64_t *arrival; /* scheduled, ns */
    double *latency;  /* ms, once done */
    int n;
    atomic_int done, failed;
};

struct mixed_call {
    struct mixed *m;
    int i;
};

static void mixed_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    struct mixed_call *c = data;
    (void)p;
    c->m->latency[c->i] = (double)(bench_now_ns() - c->m->arrival[c->i]) / 1e6;
    if (result < 0)
        atomic_fetch_add(&c->m->failed, 1);
    pyproc_msg_free(ret);
    atomic_fetch_add(&c->m->done, 1);
}

static void *mixed_dispatch(void *arg)
{
    struct mixed *m = arg;
    struct pollfd pfd = {.fd = pyproc_pool_fd(m->pool), .events = POLLIN};

    while (atomic_load(&m->done) < m->n) {
        poll(&pfd, 1, 10);
        pyproc_dispatch(m->pool);
    }
    return NULL;
}

/* xorshift64*, seeded the same for both pools: the same arrivals. */
static double uniform(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Offer n calls to p as described above; the latency of each in *out. */
static int mixed_run(pyproc_pool *p, int n, struct series *out)
{
    double mean_ms = (1 - LONG_SHARE) * SHORT_MS + LONG_SHARE * LONG_MS;
    double gap_ms = mean_ms / (WORKERS * LOAD);
    struct mixed m = {.pool = p, .n = n};
    struct mixed_call *calls = calloc((size_t)n, sizeof *calls);
    double *secs = calloc((size_t)n, sizeof *secs);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    pthread_t t;
    int err = 0;

    m.arrival = calloc((size_t)n, sizeof *m.arrival);
    m.latency = calloc((size_t)n, sizeof *m.latency);
    if (!calls || !secs || !m.arrival || !m.latency) {
        err = -ENOMEM;
        goto out;
    }
    int64_t at = bench_now_ns() + 10000000;
    for (int i = 0; i < n; i++) {
        at += (int64_t)(-log(1 - uniform(&seed)) * gap_ms * 1e6);
        m.arrival[i] = at;
        secs[i] = (uniform(&seed) < LONG_SHARE ? LONG_MS : SHORT_MS) / 1e3;
        calls[i] = (struct mixed_call){&m, i};
    }
    if (pthread_create(&t, NULL, mixed_dispatch, &m) != 0) {
        err = -EAGAIN;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        int64_t wait = m.arrival[i] - bench_now_ns();
        if (wait > 0)
            bench_sleep_ns(wait);
        int rc = pyproc_func_async(p, "bench.calls.work", mixed_done, &calls[i], "d", secs[i]);
        if (rc < 0) {
            err = err ? err : rc;
            atomic_fetch_add(&m.done, 1);
        }
    }
    pthread_join(t, NULL);
    if (err == 0 && atomic_load(&m.failed))
        err = -EIO;
    for (int i = 0; err == 0 && i < n; i++)
        err = series_push(out, m.latency[i]);
out:
    free(calls);
    free(secs);
    free(m.arrival);
    free(m.latency);
    return err;
}

/* Calls of one run, by level: seconds of load times the offered rate. */
static int mixed_calls(void)
{
    static const double seconds[] = {0.3, 6.0, 20.0};
    double mean_ms = (1 - LONG_SHARE) * SHORT_MS + LONG_SHARE * LONG_MS;

    return (int)(seconds[bench.level] * 1000 / (mean_ms / (WORKERS * LOAD)));
}

static int mixed_row(bool blind, const char *key, const char *label)
{
    struct series s = {0};
    pyproc_pool *p = NULL;
    int err = bench_pool(&p, WORKERS);

    if (err < 0)
        return err;
    pyproc__pool_dispatch_blind(p, blind);
    err = mixed_run(p, mixed_calls(), &s);
    pyproc_pool_free(p);
    if (err < 0) {
        series_free(&s);
        return bench_fail(label, err, NULL);
    }
    return bench_row_add(key, label, "ms", ROW_COST, ROW_P99, &s,
                         "4 workers, 90% 1 ms + 10% 50 ms, Poisson arrivals at 70%");
}

int bench_mixed(void)
{
    int err = mixed_row(false, "mixed-ll", "mixed load, least loaded (default)");

    if (err == 0)
        err = mixed_row(true, "mixed-rr", "mixed load, blind round robin");
    if (err == 0)
        err = bench_baseline_rows("ppe-mixed");
    return err;
}
