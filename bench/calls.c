/*
 * Calls through pyproc: round trips one at a time, pipelined throughput
 * from several host threads, generator streams, and bulk echoes.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

/* One call, its arguments at most one bytes value. */
struct call_arg {
    pyproc_pool *pool;
    const char *ref;
    const void *data;
    size_t len;
};

static int call_once(void *arg)
{
    struct call_arg *c = arg;
    pyproc_msg *m = NULL;
    int err = c->data ? pyproc_func(c->pool, c->ref, &m, "y", c->data, c->len)
                      : pyproc_func(c->pool, c->ref, &m, NULL);

    if (err < 0)
        bench_fail(c->ref, err, m);
    pyproc_msg_free(m);
    return err;
}

/* Time `ref` with no arguments on a fresh pool of one worker. */
static int latency_row(const char *key, const char *label, const char *ref,
                       enum bench_budget_kind kind, int64_t pause_ns, unsigned flags)
{
    struct series s = {0};
    struct call_arg c = {.ref = ref};
    int err = bench_pool(&c.pool, 1);

    if (err < 0)
        return err;
    err = bench_latency(&s, bench_budget(kind), pause_ns, call_once, &c);
    pyproc_pool_free(c.pool);
    if (err < 0) {
        series_free(&s);
        return err;
    }
    return bench_row_add(key, label, "us", ROW_COST, ROW_P99 | flags, &s, "pool of 1 worker");
}

/*
 * Back to back on a pool in its steady state; and first, on that pool while
 * it was new, the first calls it answered.
 */
int bench_sync(void)
{
    size_t n = bench.level == BENCH_SMOKE ? 20 : 1000;
    const struct bench_budget first = {.max_samples = n, .max_seconds = 60};
    struct call_arg c = {.ref = "bench.calls.noop"};
    struct series cold = {0}, s = {0};
    int err = bench_pool_new(&c.pool, 1);

    if (err < 0)
        return err;
    err = bench_latency(&cold, &first, 0, call_once, &c);
    if (!err)
        err = bench_pool_warm(c.pool, 1);
    if (!err)
        err = bench_latency(&s, bench_budget(BUDGET_FAST), 0, call_once, &c);
    pyproc_pool_free(c.pool);
    if (err < 0) {
        series_free(&cold);
        series_free(&s);
        return err;
    }
    bench_row_add("sync", "sync no-op, back to back", "us", ROW_COST, ROW_P99 | ROW_SAMPLES, &s,
                  "pool of 1 worker");
    return bench_row_add("sync-cold", "sync no-op, first calls of a new pool", "us", ROW_COST,
                         ROW_P99, &cold, "right after pyproc_pool_new + add_sub");
}

/* One caller back to back on a pool of 2: round robin sends every call
 * to the worker that did not answer the last one. */
static int sync_pool_row(int workers)
{
    struct call_arg c = {.ref = "bench.calls.noop"};
    struct series s = {0};
    char key[32], note[64];
    int err = bench_pool(&c.pool, workers);

    if (err < 0)
        return err;
    err = bench_latency(&s, bench_budget(BUDGET_FAST), 0, call_once, &c);
    pyproc_pool_free(c.pool);
    if (err < 0) {
        series_free(&s);
        return err;
    }
    snprintf(key, sizeof key, "sync-%dw", workers);
    snprintf(note, sizeof note, "one host thread, pool of %d workers, round robin", workers);
    return bench_row_add(key, "sync no-op, back to back", "us", ROW_COST, ROW_P99, &s, note);
}

int bench_sync_pool(void)
{
    return sync_pool_row(2);
}

int bench_idle(void)
{
    return latency_row("sync-idle", "sync no-op after 50 ms idle", "bench.calls.noop", BUDGET_IDLE,
                       50000000, 0);
}

int bench_async(void)
{
    int err = latency_row("async", "async no-op, back to back", "bench.calls.anoop", BUDGET_FAST, 0,
                          ROW_SAMPLES);

    if (err < 0)
        return err;
    return latency_row("async-sleep0", "async, one await asyncio.sleep(0)", "bench.calls.asleep0",
                       BUDGET_FAST, 0, 0);
}

/* ---- an application's own loop: async call, poll the pool fd, dispatch ---- */

static void dispatch_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    (void)p;
    *(int *)data = result < 0 ? result : 1;
    pyproc_msg_free(ret);
}

/* One call at a time, as an event loop that polls pyproc_pool_fd() makes it. */
static int dispatch_once(void *arg)
{
    struct call_arg *c = arg;
    struct pollfd pfd = {.fd = pyproc_pool_fd(c->pool), .events = POLLIN};
    int got = 0, err = pyproc_func_async(c->pool, c->ref, dispatch_done, &got, NULL);

    while (!err && !got) {
        if (poll(&pfd, 1, 10000) == 0)
            return bench_fail("pyproc_pool_fd never became readable", -ETIMEDOUT, NULL);
        if ((err = pyproc_dispatch(c->pool)) > 0)
            err = 0;
    }
    if (err < 0 || got < 0)
        return bench_fail(c->ref, err < 0 ? err : got, NULL);
    return 0;
}

/* key: the row; ref: what is called, with no arguments; idle_ns: how long
 * the pool rests before each call. */
static int dispatch_row(const char *key, const char *ref, int workers, int64_t idle_ns,
                        const char *what)
{
    struct series s = {0};
    struct call_arg c = {.ref = ref};
    char note[128];
    int err = bench_pool(&c.pool, workers);

    if (err < 0)
        return err;
    err = bench_latency(&s, bench_budget(idle_ns ? BUDGET_IDLE : BUDGET_FAST), idle_ns,
                        dispatch_once, &c);
    pyproc_pool_free(c.pool);
    if (err < 0) {
        series_free(&s);
        return err;
    }
    snprintf(note, sizeof note, "func_async + poll(pool_fd) + dispatch; pool of %d worker%s%s",
             workers, workers > 1 ? "s" : "", what);
    return bench_row_add(key, "event loop: one async call at a time", "us", ROW_COST, ROW_P99, &s,
                         note);
}

/*
 * The last two rows take the answer by the doorbell, which wakes the loop
 * itself: dispatch-1ms against sync-1ms (the same call, blocking) shows
 * what the loop's path costs over a caller asleep on the ring.
 */
int bench_dispatch(void)
{
    const char *noop = "bench.calls.noop", *nap = "bench.calls.nap_1ms";
    int err = dispatch_row("dispatch", noop, 1, 0, "");

    if (err == 0)
        err = dispatch_row("dispatch-2w", noop, 2, 0, "");
    if (err == 0)
        err = dispatch_row("dispatch-idle", noop, 1, 50000000, "; after 50 ms idle");
    if (err == 0)
        err = latency_row("sync-1ms", "sync call of time.sleep(0.001)", nap, BUDGET_IDLE, 0, 0);
    return err < 0 ? err : dispatch_row("dispatch-1ms", nap, 1, 0, "; time.sleep(0.001)");
}

/* ---- pipelined throughput ---- */

#define WINDOW 256

struct pipe_thread {
    pthread_t tid;
    pyproc_pool *pool;
    pthread_barrier_t *go;
    int64_t run_ns, start, end;
    uint64_t calls;
    int err;
};

/* Send a window of tracked calls, then collect every answer. */
static int window_once(struct pipe_thread *t)
{
    pyproc_call *calls[WINDOW];
    int n, err = 0;

    for (n = 0; n < WINDOW; n++)
        if ((err = pyproc_track_func(t->pool, NULL, &calls[n], "bench.calls.noop", NULL)) < 0) {
            bench_fail("pyproc_track_func", err, NULL);
            break;
        }
    for (int i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        int rc = pyproc_wait(calls[i], &m, -1);
        if (rc < 0 && !err)
            err = bench_fail("pipelined bench.calls.noop", rc, m);
        pyproc_msg_free(m);
        pyproc_call_free(calls[i]);
    }
    t->calls += (uint64_t)n;
    return err;
}

static void *pipe_thread_main(void *arg)
{
    struct pipe_thread *t = arg;

    pthread_barrier_wait(t->go);
    t->start = bench_now_ns();
    do
        t->err = window_once(t);
    while (!t->err && bench_now_ns() - t->start < t->run_ns);
    t->end = bench_now_ns();
    return NULL;
}

/* One timed run of `threads` host threads; pushes calls/s. */
static int pipelined_run(pyproc_pool *p, int threads, double seconds, struct series *s)
{
    struct pipe_thread t[4] = {0};
    int64_t first = INT64_MAX, last = 0;
    pthread_barrier_t go;
    uint64_t calls = 0;
    int err = 0;

    pthread_barrier_init(&go, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        t[i] = (struct pipe_thread){.pool = p, .go = &go, .run_ns = (int64_t)(seconds * 1e9)};
        if (pthread_create(&t[i].tid, NULL, pipe_thread_main, &t[i])) {
            /* The threads already started would wait at the barrier
             * forever. */
            fprintf(stderr, "pyproc-bench: cannot start a thread\n");
            abort();
        }
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i].tid, NULL);
        err = err ? err : t[i].err;
        calls += t[i].calls;
        first = t[i].start < first ? t[i].start : first;
        last = t[i].end > last ? t[i].end : last;
    }
    pthread_barrier_destroy(&go);
    if (err < 0)
        return err;
    return series_push(s, (double)calls / ((double)(last - first) / 1e9));
}

/* The key and label of a pipelined row; spin_us as in pyproc_opts. */
static int pipelined_add(const char *prefix, int threads, int workers, int spin_us,
                         struct series *s)
{
    char key[48], label[96];

    snprintf(key, sizeof key, "%s-%dt-%dw%s", prefix, threads, workers,
             spin_us < 0 ? "-nospin" : "");
    snprintf(label, sizeof label, "pipelined no-op, %d host thread%s -> %d worker%s%s", threads,
             threads > 1 ? "s" : "", workers, workers > 1 ? "s" : "",
             spin_us < 0 ? ", spin_us -1" : "");
    return bench_row_add(key, label, "calls/s", ROW_RATE, 0, s,
                         "windows of 256 tracked calls per thread");
}

/* spin_us as in pyproc_opts: 0 for the default, -1 for none; the key
 * begins with prefix. */
static int pipelined_row(const char *prefix, int threads, int workers, int spin_us)
{
    const struct bench_budget *b = bench_budget(BUDGET_RATE);
    struct series s = {0}, warm = {0};
    pyproc_pool *p = NULL;
    int err = bench_pool_spin(&p, workers, spin_us);

    for (int i = 0; i < b->warmup && !err; i++)
        err = pipelined_run(p, threads, b->max_seconds, &warm);
    for (size_t i = 0; i < b->max_samples && !err; i++)
        err = pipelined_run(p, threads, b->max_seconds, &s);
    pyproc_pool_free(p);
    series_free(&warm);
    if (err < 0) {
        series_free(&s);
        return err;
    }
    return pipelined_add(prefix, threads, workers, spin_us, &s);
}

int bench_pipelined(void)
{
    static const int shapes[][2] = {{1, 1}, {1, 2}, {4, 1}, {4, 2}};
    int err = 0;

    for (size_t i = 0; i < 4 && !err; i++)
        err = pipelined_row("tput", shapes[i][0], shapes[i][1], 0);
    return err;
}

/*
 * Every CPU of a 2-CPU machine busy: one host thread keeps both workers
 * fed, with the default spin and with none, side by side; spinning must
 * not cost throughput here.  The two pools take turns sample by sample
 * (the one not measured sleeps), so that both see the same spells of a
 * noisy machine.
 */
int bench_saturated(void)
{
    const struct bench_budget *b = bench_budget(BUDGET_RATE);
    struct series s[2] = {{0}}, warm = {0};
    static const int spins[2] = {0, -1};
    pyproc_pool *p[2] = {NULL, NULL};
    int err = 0;

    for (int k = 0; k < 2 && !err; k++)
        err = bench_pool_spin(&p[k], 2, spins[k]);
    for (int i = 0; i < b->warmup && !err; i++)
        for (int k = 0; k < 2 && !err; k++)
            err = pipelined_run(p[k], 1, b->max_seconds, &warm);
    /* Each goes first every other time: neither always follows the other. */
    for (size_t i = 0; i < b->max_samples && !err; i++)
        for (int j = 0; j < 2 && !err; j++) {
            int k = (int)((i + (size_t)j) % 2);
            err = pipelined_run(p[k], 1, b->max_seconds, &s[k]);
        }
    for (int k = 0; k < 2; k++)
        pyproc_pool_free(p[k]);
    series_free(&warm);
    for (int k = 0; k < 2 && !err; k++)
        err = pipelined_add("sat", 1, 2, spins[k], &s[k]);
    series_free(&s[0]);
    series_free(&s[1]);
    return err;
}

/* ---- bulk echo ---- */

/* One echo outside the timing, to prove the bytes come back intact. */
static int echo_check(struct call_arg *c)
{
    pyproc_msg *m = NULL;
    const void *back;
    size_t len;
    int err = pyproc_func(c->pool, c->ref, &m, "y", c->data, c->len);

    if (!err)
        err = pyproc_msg_read(m, "y", &back, &len);
    if (!err && (len != c->len || memcmp(back, c->data, len)))
        err = -EBADMSG;
    if (err < 0)
        bench_fail("bench.calls.echo", err, m);
    pyproc_msg_free(m);
    return err;
}

static int echo_row(pyproc_pool *p, const unsigned char *data, size_t len, const char *key)
{
    struct call_arg c = {.pool = p, .ref = "bench.calls.echo", .data = data, .len = len};
    struct series rtt = {0}, rate = {0};
    char label[64];
    int err = echo_check(&c);

    if (!err)
        err = bench_latency(&rtt, bench_budget(BUDGET_BULK), 0, call_once, &c);
    /* GB/s = bytes per ns: payload bytes over the whole round trip. */
    for (size_t i = 0; !err && i < rtt.n; i++)
        err = series_push(&rate, (double)len / (rtt.v[i] * 1e3));
    series_free(&rtt);
    if (err < 0) {
        series_free(&rate);
        return err;
    }
    snprintf(label, sizeof label, "echo bytes of %s", key + 5);
    return bench_row_add(key, label, "GB/s", ROW_RATE, 0, &rate,
                         "payload bytes / round trip; pool of 1 worker");
}

int bench_echo(void)
{
    static const struct {
        const char *key;
        size_t len;
    } sizes[] = {{"echo-1KiB", 1u << 10},
                 {"echo-64KiB", 64u << 10},
                 {"echo-1MiB", 1u << 20},
                 {"echo-16MiB", 16u << 20}};
    unsigned char *data = malloc(16u << 20);
    pyproc_pool *p = NULL;
    int err = data ? bench_pool(&p, 1) : -ENOMEM;

    for (size_t i = 0; data && i < 16u << 20; i++)
        data[i] = (unsigned char)((i * 2654435761u) >> 24);
    for (size_t i = 0; !err && i < sizeof sizes / sizeof sizes[0]; i++)
        err = echo_row(p, data, sizes[i].len, sizes[i].key);
    pyproc_pool_free(p);
    free(data);
    return err;
}

/* ---- handing large data to a function: copied or shared ---- */

struct hand_arg {
    pyproc_pool *pool;
    pyproc_buf *buf; /* NULL: copy the bytes */
    const void *data;
    size_t len;
};

static int hand_once(void *arg)
{
    struct hand_arg *h = arg;
    pyproc_msg *m = NULL;
    int err = h->buf ? pyproc_func(h->pool, "bench.calls.touch", &m, "B", h->buf, (size_t)0, h->len)
                     : pyproc_func(h->pool, "bench.calls.touch", &m, "y", h->data, h->len);

    if (err < 0)
        bench_fail("bench.calls.touch", err, m);
    pyproc_msg_free(m);
    return err;
}

static int hand_row(struct hand_arg *h, const char *key, const char *label, const char *note)
{
    struct series rtt = {0}, rate = {0};
    int err = bench_latency(&rtt, bench_budget(BUDGET_BULK), 0, hand_once, h);

    for (size_t i = 0; !err && i < rtt.n; i++)
        err = series_push(&rate, (double)h->len / (rtt.v[i] * 1e3));
    series_free(&rtt);
    if (err < 0) {
        series_free(&rate);
        return err;
    }
    return bench_row_add(key, label, "GB/s", ROW_RATE, 0, &rate, note);
}

/* 16 MiB to a function that reads both ends: as bytes through the ring,
 * and as a shared buffer (pyproc_buf, format 'B'), in the same run. */
int bench_hand(void)
{
    size_t len = 16u << 20;
    pyproc_pool *p = NULL;
    pyproc_buf *buf = NULL;
    int err = bench_pool(&p, 1);

    if (!err)
        err = pyproc_buf_new(p, len, &buf);
    if (!err) {
        memset(pyproc_buf_data(buf), 7, len);
        struct hand_arg copied = {p, NULL, pyproc_buf_data(buf), len};
        struct hand_arg shared = {p, buf, NULL, len};
        err = hand_row(&copied, "hand-16MiB-copy", "16 MiB argument, copied as bytes",
                       "payload bytes / round trip; pool of 1 worker");
        if (!err)
            err = hand_row(&shared, "hand-16MiB-buf", "16 MiB argument, shared buffer ('B')",
                           "payload bytes / round trip; mapped in the worker, not copied");
    }
    pyproc_buf_free(buf);
    pyproc_pool_free(p);
    return err < 0 ? bench_fail("hand 16 MiB", err, NULL) : 0;
}

/* ---- generators ---- */

/* Stream range(n) from one worker; pushes items/s. */
static int gen_run(pyproc_pool *p, int n, struct series *s)
{
    int64_t t0 = bench_now_ns();
    pyproc_call *stream = NULL;
    pyproc_msg *item = NULL;
    int got = 0, err = pyproc_gen(p, "bench.calls.items", &stream, "i", n);

    while (!err && (err = pyproc_next(stream, &item)) == 1) {
        pyproc_msg_free(item);
        item = NULL;
        got++;
        err = 0;
    }
    if (err < 0)
        bench_fail("pyproc_gen bench.calls.items", err, item);
    else if (got != n)
        err = bench_fail("pyproc_gen bench.calls.items", -EBADMSG, NULL);
    else
        err = series_push(s, n / ((double)(bench_now_ns() - t0) / 1e9));
    pyproc_msg_free(item);
    pyproc_call_free(stream);
    return err;
}

int bench_gen(void)
{
    static const int items[] = {1000, 200000, 1000000};
    const struct bench_budget *b = bench_budget(BUDGET_RATE);
    struct series s = {0}, warm = {0};
    pyproc_pool *p = NULL;
    char label[64];
    int err = bench_pool(&p, 1);

    for (int i = 0; i < b->warmup && !err; i++)
        err = gen_run(p, items[bench.level] / 10, &warm);
    for (size_t i = 0; i < b->max_samples && !err; i++)
        err = gen_run(p, items[bench.level], &s);
    pyproc_pool_free(p);
    series_free(&warm);
    if (err < 0) {
        series_free(&s);
        return err;
    }
    snprintf(label, sizeof label, "generator items, range(%d)", items[bench.level]);
    return bench_row_add("gen", label, "items/s", ROW_RATE, 0, &s,
                         "pyproc_gen + pyproc_next; pool of 1 worker");
}
