/*
 * glib: a pool inside a GLib main loop.
 *
 * The adapter is pool_source_new(): a GSource that watches the pool's fd
 * and runs pyproc_dispatch() when it is readable, so completions of
 * pyproc_func_async() calls run on the loop's thread like any other event.
 * Copy it into your program; the rest is a demonstration: a timer starts
 * calls in bursts while a second timer ticks alongside, until every call
 * has answered.  Run from examples/: ../build/examples/loops/glib
 */
#include <glib.h>
#include <stdio.h>

#include "pyproc.h"

/* ---- the adapter ---- */

typedef struct {
    GSource source;
    pyproc_pool *pool;
} PoolSource;

static gboolean pool_source_dispatch(GSource *source, GSourceFunc callback, gpointer data)
{
    (void)callback, (void)data;
    pyproc_dispatch(((PoolSource *)source)->pool);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs pool_source_funcs = {.dispatch = pool_source_dispatch};

/* A source that dispatches the pool's completions; attach it to a context.
 * With no check function, GLib dispatches it whenever its fd is readable. */
static GSource *pool_source_new(pyproc_pool *pool)
{
    GSource *source = g_source_new(&pool_source_funcs, sizeof(PoolSource));

    ((PoolSource *)source)->pool = pool;
    g_source_add_unix_fd(source, pyproc_pool_fd(pool), G_IO_IN);
    g_source_set_name(source, "pyproc pool");
    return source;
}

/* ---- the demonstration ---- */

#define CALLS 300
#define BURST 10

struct demo {
    pyproc_pool *pool;
    GMainLoop *loop;
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
        g_main_loop_quit(d->loop);
}

static gboolean start_burst(gpointer data)
{
    struct demo *d = data;

    for (int i = 0; i < BURST && d->started < CALLS; i++, d->started++)
        if (pyproc_func_async(d->pool, "act.test.scale", done, d, "ii|sd", d->started, 0, "factor",
                              1.0) < 0)
            d->failed++, d->answered++;
    return d->started < CALLS ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static gboolean tick(gpointer data)
{
    ((struct demo *)data)->ticks++;
    return G_SOURCE_CONTINUE;
}

int main(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "mods"};
    struct demo d = {0};
    GSource *source;
    int rc;

    if ((rc = pyproc_pool_new(&d.pool, "glib", &opts)) < 0 ||
        (rc = pyproc_add_sub(d.pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "glib: %s\n", pyproc_strerror(rc));
        return 1;
    }
    d.loop = g_main_loop_new(NULL, FALSE);
    source = pool_source_new(d.pool);
    g_source_attach(source, NULL);
    g_timeout_add(1, start_burst, &d);
    guint ticker = g_timeout_add(2, tick, &d);
    g_main_loop_run(d.loop);
    g_source_remove(ticker);
    g_source_destroy(source);
    g_source_unref(source);
    g_main_loop_unref(d.loop);
    pyproc_pool_free(d.pool);
    printf("glib: %d calls answered, %d failed, sum %.0f, timer ticked: %s\n", d.answered, d.failed,
           d.sum, d.ticks > 0 ? "yes" : "no");
    return d.failed || d.answered != CALLS;
}
