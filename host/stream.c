/*
 * Streams: the items of a generator, handed out one by one as they come.
 *
 * The worker sends items in YIELD frames (a msgpack array of one or more
 * items each) and may have SHM_STREAM_WINDOW items unread by our reader at
 * any time; as the reader takes them we give credit back in CREDIT frames,
 * half a window at a time.  The window is enforced, not just advised: we
 * count what we hold (call->held), and a worker that sends more is killed
 * by the drainer, so an unread stream costs at most a window of items.
 */
#include <errno.h>
#include <stdlib.h>

#include "../shm/futex.h"
#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "feature.h"

/*
 * The reader took one item: count it, and every half window say how many
 * the worker may send again.  Under qlock; returns the credit to send
 * (0: none yet).  held drops as the credit is decided, before the worker
 * can see it, so a worker that keeps to its credit never exceeds held.
 */
static uint32_t take_credit(pyproc_call *c)
{
    uint32_t n;

    if (++c->since_credit < SHM_STREAM_WINDOW / 2)
        return 0;
    n = c->since_credit;
    c->since_credit = 0;
    c->held -= n;
    return n;
}

static void send_credit(pyproc_call *c, uint32_t n)
{
    char buf[PYPROC__WIRE_SMALL];

    pyproc__send(c->worker, SHM_FRAME_CREDIT, c->id, buf, pyproc__wire_credit(buf, n));
}

int pyproc__stream_take(pyproc_call *c, pyproc_msg **item, bool arm)
{
    uint32_t credit = 0;
    int result;

    pthread_mutex_lock(&c->qlock);
    pyproc_msg *it = c->head;
    if (it) {
        c->head = *pyproc__msg_link(it);
        if (!c->head)
            c->tail = NULL;
        if (!atomic_load_explicit(&c->ended, memory_order_relaxed))
            credit = take_credit(c);
        pthread_mutex_unlock(&c->qlock);
        *pyproc__msg_link(it) = NULL;
        *item = it;
        if (credit)
            send_credit(c, credit);
        return 1;
    }
    if (atomic_load_explicit(&c->ended, memory_order_relaxed)) { /* under qlock */
        result = c->taken ? 0 : c->result;
        if (!c->taken && result < 0) {
            *item = c->ret;
            c->taken = true;
        }
        pthread_mutex_unlock(&c->qlock);
        return result;
    }
    /* Under qlock, which the drainer takes to append before it signals:
     * relaxed is enough (see struct pyproc_call). */
    if (arm)
        atomic_store_explicit(&c->state, CALL_PENDING, memory_order_relaxed);
    pthread_mutex_unlock(&c->qlock);
    return PYPROC__STREAM_EMPTY;
}

PYPROC_EXPORT int pyproc_next(pyproc_call *c, pyproc_msg **item)
{
    int r;

    if (c && c->map)
        return atomic_load_explicit(&c->cb, memory_order_relaxed) != CB_NONE
                   ? -EBUSY
                   : pyproc__map_next(c, item, NULL);
    if (!c || !item || !c->is_stream)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    if (atomic_load_explicit(&c->cb, memory_order_relaxed) != CB_NONE)
        return -EBUSY; /* its items go to a callback */
    while ((r = pyproc__stream_take(c, item, true)) == PYPROC__STREAM_EMPTY)
        pyproc__call_wait_state(c, INT64_MAX);
    return r;
}

static int gen_start(pyproc_pool *p, int ind, int *ret_ind, pyproc_call **stream, const char *ref,
                     const char *fmt, va_list ap)
{
    pyproc_call *c;
    int err;

    if (!stream || ind < -1)
        return -EINVAL;
    err = pyproc__call_start(p, ind, SHM_CALL_GEN, ref, fmt, ap, &c);
    if (err < 0)
        return err;
    if (ret_ind)
        *ret_ind = c->index;
    *stream = c;
    return 0;
}

PYPROC_EXPORT int pyproc_genv(pyproc_pool *p, const char *ref, pyproc_call **stream,
                              const char *fmt, va_list ap)
{
    return gen_start(p, -1, NULL, stream, ref, fmt, ap);
}

PYPROC_EXPORT int pyproc_gen(pyproc_pool *p, const char *ref, pyproc_call **stream, const char *fmt,
                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = gen_start(p, -1, NULL, stream, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_track_genv(pyproc_pool *p, int *ind, pyproc_call **stream, const char *ref,
                                    const char *fmt, va_list ap)
{
    return gen_start(p, -1, ind, stream, ref, fmt, ap);
}

PYPROC_EXPORT int pyproc_track_gen(pyproc_pool *p, int *ind, pyproc_call **stream, const char *ref,
                                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = gen_start(p, -1, ind, stream, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_ind_genv(pyproc_pool *p, int ind, const char *ref, pyproc_call **stream,
                                  const char *fmt, va_list ap)
{
    if (ind < 0)
        return -EINVAL;
    return gen_start(p, ind, NULL, stream, ref, fmt, ap);
}

PYPROC_EXPORT int pyproc_ind_gen(pyproc_pool *p, int ind, const char *ref, pyproc_call **stream,
                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = ind < 0 ? -EINVAL : gen_start(p, ind, NULL, stream, ref, fmt, ap);
    va_end(ap);
    return err;
}
