/*
 * uv: a pool inside a libuv loop.
 *
 * The adapter is pool_watch(): a uv_poll_t on the pool's fd whose callback
 * runs pyproc_dispatch(), so completions of pyproc_func_async() calls run
 * on the loop's thread like any other event.  Copy it into your program;
 * the rest is a demonstration: a timer starts calls in bursts while a
 * second timer ticks alongside, until every call has answered.
 * Run from examples/: ../build/examples/loops/uv
 */
#include <stdio.h>
#include <uv.h>

#include "pyproc.h"

/* ---- the adapter ---- */

static void pool_readable(uv_poll_t *watch, int status, int events)
{
    (void)events;
    if (status == 0)
        pyproc_dispatch(watch->data);
}

/* Watch the pool's fd on loop; stop with uv_close((uv_handle_t *)watch). */
static int pool_watch(uv_loop_t *loop, uv_poll_t *watch, pyproc_pool *pool)
{
    int rc = uv_poll_init(loop, watch, pyproc_pool_fd(pool));

    if (rc < 0)
        return rc;
    watch->data = pool;
    return uv_poll_start(watch, UV_READABLE, pool_readable);
}

/* ---- the demonstration ---- */

#define CALLS 300
#define BURST 10

struct demo {
    pyproc_pool *pool;
    uv_poll_t watch;
    uv_timer_t burst, ticker;
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
    if (++d->answered == CALLS) {
        /* Closing every handle lets uv_run() return. */
        uv_close((uv_handle_t *)&d->watch, NULL);
        uv_close((uv_handle_t *)&d->ticker, NULL);
        uv_close((uv_handle_t *)&d->burst, NULL);
    }
}

static void start_burst(uv_timer_t *timer)
{
    struct demo *d = timer->data;

    for (int i = 0; i < BURST && d->started < CALLS; i++, d->started++)
        if (pyproc_func_async(d->pool, "act.test.scale", done, d, "ii|sd", d->started, 0, "factor",
                              1.0) < 0)
            d->failed++, d->answered++;
    if (d->started == CALLS)
        uv_timer_stop(timer);
}

static void tick(uv_timer_t *timer)
{
    ((struct demo *)timer->data)->ticks++;
}

int main(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "mods"};
    uv_loop_t *loop = uv_default_loop();
    struct demo d = {0};
    int rc;

    if ((rc = pyproc_pool_new(&d.pool, "uv", &opts)) < 0 ||
        (rc = pyproc_add_sub(d.pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "uv: %s\n", pyproc_strerror(rc));
        return 1;
    }
    if ((rc = pool_watch(loop, &d.watch, d.pool)) < 0) {
        fprintf(stderr, "uv: %s\n", uv_strerror(rc));
        return 1;
    }
    d.burst.data = d.ticker.data = &d;
    uv_timer_init(loop, &d.burst);
    uv_timer_init(loop, &d.ticker);
    uv_timer_start(&d.burst, start_burst, 1, 1);
    uv_timer_start(&d.ticker, tick, 2, 2);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    pyproc_pool_free(d.pool);
    printf("uv: %d calls answered, %d failed, sum %.0f, timer ticked: %s\n", d.answered, d.failed,
           d.sum, d.ticks > 0 ? "yes" : "no");
    return d.failed || d.answered != CALLS;
}
