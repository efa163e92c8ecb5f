/*
 * The call object: the last reference frees it, the one end of a call is
 * stored once and signalled to whoever waits, and asynchronous calls end
 * on the pool's completion queue instead (see call.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/futex.h"
#include "freelist.h"
#include "msg.h"
#include "chan.h"
#include "call.h"
#include "mapq.h"

void pyproc__call_unref(pyproc_call *c)
{
    /* acq_rel: see refs in pool.h. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (!c->taken)
        pyproc_msg_free(c->ret);
    if (c->is_stream) {
        pyproc__stream_free_items(c);
        pthread_mutex_destroy(&c->qlock);
    }
    pyproc__chunk_unref(c->chunk);
    pyproc__worker_unref(c->worker);
    pyproc__fl_put(PYPROC__FL_CALL, c, sizeof *c);
}

void pyproc__call_signal(pyproc_call *c)
{
    /* Release pairs with the acquire loads in pyproc__call_done(); see
     * pyproc__chan_wake_sleeper() for the fence that follows. */
    uint32_t was = atomic_exchange_explicit(&c->state, CALL_DONE, memory_order_acq_rel);

    if (was == CALL_SLEEPING)
        shm_futex_wake(&c->state, 1, false);
    else if (was == CALL_RING_SLEEPING)
        pyproc__chan_wake_sleeper(c->worker);
}

/* Store the end of a call (or stream) and drop the table's reference. */
void pyproc__call_complete(pyproc_call *c, int result, pyproc_msg *ret)
{
    /* Acquire: pairs with the release compare-exchange in expire()
     * (expire.c); a stage seen late only changes which error is reported. */
    if (atomic_load_explicit(&c->expiry, memory_order_acquire) != EXPIRY_NONE && result < 0 &&
        result != -ETIMEDOUT) {
        /* Ended because it ran too long, whatever the worker said. */
        pyproc_msg *why = NULL;
        pyproc__msg_error(&why, "the call ran past the pool's call timeout%s%s",
                          ret && pyproc_msg_error(ret) ? ": " : "",
                          ret && pyproc_msg_error(ret) ? pyproc_msg_error(ret) : "");
        pyproc_msg_free(ret);
        ret = why;
        result = -ETIMEDOUT;
    }
    if (result < 0 && c->stats)
        atomic_fetch_add_explicit(&c->stats->errors, 1, memory_order_relaxed);
    if (c->chunk) {
        /* A map's chunk: its items take the end, nobody waits on it. */
        pyproc__chunk_end(c->chunk, result, ret);
        ret = NULL;
    }
    if (c->is_stream)
        pthread_mutex_lock(&c->qlock);
    c->result = result;
    c->ret = ret;
    atomic_store_explicit(&c->ended, true, memory_order_release);
    if (c->is_stream)
        pthread_mutex_unlock(&c->qlock);
    /* Acquire: pairs with the release store in pyproc__deadline_set(). */
    if (atomic_load_explicit(&c->has_deadline, memory_order_acquire))
        pyproc__deadline_remove(c);
    if (c->done) {
        pyproc__async_push(c); /* takes over the table's reference */
        return;
    }
    pyproc__call_signal(c);
    if (c->is_stream)
        pyproc__stream_notify(c);
    else if (atomic_exchange_explicit(&c->notify, NOTIFY_ENDED, memory_order_acq_rel) ==
             NOTIFY_ARMED)
        pyproc__handle_queue(c); /* the owner armed a callback first */
    pyproc__call_unref(c);
}

void pyproc__fail_calls(struct pp_worker *w, int result, const char *why)
{
    uint32_t cursor = 0;
    pyproc_call *c;

    while ((c = pyproc__table_take_next(w, &cursor))) {
        pyproc_msg *m = NULL;
        pyproc__msg_error(&m, "%s", why); /* NULL when out of memory: no text */
        pyproc__call_complete(c, result, m);
    }
}

/* Wake the loop for the completed list, unless a dispatch is due to take
 * it anyway (pool->done_due).  Under done_lock; the caller writes done_fd
 * after unlocking when this returns true. */
static bool done_signal_locked(pyproc_pool *p)
{
    bool write_it = !p->done_due;

    p->done_due = true;
    return write_it;
}

static void done_fd_write(pyproc_pool *p)
{
    uint64_t one = 1;

    if (write(p->done_fd, &one, sizeof one) < 0) {
        /* Never read, one per write: it does not fill in 2^64 writes. */
    }
}

void pyproc__async_expect(pyproc_pool *p)
{
    pthread_mutex_lock(&p->done_lock);
    bool write_it = done_signal_locked(p);
    pthread_mutex_unlock(&p->done_lock);
    if (write_it)
        done_fd_write(p);
}

void pyproc__async_push(pyproc_call *c)
{
    pyproc_pool *p = c->pool;
    bool write_it;

    /* A hint for the spin choice in start.c, ordering nothing: relaxed.
     * Only asynchronous calls were counted, not handles whose callbacks
     * are due (pyproc__handle_queue()). */
    if (c->done)
        atomic_fetch_sub_explicit(&p->async_out, 1, memory_order_relaxed);
    pthread_mutex_lock(&p->done_lock);
    c->next_done = NULL;
    if (p->completed_tail)
        p->completed_tail->next_done = c;
    else
        p->completed = c;
    p->completed_tail = c;
    write_it = done_signal_locked(p);
    pthread_mutex_unlock(&p->done_lock);
    if (write_it)
        done_fd_write(p);
}

void pyproc__handle_queue(pyproc_call *c)
{
    /* From a reference the caller holds: relaxed (see refs). */
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    pyproc__async_push(c);
}

void pyproc__stream_notify(pyproc_call *c)
{
    bool queue;

    /* Most streams have no callback.  The owner sets one under qlock, and
     * each item is appended under qlock before this: either the owner
     * finds the item when it sets its callback, or this load sees the
     * callback. */
    if (atomic_load_explicit(&c->cb, memory_order_acquire) != CB_ITEMS)
        return;
    pthread_mutex_lock(&c->qlock);
    /* Acquire: pairs with the owner's compare-exchange of cb, done under
     * qlock too, so a callback set after this look finds the items. */
    queue = atomic_load_explicit(&c->cb, memory_order_acquire) == CB_ITEMS && !c->queued;
    if (queue)
        c->queued = true;
    pthread_mutex_unlock(&c->qlock);
    if (queue)
        pyproc__handle_queue(c);
}

void pyproc__stream_free_items(pyproc_call *c)
{
    while (c->head) {
        pyproc_msg *m = c->head;
        c->head = *pyproc__msg_link(m);
        pyproc_msg_free(m);
    }
    c->tail = NULL;
}
