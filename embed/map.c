/*
 * A map's chunks: MAP_CHUNK [ref, first, [[args, kwargs]...]] runs the
 * function once per item and answers each by its index.
 *
 * The reference is resolved once per chunk, and plain functions run one
 * after another straight from the frame, in C, with no task per item.
 * Their results are packed as they come into MAP_ITEMS batches, sent when
 * a batch grows large or old, so a host waiting on the first items of a
 * long chunk does not wait for the last.  Items whose function returns an
 * awaitable (a coroutine function) are gathered and handed to the hub's
 * start_map(), which runs them as concurrent tasks and sends each result
 * on its own, then END.
 *
 * The whole chunk counts as one running call (running_call, the stop
 * table): a cancel or timeout interrupts the item running now, or is found
 * between items, and the chunk ends with ERROR; the host fails the items
 * it has not answered with it.
 */
#include "bridge.h"

#include <errno.h>
#include <msgpuck.h>
#include <string.h>

#include "convert.h"
#include "worker.h"
#include "../shm/mpvalid.h"

/* A batch of results is sent at this size or age. */
#define RESULTS_BYTES (64u << 10)
#define RESULTS_NS 200000

/* The head of a MAP_ITEMS: [uint64 busy_ns, array32 count], both filled
 * in when it is sent. */
#define HEAD_BYTES 15

/* A MAP_ITEMS being packed; its own buffer, since user code and the
 * replies it triggers use the worker's scratch. */
struct results {
    struct shm_buf b;
    uint32_t count;
    int64_t started;
};

static struct results R;

/* Start a MAP_ITEMS in b; false when out of memory. */
static bool head_begin(struct shm_buf *b)
{
    int err = 0;
    char *p;

    shm_buf_reset(b);
    p = shm_buf_reserve(b, HEAD_BYTES, &err);
    if (!p)
        return false;
    memset(p, 0, HEAD_BYTES);
    p[0] = (char)0x92;
    p[1] = (char)0xcf;  /* uint64 */
    p[10] = (char)0xdd; /* array32 */
    b->len = HEAD_BYTES;
    return true;
}

static void head_seal(struct shm_buf *b, uint64_t busy_ns, uint32_t count)
{
    mp_store_u64(b->data + 2, busy_ns);
    mp_store_u32(b->data + 11, count);
}

static void results_begin(struct results *r)
{
    head_begin(&r->b);
    r->count = 0;
    r->started = shm_now_ns();
}

/* Send what the batch holds, with the time its items took (the host
 * sizes chunks by it). */
static void results_send(struct results *r, uint64_t id)
{
    if (r->count && r->b.len >= HEAD_BYTES) {
        head_seal(&r->b, (uint64_t)(shm_now_ns() - r->started), r->count);
        reply_frame(SHM_FRAME_MAP_ITEMS, id, &r->b);
    }
    results_begin(r);
}

/* Append the head [index, ok, of an entry.  0 or -1 (no memory). */
static int entry_head(struct shm_buf *b, uint64_t index, bool ok)
{
    int err = 0;
    char *p = shm_buf_reserve(b, 16, &err), *q;

    if (!p)
        return -1;
    q = mp_encode_array(p, 3);
    q = mp_encode_uint(q, index);
    q = mp_encode_bool(q, ok);
    b->len += (size_t)(q - p);
    return 0;
}

/* An error entry of plain strings, for errors that cannot be described. */
static void entry_error_text(struct shm_buf *b, uint64_t index, int errnum, const char *type,
                             const char *msg)
{
    size_t tl = strlen(type), ml = strlen(msg), start = b->len;
    int err = 0;
    char *p;

    if (entry_head(b, index, false) < 0 || !(p = shm_buf_reserve(b, 32 + tl + ml, &err))) {
        b->len = start;
        return;
    }
    char *q = mp_encode_array(p, 4);
    q = mp_encode_uint(q, (uint64_t)errnum);
    q = mp_encode_str(q, type, (uint32_t)tl);
    q = mp_encode_str(q, msg, (uint32_t)ml);
    q = mp_encode_str(q, "", 0);
    b->len += (size_t)(q - p);
}

/* An error entry for exception exc: (errno, type, message, traceback). */
static void entry_exception(struct shm_buf *b, uint64_t index, PyObject *exc)
{
    PyObject *info = PyObject_CallOneArg(H.error_info, exc); /* new ref */
    size_t start = b->len;

    if (info && entry_head(b, index, false) == 0 && pyproc_pack(b, info) == 0) {
        Py_DECREF(info);
        return;
    }
    Py_XDECREF(info);
    PyErr_Clear();
    b->len = start;
    entry_error_text(b, index, 0, "RuntimeError", "the error could not be described");
}

/* An error entry for the exception being raised now. */
static void entry_current_error(struct shm_buf *b, uint64_t index)
{
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb); /* new refs */
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    if (value)
        entry_exception(b, index, value);
    else
        entry_error_text(b, index, 0, "RuntimeError", "an error without an exception");
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/*
 * A value entry, or an error entry when the value cannot travel: it
 * cannot be encoded, or it is over the pool's limit on its own.  Returns
 * false when the entry fits only in a batch of its own (the caller sends
 * the batch before it and tries again).
 */
static bool entry_value(struct shm_buf *b, uint64_t index, PyObject *value, bool alone)
{
    size_t start = b->len, limit = b->limit, max = the_worker.replies.max_msg;
    int rc;

    if (entry_head(b, index, true) < 0) {
        entry_error_text(b, index, ENOMEM, "MemoryError", "no memory for the result");
        return true;
    }
    /* Packed without the limit, so an oversized value is told apart. */
    b->limit = 0;
    rc = pyproc_pack(b, value);
    b->limit = limit;
    if (rc < 0) {
        b->len = start;
        entry_current_error(b, index);
    } else if (b->len > max && !alone) {
        b->len = start;
        return false;
    } else if (b->len > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "the value takes %zu bytes, over the pool's limit of %zu",
                 b->len - start, max);
        b->len = start;
        entry_error_text(b, index, EMSGSIZE, "ValueError", msg);
    }
    return true;
}

static void add_value(struct results *r, uint64_t id, uint64_t index, PyObject *value)
{
    if (!entry_value(&r->b, index, value, r->count == 0)) {
        results_send(r, id);
        entry_value(&r->b, index, value, true);
    }
    r->count++;
}

/* The fixed part of MAP_CHUNK [ref, first, array of items]. */
static bool chunk_header(const char **p, const char **ref, uint32_t *ref_len, uint64_t *first,
                         uint32_t *count)
{
    if (mp_typeof(**p) != MP_ARRAY || mp_decode_array(p) != 3 || mp_typeof(**p) != MP_STR)
        return false;
    *ref = mp_decode_str(p, ref_len);
    if (mp_typeof(**p) != MP_UINT)
        return false;
    *first = mp_decode_uint(p);
    if (mp_typeof(**p) != MP_ARRAY)
        return false;
    *count = mp_decode_array(p);
    return true;
}

/* Items with at most this many positional arguments are called without
 * a tuple (vectorcall); others through one. */
#define VECTOR_ARGS 8

/* Call fn through a tuple of the positional arguments at *p (an array),
 * then the keywords.  A new reference, or NULL with an exception set. */
static PyObject *call_tuple(PyObject *fn, bool wants_hub, const char *p, const char *end)
{
    PyObject *args = NULL, *kwargs = NULL, *full = NULL, *res = NULL;

    if ((args = pyproc_unpack_tuple(&p, end)) && (kwargs = pyproc_unpack_kwargs(&p, end)) &&
        (!wants_hub || (full = serve_with_hub(args))))
        res = PyObject_Call(fn, full ? full : args, PyDict_GET_SIZE(kwargs) ? kwargs : NULL);
    Py_XDECREF(full);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    return res;
}

/*
 * Call fn on one item [args, kwargs] at p, which ends at end (checked
 * whole).  A new reference, or NULL with an exception set.  The usual
 * item, a few positional arguments, is called with them in an array on
 * the stack: no tuple to make, and no dict for keywords it does not have.
 */
static PyObject *call_item(PyObject *fn, bool wants_hub, const char *p, const char *end)
{
    PyObject *argv[VECTOR_ARGS + 1], *kwargs = NULL, *res = NULL;
    const char *args;
    uint32_t n;
    size_t k = 0;

    if (mp_typeof(*p) != MP_ARRAY || mp_decode_array(&p) != 2 || mp_typeof(*p) != MP_ARRAY) {
        PyErr_SetString(PyExc_ValueError, "malformed map item");
        return NULL;
    }
    args = p;
    if ((n = mp_decode_array(&p)) > VECTOR_ARGS)
        return call_tuple(fn, wants_hub, args, end);
    if (wants_hub)
        argv[k++] = H.hub; /* borrowed: the hub outlives the call */
    for (uint32_t i = 0; i < n; i++, k++)
        if (!(argv[k] = pyproc_unpack(&p, end)))
            goto out;
    if ((uint8_t)*p == 0x80) /* no keywords: the usual case */
        res = PyObject_Vectorcall(fn, argv, k, NULL);
    else if ((kwargs = pyproc_unpack_kwargs(&p, end)))
        res = PyObject_VectorcallDict(fn, argv, k, kwargs);
out:
    for (size_t i = wants_hub; i < k; i++)
        Py_DECREF(argv[i]);
    Py_XDECREF(kwargs);
    return res;
}

/* The host asked to stop call id (SHM_INTERRUPT_*), or 0. */
static uint32_t stop_asked(uint64_t id)
{
    if (!worker_control_pending())
        return 0;
    return shm_seg_stop_lookup(the_worker.seg.hdr, id);
}

/* The chunk was stopped after it started: the host fails what is left. */
static void reply_stopped_midway(uint64_t id, uint32_t why)
{
    if (why == SHM_INTERRUPT_TIMEOUT)
        reply_error_text(id, ETIMEDOUT, "pyproc.CallTimeout",
                         "the map's chunk ran past the pool's call timeout");
    else
        reply_error_text(id, ECANCELED, "asyncio.exceptions.CancelledError",
                         "the map was cancelled");
}

/* Close the coroutines of a chunk that will not run them. */
static void drop_pending(PyObject *pending)
{
    for (Py_ssize_t i = 0; pending && i < PyList_GET_SIZE(pending); i++) {
        PyObject *aw = PyTuple_GET_ITEM(PyList_GET_ITEM(pending, i), 1);
        PyObject *r = PyObject_HasAttrString(aw, "close") ? PyObject_CallMethod(aw, "close", NULL)
                                                          : NULL; /* new ref */
        if (!r)
            PyErr_Clear();
        Py_XDECREF(r);
    }
}

/* Keep (index, awaitable) for start_map(); false with an exception set. */
static bool keep_pending(PyObject **pending, uint64_t index, PyObject *aw)
{
    PyObject *pair;

    if (!*pending && !(*pending = PyList_New(0)))
        return false;
    pair = Py_BuildValue("(KO)", (unsigned long long)index, aw); /* new ref */
    if (!pair)
        return false;
    int rc = PyList_Append(*pending, pair);
    Py_DECREF(pair);
    return rc == 0;
}

/* Hand the chunk's awaitables to the hub, which answers them and ends it. */
static void start_pending(uint64_t id, PyObject *pending)
{
    PyObject *idobj = PyLong_FromUnsignedLongLong(id); /* new ref */
    PyObject *r = idobj ? PyObject_CallFunctionObjArgs(H.start_map, idobj, pending, NULL)
                        : NULL; /* new ref */

    if (!r) {
        drop_pending(pending);
        reply_current_error(id);
    }
    Py_XDECREF(r);
    Py_XDECREF(idobj);
}

/*
 * Run the items.  Returns why the host stopped the chunk (0: it ran
 * through); *pending gets the awaitables left to run.
 */
static uint32_t run_items(uint64_t id, PyObject *entry, uint64_t first, uint32_t count,
                          const char *p, const char *end, PyObject **pending)
{
    PyObject *fn = PyTuple_GET_ITEM(entry, 0);
    bool wants_hub = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1)) == 1;
    uint32_t stopped = 0;

    for (uint32_t i = 0; i < count && !stopped; i++) {
        const char *item = p;
        uint64_t index = first + i;
        mp_next(&p); /* the payload was checked whole */
        if ((stopped = stop_asked(id)))
            break;
        PyObject *res = call_item(fn, wants_hub, item, end); /* new ref */
        if (!res && (stopped = stop_asked(id))) {
            PyErr_Clear(); /* what the interrupt raised */
        } else if (!res) {
            entry_current_error(&R.b, index);
            R.count++;
        } else if (serve_is_awaitable(res)) {
            if (!keep_pending(pending, index, res)) {
                entry_current_error(&R.b, index);
                R.count++;
            }
        } else {
            add_value(&R, id, index, res);
        }
        Py_XDECREF(res);
        /* The clock every 16 items: a chunk is sized to take about half
         * a millisecond, so its answers are never held much longer. */
        if (R.b.len >= RESULTS_BYTES || ((i & 15) == 15 && shm_now_ns() - R.started > RESULTS_NS))
            results_send(&R, id);
    }
    return stopped;
}

void serve_map(uint64_t id, const char *p, const char *end)
{
    const char *chk = p, *ref;
    uint32_t ref_len, count, stopped;
    uint64_t first;
    PyObject *entry, *pending = NULL;

    if (shm_mp_next(&chk, end) < 0 || !chunk_header(&p, &ref, &ref_len, &first, &count)) {
        reply_error_text(id, EBADMSG, "ValueError", "malformed map chunk");
        return;
    }
    entry = serve_lookup(ref, ref_len); /* borrowed */
    if (!entry) {
        reply_current_error(id);
        return;
    }
    Py_INCREF(entry); /* user code may change the cache */
    stopped = serve_enter(id);
    if (stopped) {
        serve_leave();
        serve_reply_stopped(id, stopped);
        Py_DECREF(entry);
        return;
    }
    results_begin(&R);
    stopped = run_items(id, entry, first, count, p, end, &pending);
    serve_leave();
    results_send(&R, id);
    if (R.b.cap > 4 * RESULTS_BYTES)
        shm_buf_free(&R.b); /* a huge value went by: do not keep its room */
    if (stopped) {
        drop_pending(pending);
        reply_stopped_midway(id, stopped);
    } else if (pending) {
        start_pending(id, pending);
    } else {
        reply_nil(SHM_FRAME_END, id);
    }
    Py_XDECREF(pending);
    Py_DECREF(entry);
}

/* send_map_item(id, index, ok, value or exception): one item of a chunk's
 * awaitables, answered on its own. */
PyObject *py_send_map_item(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    struct shm_buf *b = &the_worker.out;
    unsigned long long id, index;

    (void)self;
    if (n != 4)
        return PyErr_Format(PyExc_TypeError, "send_map_item(id, index, ok, value)");
    id = PyLong_AsUnsignedLongLong(args[0]);
    index = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (!head_begin(b))
        return PyErr_NoMemory();
    /* Its time is the loop's, shared with others: say none. */
    head_seal(b, 0, 1);
    if (PyObject_IsTrue(args[2]) == 1)
        entry_value(b, index, args[3], true);
    else
        entry_exception(b, index, args[3]);
    reply_frame(SHM_FRAME_MAP_ITEMS, id, b);
    Py_RETURN_NONE;
}
