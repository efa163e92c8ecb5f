/*
 * Reading a worker's reply ring: whoever holds rx_lock drains it, be it a
 * caller spinning for its own answer or the service thread woken by the
 * doorbell, and hands each answer to the call it belongs to.
 */
#include <errno.h>
#include <msgpuck.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "msg.h"
#include "pool.h"

/* Read a string out of an already checked ERROR payload. */
static const char *str_or_empty(const char **p, uint32_t *len)
{
    if (mp_typeof(**p) == MP_STR)
        return mp_decode_str(p, len);
    mp_next(p);
    *len = 0;
    return "";
}

/*
 * ERROR [errno, type, message, traceback] becomes an error message whose
 * text is "type: message" and then the traceback.  A payload of any other
 * shape is -EBADMSG, and sets *malformed.
 */
static int error_answer(struct pp_worker *w, const uint8_t *data, size_t len,
                        pyproc_msg **ret, bool *malformed)
{
    pyproc_msg *copy = NULL;
    const char *p, *type, *msg, *tb;
    uint32_t tl, ml, bl;
    uint64_t code = 0;
    /*
     * The payload lies in a ring the worker can still write: decode a
     * checked private copy, so that what is read is what was checked.
     */
    int err = pyproc__msg_from_value(&copy, data, len);

    if (err == -ENOMEM)
        return err;
    p = err < 0 ? NULL : pyproc_msg_data(copy, NULL);
    if (!p || mp_typeof(*p) != MP_ARRAY || mp_decode_array(&p) != 4) {
        pyproc_msg_free(copy);
        pyproc__msg_error(ret, "worker %d sent a malformed error", w->index);
        *malformed = true;
        return -EBADMSG;
    }
    if (mp_typeof(*p) == MP_UINT)
        code = mp_decode_uint(&p);
    else
        mp_next(&p);
    type = str_or_empty(&p, &tl);
    msg = str_or_empty(&p, &ml);
    tb = str_or_empty(&p, &bl);
    pyproc__msg_error(ret, "%.*s: %.*s%s%.*s", (int)tl, type, (int)ml, msg,
                      bl ? "\n" : "", (int)bl, tb);
    pyproc_msg_free(copy);
    if (code == ENOENT)
        return -ENOENT;
    if (code == EMSGSIZE)
        return -EMSGSIZE;
    if (code == ECANCELED)
        return -ECANCELED;
    if (code == ETIMEDOUT)
        return -ETIMEDOUT;
    return PYPROC_EREMOTE;
}

/*
 * RESULT, ERROR or END: the call is over.  Returns -EBADMSG when the
 * payload is not what the worker must send, else 0.
 */
static int answer(struct pp_worker *w, const struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_take(w, m->id);
    pyproc_msg *ret = NULL;
    bool malformed = false;
    int result = 0;

    if (!c)
        return 0; /* its caller gave up on it */
    if (!atomic_load_explicit(&w->serving, memory_order_relaxed) && w->published)
        atomic_store_explicit(&w->serving, true, memory_order_relaxed);
    if (m->type == SHM_FRAME_END) {
        /* nothing more to say */
    } else if (m->type == SHM_FRAME_RESULT) {
        result = pyproc__msg_from_value(&ret, m->payload, m->len);
        malformed = result == -EBADMSG;
        if (malformed)
            pyproc__msg_error(&ret, "worker %d sent a malformed value", w->index);
    } else {
        result = error_answer(w, m->payload, m->len, &ret, &malformed);
    }
    pyproc__call_complete(c, result, ret);
    return malformed ? -EBADMSG : 0;
}

/* YIELD: items for a stream.  Returns -EBADMSG for a malformed batch. */
static int stream_items(struct pp_worker *w, const struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_find(w, m->id);
    int err = 0;

    if (!c)
        return 0;
    if (c->is_stream)
        err = pyproc__stream_deliver(c, m->payload, m->len);
    pyproc__call_unref(c);
    return err;
}

static void ready(struct pp_worker *w)
{
    pthread_mutex_lock(&w->pool->lock);
    w->ready_ns = shm_now_ns();
    atomic_store(&w->ready, true);
    pthread_cond_broadcast(&w->pool->changed);
    pthread_mutex_unlock(&w->pool->lock);
}

void pyproc__drain(struct pp_worker *w)
{
    struct shm_msg m;
    bool answered = false;
    int r;

    while ((r = shm_ring_read(&w->rx, &m)) == 1) {
        int bad = 0;

        answered = true;
        switch (m.type) {
        case SHM_FRAME_RESULT:
        case SHM_FRAME_ERROR:
        case SHM_FRAME_END:
            bad = answer(w, &m);
            break;
        case SHM_FRAME_YIELD:
            bad = stream_items(w, &m);
            break;
        case SHM_FRAME_CALLBACK:
            bad = pyproc__callback_push(w, m.id, m.payload, m.len);
            break;
        case SHM_FRAME_READY:
            ready(w);
            break;
        default:
            break;
        }
        shm_ring_done(&w->rx, &m);
        /* Python's values always encode well: a malformed one means the
         * worker is as broken as one that writes a bad frame. */
        if (bad == -EBADMSG) {
            r = bad;
            break;
        }
    }
    if (answered) /* for the spin choice in host/call.c */
        atomic_store_explicit(&w->last_answer_ns, shm_now_ns(), memory_order_relaxed);
    if (r < 0 && !shm_ring_is_closed(&w->rx)) {
        /* A worker that corrupts its ring cannot be trusted with more
         * work: close it, which fails its calls when it is reaped. */
        fprintf(stderr, "pyproc %s: worker %d wrote a bad frame; stopping it\n",
                w->pool->name, w->index);
        shm_ring_close(&w->rx);
        shm_ring_close(&w->tx);
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
    }
}

void pyproc__poll_enter(struct pp_worker *w)
{
    if (atomic_fetch_add(&w->pollers, 1) == 0)
        atomic_store(&w->rx.ctl->consumer_wait, SHM_AWAKE);
}

/*
 * The last poller to leave asks for the doorbell again.  If an answer
 * slipped in before that, nobody would ring for it: ring our own doorbell
 * so the service thread takes it.
 */
void pyproc__poll_leave(struct pp_worker *w)
{
    if (atomic_fetch_sub(&w->pollers, 1) != 1)
        return;
    if (shm_ring_sleep_begin(&w->rx, SHM_SLEEP_DOORBELL) && !shm_ring_is_closed(&w->rx)) {
        uint64_t one = 1;
        if (write(w->rx.doorbell_fd, &one, sizeof one) < 0) {
            /* Full counter: the service thread is due to wake anyway. */
        }
    }
}
