/*
 * Streams: the items of a generator, handed out one by one as they come.
 *
 * The worker sends items in YIELD frames (a msgpack array of one or more
 * items each) and may have SHM_STREAM_WINDOW items unread by our reader at
 * any time; as the reader takes them we give credit back in CREDIT frames,
 * half a window at a time.
 */
#include <errno.h>
#include <msgpuck.h>
#include <stdlib.h>

#include "../shm/futex.h"
#include "../shm/mpvalid.h"
#include "msg.h"
#include "pool.h"

/*
 * Split a YIELD's array into messages and queue them.  On the drainer.
 * Each item is found with the bounds-checked reader and then copied and
 * checked on its own (pyproc__msg_from_value()), so nothing the worker
 * writes meanwhile can make us read outside the frame.
 */
int pyproc__stream_deliver(pyproc_call *c, const uint8_t *items, size_t len)
{
    const char *p = (const char *)items, *end = p + len;
    pyproc_msg *first = NULL, **link = &first, *last = NULL;
    int err = 0;
    uint32_t n;

    /* The worker writes every batch as an array32 (embed/reply.c). */
    if (len < 5 || (uint8_t)*p != 0xdd)
        return -EBADMSG;
    n = mp_load_u32(&(const char *){p + 1});
    p += 5;
    for (; n > 0 && err == 0; n--) {
        const char *start = p;
        pyproc_msg *m;
        err = shm_mp_next(&p, end);
        if (err == 0)
            err = pyproc__msg_from_value(&m, start, (size_t)(p - start));
        if (err == 0) {
            *pyproc__msg_link(m) = NULL;
            *link = last = m;
            link = pyproc__msg_link(m);
        }
    }
    if (err == 0 && p != end)
        err = -EBADMSG;
    if (!first)
        return err == -EBADMSG ? err : 0;
    pthread_mutex_lock(&c->qlock);
    if (c->tail)
        *pyproc__msg_link(c->tail) = first;
    else
        c->head = first;
    c->tail = last;
    pthread_mutex_unlock(&c->qlock);
    pyproc__call_signal(c);
    return err == -EBADMSG ? err : 0;
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

/* Give the worker back the credit for items the reader took. */
static void give_credit(pyproc_call *c)
{
    char buf[16], *end;

    if (++c->since_credit < SHM_STREAM_WINDOW / 2)
        return;
    end = mp_encode_uint(buf, c->since_credit);
    c->since_credit = 0;
    pyproc__send(c->worker, SHM_FRAME_CREDIT, c->id, buf, (size_t)(end - buf));
}

PYPROC_EXPORT int pyproc_next(pyproc_call *c, pyproc_msg **item)
{
    if (!c || !item || !c->is_stream)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    for (;;) {
        pthread_mutex_lock(&c->qlock);
        pyproc_msg *it = c->head;
        if (it) {
            c->head = *pyproc__msg_link(it);
            if (!c->head)
                c->tail = NULL;
            bool ended = c->ended;
            pthread_mutex_unlock(&c->qlock);
            *pyproc__msg_link(it) = NULL;
            *item = it;
            if (!ended)
                give_credit(c);
            return 1;
        }
        if (c->ended) {
            int result = c->taken ? 0 : c->result;
            if (!c->taken && result < 0) {
                *item = c->ret;
                c->taken = true;
            }
            pthread_mutex_unlock(&c->qlock);
            return result;
        }
        atomic_store(&c->state, CALL_PENDING);
        pthread_mutex_unlock(&c->qlock);
        pyproc__call_wait_state(c, INT64_MAX);
    }
}

static int gen_start(pyproc_pool *p, int ind, int *ret_ind, pyproc_call **stream,
                     const char *ref, const char *fmt, va_list ap)
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

PYPROC_EXPORT int pyproc_gen(pyproc_pool *p, const char *ref, pyproc_call **stream,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = gen_start(p, -1, NULL, stream, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_track_genv(pyproc_pool *p, int *ind, pyproc_call **stream,
                                    const char *ref, const char *fmt, va_list ap)
{
    return gen_start(p, -1, ind, stream, ref, fmt, ap);
}

PYPROC_EXPORT int pyproc_track_gen(pyproc_pool *p, int *ind, pyproc_call **stream,
                                   const char *ref, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = gen_start(p, -1, ind, stream, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_ind_genv(pyproc_pool *p, int ind, const char *ref,
                                  pyproc_call **stream, const char *fmt, va_list ap)
{
    if (ind < 0)
        return -EINVAL;
    return gen_start(p, ind, NULL, stream, ref, fmt, ap);
}

PYPROC_EXPORT int pyproc_ind_gen(pyproc_pool *p, int ind, const char *ref,
                                 pyproc_call **stream, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = ind < 0 ? -EINVAL : gen_start(p, ind, NULL, stream, ref, fmt, ap);
    va_end(ap);
    return err;
}
