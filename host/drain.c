/*
 * Reading a worker's reply ring: whoever holds rx_lock drains it, be it a
 * caller spinning for its own answer or the service thread woken by the
 * doorbell, and hands each answer to the call it belongs to.
 */
#include <errno.h>
#include <msgpuck.h>
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
 * text is "type: message" and then the traceback.
 */
static int error_answer(const uint8_t *data, size_t len, pyproc_msg **ret)
{
    const char *p = (const char *)data;
    const char *type, *msg, *tb;
    uint32_t tl, ml, bl;
    uint64_t code = 0;

    if (pyproc__msgpack_check(p, len) < 0 || mp_typeof(*p) != MP_ARRAY ||
        mp_decode_array(&p) != 4) {
        pyproc__msg_error(ret, "the worker sent a malformed error");
        return PYPROC_EREMOTE;
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

/* RESULT, ERROR or END: the call is over. */
static void answer(struct pp_worker *w, const struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_take(w, m->id);
    pyproc_msg *ret = NULL;
    int result = 0;

    if (!c)
        return; /* its caller gave up on it */
    if (!atomic_load_explicit(&w->serving, memory_order_relaxed) && w->published)
        atomic_store_explicit(&w->serving, true, memory_order_relaxed);
    if (m->type == SHM_FRAME_END) {
        /* nothing more to say */
    } else if (m->type == SHM_FRAME_RESULT) {
        result = pyproc__msg_from_value(&ret, m->payload, m->len);
        if (result == -EBADMSG)
            pyproc__msg_error(&ret, "worker %d sent a malformed value", w->index);
    } else {
        result = error_answer(m->payload, m->len, &ret);
    }
    pyproc__call_complete(c, result, ret);
}

static void stream_items(struct pp_worker *w, const struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_find(w, m->id);

    if (!c)
        return;
    if (c->is_stream)
        pyproc__stream_deliver(c, m->payload, m->len);
    pyproc__call_unref(c);
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
    int r;

    while ((r = shm_ring_read(&w->rx, &m)) == 1) {
        switch (m.type) {
        case SHM_FRAME_RESULT:
        case SHM_FRAME_ERROR:
        case SHM_FRAME_END:
            answer(w, &m);
            break;
        case SHM_FRAME_YIELD:
            stream_items(w, &m);
            break;
        case SHM_FRAME_CALLBACK:
            pyproc__callback_push(w, m.id, m.payload, m.len);
            break;
        case SHM_FRAME_READY:
            ready(w);
            break;
        default:
            break;
        }
        shm_ring_done(&w->rx, &m);
    }
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
