/*
 * Asynchronous calls for applications with their own event loop.
 *
 * A finished asynchronous call, or a handle whose callback is due (see
 * events.c), goes on the pool's completed list and makes done_fd
 * readable; pyproc_dispatch() takes the whole list and runs the callbacks
 * on the application's thread, never inside the library's threads, so a
 * callback may do anything, including calls on the pool and freeing the
 * handle it was called for (the list's reference keeps it alive).
 */
#include <errno.h>
#include <unistd.h>

#include "msg.h"
#include "feature.h"

/* Whether the handle's owner freed it: then no callback runs.  Acquire:
 * pairs with the release store in pyproc_call_free(). */
static bool freed(pyproc_call *c)
{
    return atomic_load_explicit(&c->cb_freed, memory_order_acquire);
}

/* A stream's items, then its end, to its callback. */
static int deliver_items(pyproc_pool *p, pyproc_call *c)
{
    pyproc_msg *item;
    int ran = 0, r;

    pthread_mutex_lock(&c->qlock);
    c->queued = false; /* items that come from now on queue it again */
    pthread_mutex_unlock(&c->qlock);
    while (!c->finished && !freed(c)) {
        item = NULL;
        r = c->map ? pyproc__map_poll(c, &item) : pyproc__stream_take(c, &item, false);
        if (r == PYPROC__STREAM_EMPTY)
            break;
        c->finished = r <= 0;
        c->item_fn(p, r, item, c->item_data);
        ran++;
    }
    return ran;
}

/* An asynchronous call's end, or a handle's. */
static int deliver_end(pyproc_pool *p, pyproc_call *c)
{
    pyproc_done_fn done = c->done ? c->done : c->hdone;
    void *data = c->done ? c->done_data : c->hdone_data;

    if (!c->done && freed(c))
        return 0;
    c->taken = true;
    done(p, c->result, c->ret, data);
    return 1;
}

int pyproc__async_run(pyproc_pool *p)
{
    pyproc_call *list;
    uint64_t n;
    int ran = 0;

    pthread_mutex_lock(&p->done_lock);
    list = p->completed;
    p->completed = p->completed_tail = NULL;
    /* Emptied under the lock, so a push after this writes the fd again;
     * one read takes an eventfd's whole count. */
    if (read(p->done_fd, &n, sizeof n) < 0) {
        /* EAGAIN: nothing was counted, which is what we want. */
    }
    pthread_mutex_unlock(&p->done_lock);
    while (list) {
        pyproc_call *c = list;
        list = c->next_done;
        if (c->is_stream && !c->done)
            ran += deliver_items(p, c);
        else
            ran += deliver_end(p, c);
        pyproc__call_unref(c);
    }
    return ran;
}

PYPROC_EXPORT int pyproc_func_asyncv(pyproc_pool *p, const char *ref, pyproc_done_fn done,
                                     void *data, const char *fmt, va_list ap)
{
    if (!done)
        return -EINVAL;
    return pyproc__call_start_ex(p, -1, 0, ref, fmt, ap, done, data, NULL);
}

PYPROC_EXPORT int pyproc_func_async(pyproc_pool *p, const char *ref, pyproc_done_fn done,
                                    void *data, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_func_asyncv(p, ref, done, data, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_pool_fd(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);
    return err < 0 ? err : p->done_fd;
}

PYPROC_EXPORT int pyproc_dispatch(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);
    return err < 0 ? err : pyproc__async_run(p);
}
