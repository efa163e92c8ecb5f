/*
 * Any handle from an event loop: a callback when a call ends
 * (pyproc_call_on_done()), a stream's items delivered to a callback
 * (pyproc_stream_on_item()), and a deadline of its own
 * (pyproc_call_deadline()).  The callbacks run from pyproc_dispatch()
 * (async.c) on the application's thread; who queues them is decided by
 * the handshakes described in struct pyproc_call.
 */
#include <errno.h>

#include "msg.h"
#include "chan.h"
#include "service.h"
#include "feature.h"

/* The owner claims the handle's one callback. */
static int claim(pyproc_call *c, int kind)
{
    int none = CB_NONE;

    /* acq_rel: publishes the callback and its data stored before it to
     * whoever loads cb with acquire (pyproc__stream_notify(), dispatch). */
    if (!atomic_compare_exchange_strong_explicit(&c->cb, &none, kind, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return -EALREADY;
    return 0;
}

PYPROC_EXPORT int pyproc_call_on_done(pyproc_call *c, pyproc_done_fn done, void *data)
{
    int arm = NOTIFY_NONE;

    if (!c || !done || c->is_stream)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    if (c->taken || atomic_load_explicit(&c->cb, memory_order_relaxed) != CB_NONE)
        return -EALREADY;
    c->hdone = done;
    c->hdone_data = data;
    if (claim(c, CB_DONE) < 0)
        return -EALREADY;
    /* The handshake with pyproc__call_complete(): whichever of us comes
     * second queues the call, so its callback runs exactly once. */
    if (!atomic_compare_exchange_strong_explicit(&c->notify, &arm, NOTIFY_ARMED,
                                                 memory_order_acq_rel, memory_order_acquire))
        pyproc__handle_queue(c); /* it has ended already */
    return 0;
}

PYPROC_EXPORT int pyproc_stream_on_item(pyproc_call *c, pyproc_item_fn fn, void *data)
{
    bool queue = false;
    int err;

    if (!c || !fn || !c->is_stream)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    c->item_fn = fn;
    c->item_data = data;
    /* Under qlock, where items are appended: either the drainer sees the
     * callback after this, or we see what it appended. */
    pthread_mutex_lock(&c->qlock);
    err = claim(c, CB_ITEMS);
    /* A map's results are not in the queue: look once, and from then on
     * whenever its results come (pyproc__map_wake()). */
    if (err == 0 && (c->map || c->head || atomic_load_explicit(&c->ended, memory_order_relaxed)) &&
        !c->queued)
        queue = c->queued = true;
    pthread_mutex_unlock(&c->qlock);
    if (err == 0 && c->map)
        pyproc__map_deliver(c);
    if (queue)
        pyproc__handle_queue(c);
    return err;
}

PYPROC_EXPORT int pyproc_call_deadline(pyproc_call *c, int timeout_ms)
{
    int err;

    if (!c || timeout_ms < 0)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    if (c->map)
        return -EOPNOTSUPP; /* its chunks have the pool's call timeout */
    /* Acquire: pairs with the release store in pyproc__call_complete(). */
    if (atomic_load_explicit(&c->ended, memory_order_acquire))
        return -EALREADY;
    err = pyproc__deadline_set(c, shm_now_ns() + (int64_t)timeout_ms * 1000000);
    if (err == 0)
        pyproc__service_kick(c->pool); /* it may now be the next one due */
    return err;
}

/* A call past its own deadline ends now, whatever its worker does: out of
 * the table (its answer, if one comes, finds nothing), stopped in the
 * worker, and ended with -ETIMEDOUT. */
static void expire(pyproc_call *c)
{
    pyproc_msg *why = NULL;

    if (!pyproc__table_remove(c->worker, c))
        return; /* it ended meanwhile */
    pyproc__call_interrupt(c, SHM_INTERRUPT_CANCEL);
    pyproc__msg_error(&why, "the call ran past its deadline");
    pyproc__call_complete(c, -ETIMEDOUT, why); /* takes the table's reference */
}

int pyproc__deadlines_expire(pyproc_pool *p)
{
    int64_t now = shm_now_ns();
    pyproc_call *c;
    int next_ms;

    while ((c = pyproc__deadline_pop(p, now, &next_ms))) {
        expire(c);
        pyproc__call_unref(c); /* the heap's reference */
    }
    return next_ms;
}
