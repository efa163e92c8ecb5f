/*
 * libevent: a pool inside a libevent event base.
 *
 * The adapter is pool_event_new(): a persistent read event on the pool's
 * fd whose callback runs pyproc_dispatch(), so completions of
 * pyproc_func_async() calls run on the loop's thread like any other event.
 * Copy it into your program; the rest is a demonstration: a timer starts
 * calls in bursts while a second timer ticks alongside, until every call
 * has answered.  Run from examples/: ../build/examples/loops/libevent
 */
#include <event2/event.h>
#include <stdio.h>

#include "pyproc.h"

/* ---- the adapter ---- */

static void pool_readable(evutil_socket_t fd, short what, void *pool)
{
    (void)fd, (void)what;
    pyproc_dispatch(pool);
}

/* A persistent event that dispatches the pool; event_add() it to start. */
static struct event *pool_event_new(struct event_base *base, pyproc_pool *pool)
{
    return event_new(base, pyproc_pool_fd(pool), EV_READ | EV_PERSIST, pool_readable, pool);
}

/* ---- the demonstration ---- */

#define CALLS 300
#define BURST 10

struct demo {
    pyproc_pool *pool;
    struct event_base *base;
    struct event *burst;
    int started, answered, failed, ticks;
    double sum;
};

static void done(pyproc_pool *pool, int result, pyproc_msg *ret, void *data)
{
    struct demo *d = data;
    double v = 0;

    (void)pool;
    if (result < 0 || pyproc_msg_read(ret, "d", &v) < 0)
        d->failed++;
    d->sum += v;
    pyproc_msg_free(ret);
    if (++d->answered == CALLS)
        event_base_loopbreak(d->base);
}

static void start_burst(evutil_socket_t fd, short what, void *data)
{
    struct demo *d = data;

    (void)fd, (void)what;
    for (int i = 0; i < BURST && d->started < CALLS; i++, d->started++)
        if (pyproc_func_async(d->pool, "act.test.scale", done, d, "ii|sd", d->started, 0, "factor",
                              1.0) < 0)
            d->failed++, d->answered++;
    if (d->started == CALLS)
        event_del(d->burst);
}

static void tick(evutil_socket_t fd, short what, void *data)
{
    (void)fd, (void)what;
    ((struct demo *)data)->ticks++;
}

int main(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "mods"};
    struct timeval one_ms = {0, 1000}, two_ms = {0, 2000};
    struct demo d = {0};
    struct event *watch, *ticker;
    int rc;

    if ((rc = pyproc_pool_new(&d.pool, "libevent", &opts)) < 0 ||
        (rc = pyproc_add_sub(d.pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "libevent: %s\n", pyproc_strerror(rc));
        return 1;
    }
    d.base = event_base_new();
    watch = pool_event_new(d.base, d.pool);
    d.burst = event_new(d.base, -1, EV_PERSIST, start_burst, &d);
    ticker = event_new(d.base, -1, EV_PERSIST, tick, &d);
    event_add(watch, NULL);
    event_add(d.burst, &one_ms);
    event_add(ticker, &two_ms);
    event_base_dispatch(d.base);
    event_free(ticker);
    event_free(d.burst);
    event_free(watch);
    event_base_free(d.base);
    pyproc_pool_free(d.pool);
    printf("libevent: %d calls answered, %d failed, sum %.0f, timer ticked: %s\n", d.answered,
           d.failed, d.sum, d.ticks > 0 ? "yes" : "no");
    return d.failed || d.answered != CALLS;
}
