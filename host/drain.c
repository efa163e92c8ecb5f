/*
 * Reading a worker's reply ring: whoever holds rx_lock drains it, be it a
 * caller spinning for its own answer or the service thread woken by the
 * doorbell, and hands each answer to the call it belongs to.
 *
 * What is copied where, and why.  The reply ring is memory the worker can
 * write at any moment, also while we read it: a value parsed where it
 * lies can change between the check of a length and its use, and a
 * worker that flips a type byte at the right time makes the parser trust
 * a length the worker chose.  So nothing is parsed in place.  Each
 * payload is copied into private memory once, the copy is checked as one
 * well-formed msgpack value, and only the copy is decoded:
 *
 * - RESULT: straight into the pyproc_msg its caller gets
 *   (pyproc__msg_from_value() copies, then checks the copy), which is the
 *   copy a caller needs anyway, so the hot path copies once.
 * - ERROR, YIELD, CALLBACK: into the ring's reassembly buffer
 *   (shm_ring_copy_out(), which also releases the frame), checked there,
 *   then decoded: into an error text, into one message per stream item,
 *   into the callback's request.
 * - A message that came in fragments already lies in private memory, the
 *   reassembly buffer, where shm_ring_read() copied it fragment by
 *   fragment; shm_ring_copy_out() leaves it there.
 * - READY: its payload is not read.
 * Frame headers are read once each, into locals, by shm/ring.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../shm/mpvalid.h"
#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "chunk.h"
#include "drain.h"

/*
 * ERROR [errno, type, message, traceback] becomes an error message whose
 * text is "type: message" and then the traceback.  data is private and
 * holds one checked value (see private_payload()); a value of any other
 * shape is -EBADMSG, and sets *malformed.
 */
static int error_answer(struct pp_worker *w, const uint8_t *data, size_t len, pyproc_msg **ret,
                        bool *malformed)
{
    struct pyproc__wire_error e;

    if (!data || pyproc__wire_error_read((const char *)data, len, &e) < 0) {
        pyproc__msg_error(ret, "worker %d sent a malformed error", w->index);
        *malformed = true;
        return -EBADMSG;
    }
    pyproc__msg_error(ret, "%.*s: %.*s%s%.*s", (int)e.type_len, e.type, (int)e.message_len,
                      e.message, e.traceback_len ? "\n" : "", (int)e.traceback_len, e.traceback);
    uint64_t code = e.code;
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
 * Copy m's payload out of the ring unless it is private already, and
 * check that it is one well-formed value.  Returns the private bytes,
 * or NULL with *err set to -EBADMSG or -ENOMEM.
 */
static const uint8_t *private_payload(struct pp_worker *w, struct shm_msg *m, int *err)
{
    *err = pyproc__chan_copy_out(w, m);
    if (*err < 0)
        return NULL;
    *err = shm_mp_check(m->payload, m->len);
    return *err < 0 ? NULL : m->payload;
}

/* The copy alone, for a payload whose reader checks it as it walks it
 * (a YIELD batch, item by item: pyproc__stream_deliver()). */
static const uint8_t *private_copy(struct pp_worker *w, struct shm_msg *m, int *err)
{
    *err = pyproc__chan_copy_out(w, m);
    return *err < 0 ? NULL : m->payload;
}

static int take_buffer(void *ctx, uint64_t token, uint64_t off, uint64_t len, pyproc_buf **ret)
{
    int fd, err = pyproc__recv_buffer(ctx, token, &fd);

    if (err < 0)
        return -EBADFD;
    err = pyproc__buf_adopt(((struct pp_worker *)ctx)->pool->id, fd, off, len, ret);
    if (err < 0)
        close(fd);
    return err == -ENOMEM ? err : err < 0 ? -EBADFD : 0;
}

int pyproc__take_buffers(struct pp_worker *w, pyproc_msg *m)
{
    int err = pyproc__msg_take_buffers(m, take_buffer, w);

    return err == -ENOMEM || err == 0 ? err : -EBADFD;
}

/*
 * RESULT, ERROR or END: the call is over.  Returns -EBADMSG when the
 * payload is not what the worker must send, -ENOMEM, else 0.
 */
static int answer(struct pp_worker *w, struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_take(w, m->id);
    pyproc_msg *ret = NULL;
    bool malformed = false, bad_buffer = false;
    int result = 0;

    if (!c)
        return 0; /* its caller gave up on it */
    if (!atomic_load_explicit(&w->serving, memory_order_relaxed) && w->published)
        atomic_store_explicit(&w->serving, true, memory_order_relaxed);
    if (m->type == SHM_FRAME_END) {
        /* nothing more to say */
    } else if (m->type == SHM_FRAME_RESULT) {
        /* Copies out of the ring, then checks the copy (see the top). */
        result = pyproc__msg_from_value(&ret, m->payload, m->len);
        if (result == 0 && (result = pyproc__take_buffers(w, ret)) < 0) {
            pyproc_msg_free(ret);
            ret = NULL;
            bad_buffer = result == -EBADFD;
            pyproc__msg_error(&ret, "worker %d %s", w->index,
                              bad_buffer ? "sent a shared buffer it may not share"
                                         : "answered, but there was no memory for its buffers");
            if (bad_buffer)
                result = PYPROC_EWORKER;
        }
        malformed = result == -EBADMSG;
        if (malformed)
            pyproc__msg_error(&ret, "worker %d sent a malformed value", w->index);
    } else {
        const uint8_t *p = private_payload(w, m, &result);
        malformed = result == -EBADMSG;
        if (result == 0 || malformed)
            result = error_answer(w, p, m->len, &ret, &malformed);
        else
            pyproc__msg_error(&ret, "worker %d: no memory for its error", w->index);
    }
    pyproc__call_complete(c, result, ret);
    return malformed ? -EBADMSG : bad_buffer ? -EBADFD : 0;
}

/* YIELD: items for a stream.  Returns -EBADMSG for a malformed batch and
 * -EPROTO for one past the stream's window. */
static int stream_items(struct pp_worker *w, struct shm_msg *m)
{
    pyproc_call *c = pyproc__call_find(w, m->id);
    const uint8_t *p;
    int err = 0;

    if (!c)
        return 0;
    if (c->is_stream && (p = private_copy(w, m, &err)))
        err = pyproc__stream_deliver(w, c, p, m->len);
    pyproc__call_unref(c);
    return err;
}

/* CALLBACK: a request for the host's callback. */
static int callback(struct pp_worker *w, struct shm_msg *m)
{
    int err;
    const uint8_t *p = private_payload(w, m, &err);

    return p ? pyproc__callback_push(w, m->id, p, m->len) : err;
}

static void ready(struct pp_worker *w)
{
    pthread_mutex_lock(&w->pool->lock);
    w->ready_ns = shm_now_ns();
    /* Release: pairs with the acquire loads of the waiters in workers.c
     * (which also hold pool->lock). */
    atomic_store_explicit(&w->ready, true, memory_order_release);
    pthread_cond_broadcast(&w->pool->changed);
    pthread_mutex_unlock(&w->pool->lock);
}

/* Hand on one message; returns what makes the worker hostile, else 0. */
static int dispatch(struct pp_worker *w, struct shm_msg *m)
{
    switch (m->type) {
    case SHM_FRAME_RESULT:
    case SHM_FRAME_ERROR:
    case SHM_FRAME_END:
        return answer(w, m);
    case SHM_FRAME_YIELD:
        return stream_items(w, m);
    case SHM_FRAME_MAP_ITEMS:
        return pyproc__chunk_deliver(w, m);
    case SHM_FRAME_CALLBACK:
        return callback(w, m);
    case SHM_FRAME_READY:
        ready(w);
        return 0;
    default:
        return 0;
    }
}

bool pyproc__drain_batch(struct pp_worker *w, unsigned max_msgs, unsigned *ret_read)
{
    /*
     * Stop at what the ring held when we began: the frames after it may
     * keep coming as fast as we read, and the drainer has others to
     * serve.  A read in progress may go one ring's worth past it.
     */
    uint64_t until = pyproc__chan_mark(w);
    struct shm_msg m;
    unsigned n = 0;
    int r = 0;

    /* The first read happens whatever the positions say, so that a tail
     * the worker moved back is found out by shm_ring_read(). */
    while (n < max_msgs && (n == 0 || pyproc__chan_before(w, until)) &&
           (r = pyproc__chan_read(w, &m)) == 1) {
        n++;
        int bad = dispatch(w, &m);
        pyproc__chan_done(w, &m);
        /* Python's values always encode well: a malformed one means the
         * worker is as broken as one that writes a bad frame. */
        if (bad == -EBADMSG || bad == -EPROTO || bad == -EBADFD) {
            r = bad;
            break;
        }
    }
    if (r < 0)
        pyproc__worker_condemn(w, r == -EPROTO   ? "sent stream items past its credit"
                                  : r == -EBADFD ? "sent a shared buffer it may not share "
                                                   "(missing, not sealed, or too small)"
                                                 : "wrote a bad frame");
    if (ret_read)
        *ret_read = n;
    return pyproc__chan_has_replies(w) && !pyproc__chan_closed(w);
}

unsigned pyproc__drain(struct pp_worker *w)
{
    unsigned n;

    pyproc__drain_batch(w, UINT_MAX, &n);
    return n;
}
