/*
 * Handing a worker's frames to where they go, from private copies (see
 * drain.c): a stream's items into its queue, within its credit window; a
 * callback request into the callback thread's bounded queue.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../shm/mpvalid.h"
#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "drain.h"

/*
 * Room for n more items in the stream's window?  The worker may have
 * SHM_STREAM_WINDOW items that we hold and have not given credit back
 * for; a batch beyond that breaks the protocol, and would let the worker
 * grow our memory without bound.
 */
static bool window_has_room(pyproc_call *c, uint32_t n)
{
    pthread_mutex_lock(&c->qlock);
    bool ok = n <= SHM_STREAM_WINDOW - c->held;
    pthread_mutex_unlock(&c->qlock);
    return ok;
}

/*
 * Split a YIELD's array into messages and queue them.  On the drainer.
 * items is a private copy (see drain.c), checked here item by item as it
 * is walked; each item is then copied into a message of its own.
 */
int pyproc__stream_deliver(struct pp_worker *w, pyproc_call *c, const uint8_t *items, size_t len)
{
    const char *p = (const char *)items, *end = p + len;
    pyproc_msg *first = NULL, **link = &first, *last = NULL;
    uint32_t n, count = 0;
    int err = 0;

    if (pyproc__wire_yield_read(p, len, &n, &p) < 0)
        return -EBADMSG;
    /* Only the reader lowers held, so room seen now is room later. */
    if (!window_has_room(c, n))
        return -EPROTO;
    for (; count < n && err == 0; count++) {
        const char *start = p;
        pyproc_msg *m;
        err = shm_mp_next(&p, end);
        if (err == 0)
            err = pyproc__msg_from_checked(&m, start, (size_t)(p - start));
        if (err < 0)
            break;
        if ((err = pyproc__take_buffers(w, m)) < 0) {
            pyproc_msg_free(m);
            break;
        }
        *pyproc__msg_link(m) = NULL;
        *link = last = m;
        link = pyproc__msg_link(m);
    }
    if (err == 0 && p != end)
        err = -EBADMSG;
    if (!first)
        return err == -EBADMSG || err == -EBADFD ? err : 0;
    pthread_mutex_lock(&c->qlock);
    if (c->tail)
        *pyproc__msg_link(c->tail) = first;
    else
        c->head = first;
    c->tail = last;
    c->held += count;
    pthread_mutex_unlock(&c->qlock);
    pyproc__call_signal(c);
    pyproc__stream_notify(c);
    return err == -EBADMSG || err == -EBADFD ? err : 0;
}

/* One callback of w is over (answered or dropped). */
void pyproc__callback_gone(struct pp_worker *w)
{
    /* A bound only, guarding no memory: relaxed, like the increment in
     * pyproc__callback_push() and the decrement in send.c. */
    atomic_fetch_sub_explicit(&w->cb_queued, 1, memory_order_relaxed);
}

int pyproc__callback_push(struct pp_worker *w, uint64_t id, const uint8_t *payload, size_t len)
{
    pyproc_pool *p = w->pool;
    struct callback_req *r;
    int err;

    /* Relaxed: see pyproc__callback_gone(). */
    if (atomic_fetch_add_explicit(&w->cb_queued, 1, memory_order_relaxed) >=
        PYPROC__CALLBACK_QUEUE_MAX) {
        pyproc__callback_gone(w);
        pyproc__worker_condemn(w, "queued more callbacks than the pool holds");
        return -EBADMSG;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        pyproc__callback_gone(w);
        return -ENOMEM;
    }
    r->id = id;
    err = pyproc__msg_from_value(&r->payload, payload, len);
    if (err == 0 && (err = pyproc__take_buffers(w, r->payload)) < 0)
        pyproc_msg_free(r->payload);
    if (err < 0) {
        pyproc__callback_gone(w);
        free(r);
        return err;
    }
    pyproc__worker_ref(w);
    r->worker = w;
    pthread_mutex_lock(&p->lock);
    if (p->cb_tail)
        p->cb_tail->next = r;
    else
        p->cb_head = r;
    p->cb_tail = r;
    pthread_cond_broadcast(&p->cb_cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}
