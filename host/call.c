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
#include "msg.h"
#include "chan.h"
#include "call.h"

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
    pyproc__worker_unref(c->worker);
    free(c);
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
    if (c->is_stream)
        pthread_mutex_lock(&c->qlock);
    c->result = result;
    c->ret = ret;
    atomic_store_explicit(&c->ended, true, memory_order_release);
    if (c->is_stream)
        pthread_mutex_unlock(&c->qlock);
    if (c->done) {
        pyproc__async_push(c); /* takes over the table's reference */
        return;
    }
    pyproc__call_signal(c);
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

void pyproc__async_push(pyproc_call *c)
{
    pyproc_pool *p = c->pool;
    bool was_empty;

    /* A hint for the spin choice in start.c, ordering nothing: relaxed. */
    atomic_fetch_sub_explicit(&p->async_out, 1, memory_order_relaxed);
    pthread_mutex_lock(&p->done_lock);
    was_empty = !p->completed;
    c->next_done = NULL;
    if (p->completed_tail)
        p->completed_tail->next_done = c;
    else
        p->completed = c;
    p->completed_tail = c;
    pthread_mutex_unlock(&p->done_lock);
    if (was_empty) {
        uint64_t one = 1;
        if (write(p->done_fd, &one, sizeof one) < 0) {
            /* The counter is full: the fd is readable, which is all we need. */
        }
    }
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
        c->taken = true;
        c->done(p, c->result, c->ret, c->done_data);
        pyproc__call_unref(c);
        ran++;
    }
    return ran;
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
