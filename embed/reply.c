/*
 * Answers to the host: results, errors, stream items, callbacks.  A
 * scalar result is encoded straight into the reply ring; every other reply
 * is encoded into the worker's scratch buffer and then written to the
 * ring.  Only the main thread writes, the ring's only producer.
 */
#include "bridge.h"

#include <errno.h>
#include <msgpuck.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "hot.h"
#include "worker.h"

/*
 * YIELD frames carry a batch of items.  A batch stops growing at this size
 * or age, and right after the stream's first item or an item that took
 * long to make: a slow generator gains nothing from batching, and its
 * reader should see each item as soon as it exists.
 */
#define BATCH_BYTES (64u << 10)
#define BATCH_NS 200000
#define SLOW_ITEM_NS 20000

/* The host asleep now will take a wake-up to send its next call (see
 * py_select()). */
static void note_host_asleep(struct worker *w)
{
    w->host_slept = atomic_load_explicit(&w->replies.ctl->consumer_wait, memory_order_relaxed) !=
                    SHM_AWAKE;
}

WORKER_HOT static int send_frame(uint16_t type, uint64_t id, const struct shm_buf *b)
{
    struct worker *w = &the_worker;

    worker_leave_if_forked();
    note_host_asleep(w);
    int err = shm_ring_write(&w->replies, type, id, b->data, b->len, w->spin_ns);
    if (err == -EPIPE)
        _exit(0); /* the host closed the ring: it is gone or done with us */
    return err;
}

int reply_frame(uint16_t type, uint64_t id, const struct shm_buf *b)
{
    return send_frame(type, id, b);
}

void reply_error_text(uint64_t id, int errnum, const char *type, const char *msg)
{
    struct shm_buf *b = &the_worker.out;
    size_t tl = strlen(type), ml = strlen(msg);
    int err = 0;
    char *p;

    shm_buf_reset(b);
    p = shm_buf_reserve(b, 32 + tl + ml, &err);
    if (!p)
        return;
    char *q = mp_encode_array(p, 4);
    q = mp_encode_uint(q, (uint64_t)errnum);
    q = mp_encode_str(q, type, (uint32_t)tl);
    q = mp_encode_str(q, msg, (uint32_t)ml);
    q = mp_encode_str(q, "", 0);
    b->len = (size_t)(q - b->data);
    send_frame(SHM_FRAME_ERROR, id, b);
}

/* ERROR from the (errno, type, message, traceback) that error_info() gives. */
static void reply_error_info(uint64_t id, PyObject *info)
{
    struct shm_buf *b = &the_worker.out;

    shm_buf_reset(b);
    if (PyTuple_Check(info) && pyproc_pack(b, info) == 0) {
        send_frame(SHM_FRAME_ERROR, id, b);
        return;
    }
    PyErr_Clear();
    reply_error_text(id, 0, "RuntimeError", "the error could not be encoded");
}

static void reply_exception(uint64_t id, PyObject *exc)
{
    PyObject *info = PyObject_CallOneArg(H.error_info, exc); /* new ref */

    if (info) {
        reply_error_info(id, info);
        Py_DECREF(info);
    } else {
        PyErr_Clear();
        reply_error_text(id, 0, "RuntimeError", "the error could not be described");
    }
}

void reply_current_error(uint64_t id)
{
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb); /* new refs */
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    if (value)
        reply_exception(id, value);
    else
        reply_error_text(id, 0, "RuntimeError", "an error without an exception");
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

static void reply_too_large(uint64_t id, size_t len)
{
    char msg[128];
    snprintf(msg, sizeof msg, "the value takes %zu bytes, over the pool's limit of %llu", len,
             (unsigned long long)the_worker.replies.max_msg);
    reply_error_text(id, EMSGSIZE, "ValueError", msg);
}

/*
 * A scalar (pyproc_pack_scalar()) goes straight into the ring, in one
 * frame: no scratch buffer to fill and copy.  False when it cannot (not a
 * scalar, the ring full or closed): send_frame() then sends it, waiting
 * for room or leaving as it must.
 */
static bool reply_scalar(uint16_t type, uint64_t id, PyObject *value)
{
    struct worker *w = &the_worker;
    size_t len = pyproc_pack_scalar_size(value);
    void *dst;

    /* A child forked by the function leaves before it writes the ring
     * (a reserve may write a wrap's padding there). */
    worker_leave_if_forked();
    if (!len || len > w->replies.max_msg || shm_ring_is_closed(&w->replies) ||
        shm_ring_reserve(&w->replies, (uint32_t)len, &dst) < 0)
        return false;
    len = pyproc_pack_scalar(dst, value);
    note_host_asleep(w);
    shm_ring_commit(&w->replies, type, 0, id, (uint32_t)len);
    shm_ring_notify(&w->replies);
    return true;
}

WORKER_HOT void reply_value(uint16_t type, uint64_t id, PyObject *value)
{
    struct shm_buf *b = &the_worker.out;
    size_t limit = b->limit;
    int rc;

    if (reply_scalar(type, id, value))
        return;

    /* Packed without the limit, so a value over it is told apart from one
     * that cannot be encoded at all, and answered with EMSGSIZE. */
    shm_buf_reset(b);
    b->limit = 0;
    rc = pyproc_pack(b, value);
    b->limit = limit;
    if (rc < 0) {
        reply_current_error(id);
        return;
    }
    if (b->len > the_worker.replies.max_msg || send_frame(type, id, b) == -EMSGSIZE)
        reply_too_large(id, b->len);
    if (b->len > (1u << 20))
        the_worker.trim_when_idle = true;
}

void reply_nil(uint16_t type, uint64_t id)
{
    struct shm_buf *b = &the_worker.out;
    int err = 0;
    char *p;

    shm_buf_reset(b);
    p = shm_buf_reserve(b, 1, &err);
    if (!p)
        return;
    *p = (char)0xc0;
    b->len = 1;
    send_frame(type, id, b);
}

/* ---- methods of _pyproc ---- */

static int parse_id(PyObject *o, uint64_t *id)
{
    *id = PyLong_AsUnsignedLongLong(o);
    return *id == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

static int id_and_value(PyObject *const *args, Py_ssize_t n, uint64_t *id, const char *usage)
{
    if (n != 2) {
        PyErr_Format(PyExc_TypeError, "%s", usage);
        return -1;
    }
    return parse_id(args[0], id);
}

/* send_result(id, value) */
PyObject *py_send_result(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    uint64_t id;

    (void)self;
    if (id_and_value(args, n, &id, "send_result(id, value)") < 0)
        return NULL;
    reply_value(SHM_FRAME_RESULT, id, args[1]);
    Py_RETURN_NONE;
}

/* send_error(id, exc) */
PyObject *py_send_error(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    uint64_t id;

    (void)self;
    if (id_and_value(args, n, &id, "send_error(id, exc)") < 0)
        return NULL;
    reply_exception(id, args[1]);
    Py_RETURN_NONE;
}

/* send_callback(id, payload): ask the host's callback; the answer comes
 * back as CALLBACK_REPLY.  Raises when the payload cannot travel. */
PyObject *py_send_callback(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    struct shm_buf *b = &the_worker.out;
    uint64_t id;

    (void)self;
    if (id_and_value(args, n, &id, "send_callback(id, payload)") < 0)
        return NULL;
    shm_buf_reset(b);
    if (pyproc_pack(b, args[1]) < 0)
        return NULL;
    if (send_frame(SHM_FRAME_CALLBACK, id, b) < 0)
        return PyErr_Format(PyExc_ValueError, "the callback payload is too large");
    Py_RETURN_NONE;
}

/* Start a batch: an array32 header whose count is patched at the end. */
static void batch_begin(struct shm_buf *b)
{
    int err = 0;
    char *p;

    shm_buf_reset(b);
    p = shm_buf_reserve(b, 5, &err);
    if (p) {
        p[0] = (char)0xdd;
        b->len = 5;
    }
}

static int batch_send(struct shm_buf *b, uint64_t id, uint32_t count)
{
    if (b->len < 5 || count == 0)
        return 0;
    mp_store_u32(b->data + 1, count);
    if (send_frame(SHM_FRAME_YIELD, id, b) == -EMSGSIZE) {
        PyErr_Format(PyExc_ValueError, "a generator item takes %zu bytes, over the limit", b->len);
        return -1;
    }
    return 0;
}

/* send_yield(id, item): one item of an async generator. */
PyObject *py_send_yield(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    struct shm_buf *b = &the_worker.out;
    uint64_t id;

    (void)self;
    if (id_and_value(args, n, &id, "send_yield(id, item)") < 0)
        return NULL;
    batch_begin(b);
    if (pyproc_pack(b, args[1]) < 0 || batch_send(b, id, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* send_end(id, _): the stream is over. */
PyObject *py_send_end(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    uint64_t id;

    (void)self;
    if (n < 1 || parse_id(args[0], &id) < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "send_end(id)");
    reply_nil(SHM_FRAME_END, id);
    Py_RETURN_NONE;
}

/*
 * pump(id, iterator, max) -> (sent, finished): run a plain generator for
 * up to max items in C, sending them in batches.  An exception from the
 * generator propagates after the items before it are sent.
 */
PyObject *py_pump(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    struct shm_buf *b = &the_worker.out;
    long sent = 0, max;
    bool finished = false, failed = false;
    uint64_t id;

    (void)self;
    if (n != 3 || parse_id(args[0], &id) < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "pump(id, it, max)");
    max = PyLong_AsLong(args[2]);
    if (max < 0 && PyErr_Occurred())
        return NULL;
    while (sent < max && !finished && !failed) {
        uint32_t count = 0;
        int64_t started = shm_now_ns(), last = started;
        bool flush = false;
        batch_begin(b);
        while (sent + count < max && b->len < BATCH_BYTES && !flush) {
            PyObject *item = PyIter_Next(args[1]); /* new ref */
            int64_t t = shm_now_ns();
            flush = t - last > SLOW_ITEM_NS || t - started > BATCH_NS || (sent == 0 && count == 0);
            last = t;
            if (!item) {
                finished = !PyErr_Occurred();
                failed = !finished;
                break;
            }
            int rc = pyproc_pack(b, item);
            Py_DECREF(item);
            if (rc < 0) {
                failed = true;
                break;
            }
            count++;
        }
        if (failed) {
            /* Keep the exception while the items before it go out. */
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb); /* new refs */
            batch_send(b, id, count);
            PyErr_Restore(t, v, tb); /* steals; replaces any error of the send */
            return NULL;
        }
        if (batch_send(b, id, count) < 0)
            return NULL;
        sent += count;
    }
    return Py_BuildValue("(lO)", sent, finished ? Py_True : Py_False);
}

/* ready(): tell the host this worker serves calls now. */
PyObject *py_ready(PyObject *self, PyObject *unused)
{
    PyObject *pid = PyLong_FromLong(getpid()); /* new ref */

    (void)self;
    (void)unused;
    if (!pid)
        return NULL;
    reply_value(SHM_FRAME_READY, 0, pid);
    Py_DECREF(pid);
    Py_RETURN_NONE;
}
