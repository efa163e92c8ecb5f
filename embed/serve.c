/*
 * Requests from the host, decoded straight from the request ring.
 *
 * A CALL resolves its reference through a cache, converts its arguments
 * and calls the function at once.  A plain result is answered on the spot;
 * a coroutine goes to the hub's start_coro(), which runs its first step
 * inside a Task; a stream goes to start_gen().  Everything else is a short
 * call into the hub.
 */
#include "bridge.h"

#include <errno.h>
#include <msgpuck.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "buffers.h"
#include "hot.h"
#include "refcache.h"
#include "worker.h"

struct hub_funcs H;

/* A request at least this large leaves memory worth trimming when idle. */
#define TRIM_AFTER_BYTES (1u << 20)

/* Find (callable, wants_hub) for ref, through the caches.  Borrowed ref,
 * valid until the next lookup() or serve_admin(). */
static PyObject *lookup(const char *ref, uint32_t len)
{
    PyObject *key, *hit = refcache_find(ref, len); /* borrowed */

    if (hit)
        return hit;
    key = PyUnicode_DecodeUTF8(ref, len, NULL); /* new ref */
    if (!key)
        return NULL;
    hit = PyDict_GetItemWithError(H.refs, key); /* borrowed */
    if (!hit && !PyErr_Occurred()) {
        PyObject *fresh = PyObject_CallOneArg(H.resolve, key); /* new ref */
        if (fresh && (!PyTuple_Check(fresh) || PyTuple_GET_SIZE(fresh) != 2)) {
            Py_CLEAR(fresh);
            PyErr_SetString(PyExc_RuntimeError, "resolve() must return a pair");
        }
        if (fresh && PyDict_SetItem(H.refs, key, fresh) == 0)
            hit = fresh; /* the dict holds it now */
        Py_XDECREF(fresh);
    }
    Py_DECREF(key);
    if (hit)
        refcache_store(ref, len, hit);
    return hit;
}

/* Prepend the hub to args when the function takes it first. */
static PyObject *with_hub(PyObject *args)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *full = PyTuple_New(n + 1); /* new ref */

    if (!full)
        return NULL;
    Py_INCREF(H.hub);
    PyTuple_SET_ITEM(full, 0, H.hub); /* steals */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i); /* borrowed */
        Py_INCREF(a);
        PyTuple_SET_ITEM(full, i + 1, a); /* steals */
    }
    return full;
}

static bool is_awaitable(PyObject *o)
{
    /* None, the usual result, without a look at its type. */
    if (o == Py_None)
        return false;
    if (PyCoro_CheckExact(o))
        return true;
    PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
    return am && am->am_await;
}

/* Call hub function fn(id, obj); an exception becomes the call's error. */
static void hand_over(PyObject *fn, uint64_t id, PyObject *obj)
{
    PyObject *idobj = PyLong_FromUnsignedLongLong(id);                               /* new ref */
    PyObject *r = idobj ? PyObject_CallFunctionObjArgs(fn, idobj, obj, NULL) : NULL; /* new ref */

    if (!r)
        reply_current_error(id);
    Py_XDECREF(r);
    Py_XDECREF(idobj);
}

/*
 * Run a coroutine's first step at once, inside a real Task: creating the
 * Task puts its first step at the end of the loop's ready queue; running
 * that handle straight away gives the coroutine a current task (so
 * asyncio.timeout(), TaskGroup and friends work) without waiting for the
 * loop's next turn, and one that finishes there is answered at once.  The
 * hub's start_coro() is the same in Python; this is the hot path.
 */
static void start_coro(uint64_t id, PyObject *coro)
{
    PyObject *task = NULL, *step = NULL, *r = NULL, *done = NULL, *result = NULL;
    Py_ssize_t queued = PyObject_Length(H.ready);

    task = PyObject_CallOneArg(H.create_task, coro); /* new ref */
    if (!task)
        goto fail;
    /* A task factory may run the first step itself, schedule more than
     * that step or nothing at all: then the loop runs what it scheduled,
     * in order, and only a Task that is done already is answered here. */
    if (the_worker.fast_tasks && queued >= 0 && PyObject_Length(H.ready) == queued + 1) {
        if (!(step = PyObject_CallNoArgs(H.ready_pop))) /* new ref */
            goto fail;
        r = PyObject_CallMethod(step, "_run", NULL); /* new ref */
        if (!r)
            goto fail;
    }
    if (!(done = PyObject_CallMethod(task, "done", NULL))) /* new ref */
        goto fail;
    if (done == Py_True) {
        result = PyObject_CallMethod(task, "result", NULL); /* new ref; raises what it raised */
        if (!result)
            goto fail;
        reply_value(SHM_FRAME_RESULT, id, result);
    } else {
        hand_over(H.track_task, id, task);
    }
    goto out;
fail:
    reply_current_error(id);
out:
    Py_XDECREF(result);
    Py_XDECREF(done);
    Py_XDECREF(r);
    Py_XDECREF(step);
    Py_XDECREF(task);
}

/* A big-endian unsigned of width bytes at *q, within e. */
static bool take_be(const unsigned char **q, const unsigned char *e, unsigned width, uint64_t *ret)
{
    uint64_t v = 0;

    if ((size_t)(e - *q) < width)
        return false;
    for (unsigned i = 0; i < width; i++)
        v = v << 8 | (*q)[i];
    *q += width;
    *ret = v;
    return true;
}

/*
 * Read the fixed part of CALL [kind, ref, args, kwargs].  The frame lies
 * in the ring, where the host could rewrite it as we read: each byte is
 * read once, and every length is checked against end as read.  The
 * arguments are checked as they are decoded.
 */
static bool call_header(const char **p, const char *end, uint64_t *kind, const char **ref,
                        uint32_t *ref_len)
{
    const unsigned char *q = (const unsigned char *)*p, *e = (const unsigned char *)end;
    uint64_t n = 0;
    unsigned c;

    if (q >= e)
        return false;
    c = *q++; /* an array of 4 */
    if (c == 0x94)
        n = 4;
    else if (c < 0xdc || c > 0xdd || !take_be(&q, e, c == 0xdc ? 2 : 4, &n))
        return false;
    if (n != 4 || q >= e)
        return false;
    c = *q++; /* kind: an unsigned int */
    if (c <= 0x7f)
        *kind = c;
    else if (c < 0xcc || c > 0xcf || !take_be(&q, e, 1u << (c - 0xcc), kind))
        return false;
    if (q >= e)
        return false;
    c = *q++; /* ref: a str */
    if (c >= 0xa0 && c <= 0xbf)
        n = c & 0x1f;
    else if (c < 0xd9 || c > 0xdb || !take_be(&q, e, 1u << (c - 0xd9), &n))
        return false;
    if (n > (size_t)(e - q))
        return false;
    *ref = (const char *)q;
    *ref_len = (uint32_t)n;
    *p = (const char *)q + n;
    return true;
}

/*
 * Say that call id runs now, then look it up in the stop table: the fence
 * between the two pairs with the one in shm_seg_stop_post(), so either we
 * find a stop posted before it, or the host sees running_call and signals
 * (see shm/segment.h).  Returns why it was stopped, or 0 to run it.
 */
static uint32_t call_enter(uint64_t id)
{
    struct shm_seg_header *h = the_worker.seg.hdr;

    atomic_store_explicit(&h->running_call, id, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    /* Pairs with the release bump in shm_seg_stop_post(); nothing posted
     * ever (the usual case) needs no scan. */
    if (atomic_load_explicit(&h->stop_seq, memory_order_acquire) == 0)
        return 0;
    return shm_seg_stop_lookup(h, id);
}

static void call_leave(void)
{
    /* Back from user code, which may have forked: a child stops here. */
    worker_leave_if_forked();
    atomic_store_explicit(&the_worker.seg.hdr->running_call, 0, memory_order_release);
}

/* Answer a call stopped before it started. */
static void reply_stopped(uint64_t id, uint32_t why)
{
    if (why == SHM_INTERRUPT_TIMEOUT)
        reply_error_text(id, ETIMEDOUT, "pyproc.CallTimeout",
                         "the call ran past the pool's call timeout before it started");
    else
        reply_error_text(id, ECANCELED, "asyncio.exceptions.CancelledError",
                         "the call was cancelled before it started");
}

/* Positional arguments up to this many are decoded onto the stack and
 * passed by vectorcall: no tuple for them. */
#define ARGS_ON_STACK 8

/* The callable of ref and whether it takes the hub first.  Borrowed, as
 * lookup(). */
static PyObject *lookup_fn(const char *ref, uint32_t len, bool *wants_hub)
{
    const struct refcache_hit *hit = refcache_find_hit(ref, len);
    PyObject *entry;

    if (hit) {
        *wants_hub = hit->wants_hub;
        return hit->fn;
    }
    if (!(entry = lookup(ref, len))) /* borrowed */
        return NULL;
    *wants_hub = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1)) == 1;
    return PyTuple_GET_ITEM(entry, 0);
}

/*
 * Call fn with the arguments at *p: a few positional ones and no keywords
 * (most calls) by vectorcall from the stack, with the hub in front when
 * wants_hub; anything else through a tuple and a dict.  Decoding comes
 * before call_enter(), so only user code counts as running.  Returns the
 * result (new ref) or NULL with an exception set; *stopped says why the
 * call was stopped before it started (nothing ran, NULL without error).
 */
static PyObject *call_fn(uint64_t id, PyObject *fn, bool wants_hub, const char *p, const char *end,
                         uint32_t *stopped)
{
    PyObject *stack[ARGS_ON_STACK + 1], *args = NULL, *kwargs = NULL, *full = NULL, *res = NULL;
    Py_ssize_t n = 0;

    /* No arguments (an empty fixarray) is the usual case. */
    if (p < end && (unsigned char)*p == 0x90)
        p++;
    else
        n = pyproc_unpack_array_into(&p, end, stack + 1, ARGS_ON_STACK);

    if (n < 0)
        return NULL;
    if (n > ARGS_ON_STACK && !(args = pyproc_unpack_tuple(&p, end))) /* new ref */
        return NULL;
    /* Most calls have no keyword arguments: no dict for them. */
    if (p < end && (unsigned char)*p == 0x80)
        p++;
    else if (!(kwargs = pyproc_unpack_kwargs(&p, end))) /* new ref */
        goto out;
    if (!args && kwargs && PyDict_GET_SIZE(kwargs)) {
        /* Keywords: the tuple way, which takes the dict as it is. */
        if (!(args = PyTuple_New(n))) /* new ref */
            goto out;
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(args, i, stack[i + 1]); /* steals */
        n = 0;
    }
    if (args && wants_hub && !(full = with_hub(args))) /* new ref */
        goto out;
    /* While user code runs here, the host may interrupt it (see
     * shm/segment.h); a coroutine's first step counts too. */
    *stopped = call_enter(id);
    if (*stopped)
        goto out;
    if (args) {
        res = PyObject_Call(fn, full ? full : args,
                            kwargs && PyDict_GET_SIZE(kwargs) ? kwargs : NULL); /* new ref */
    } else if (wants_hub) {
        stack[0] = H.hub;
        res = PyObject_Vectorcall(fn, stack, (size_t)n + 1, NULL); /* new ref */
    } else {
        res = PyObject_Vectorcall(fn, stack + 1, (size_t)n | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                  NULL); /* new ref */
    }
out:
    for (Py_ssize_t i = 0; !args && i < n; i++)
        Py_DECREF(stack[i + 1]);
    Py_XDECREF(full);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    return res;
}

static void serve_call(uint64_t id, const char *p, const char *end)
{
    uint32_t stopped = 0;
    PyObject *fn, *res;
    const char *ref;
    uint32_t ref_len;
    uint64_t kind;
    bool wants_hub;

    if (!call_header(&p, end, &kind, &ref, &ref_len)) {
        reply_error_text(id, EBADMSG, "ValueError", "malformed call frame");
        return;
    }
    if (!(fn = lookup_fn(ref, ref_len, &wants_hub))) { /* borrowed */
        reply_current_error(id);
        return;
    }
    res = call_fn(id, fn, wants_hub, p, end, &stopped); /* new ref */
    if (stopped) {
        call_leave();
        reply_stopped(id, stopped);
        return;
    }
    if (res && kind == SHM_CALL_GEN)
        hand_over(H.start_gen, id, res);
    else if (res && PyCoro_CheckExact(res))
        start_coro(id, res);
    else if (res && is_awaitable(res))
        hand_over(H.start_coro, id, res);
    call_leave();
    if (!res)
        reply_current_error(id);
    else if (kind != SHM_CALL_GEN && !is_awaitable(res))
        reply_value(SHM_FRAME_RESULT, id, res);
    Py_XDECREF(res);
}

/* ADD_SUB, ADD_NATIVE, SET_ATTR: run a hub function on the payload's items, answer nil. */
static void serve_admin(uint64_t id, PyObject *fn, const char *p, const char *end)
{
    PyObject *args = pyproc_unpack_tuple(&p, end);               /* new ref */
    PyObject *res = args ? PyObject_Call(fn, args, NULL) : NULL; /* new ref */

    /* Subs and attributes can change what a cached reference meant. */
    PyDict_Clear(H.refs);
    refcache_clear();
    if (res)
        reply_value(SHM_FRAME_RESULT, id, Py_None);
    else
        reply_current_error(id);
    Py_XDECREF(res);
    Py_XDECREF(args);
}

/* Run fn(id, payload) for a request that gets no answer of its own. */
static void serve_note(uint64_t id, PyObject *fn, const char *p, const char *end)
{
    PyObject *value = pyproc_unpack(&p, end);          /* new ref */
    PyObject *idobj = PyLong_FromUnsignedLongLong(id); /* new ref */
    PyObject *r = NULL;

    if (value && idobj)
        r = PyObject_CallFunctionObjArgs(fn, idobj, value, NULL); /* new ref */
    if (!r)
        PyErr_Print();
    Py_XDECREF(r);
    Py_XDECREF(idobj);
    Py_XDECREF(value);
}

/* The host asked us to exit: leave the loop once this turn is over. */
static void serve_shutdown(void)
{
    PyObject *r = PyObject_CallNoArgs(H.shutdown); /* new ref */

    if (!r)
        PyErr_Print();
    Py_XDECREF(r);
    the_worker.shutdown = true;
}

/* A shared buffer the host has let go of: drop our kept mapping of it. */
static void serve_forget(const char *p, const char *end)
{
    const char *q = p;

    if (p < end && mp_typeof(*p) == MP_UINT && mp_check(&q, end) == 0)
        worker_buffers_forget(mp_decode_uint(&p));
}

/* ---- the same steps, for a map's chunks (map.c) ---- */

bool serve_call_header(const char **p, const char *end, uint64_t *kind, const char **ref,
                       uint32_t *ref_len)
{
    return call_header(p, end, kind, ref, ref_len);
}

PyObject *serve_lookup(const char *ref, uint32_t len)
{
    return lookup(ref, len);
}

PyObject *serve_with_hub(PyObject *args)
{
    return with_hub(args);
}

bool serve_is_awaitable(PyObject *o)
{
    return is_awaitable(o);
}

uint32_t serve_enter(uint64_t id)
{
    return call_enter(id);
}

void serve_leave(void)
{
    call_leave();
}

void serve_reply_stopped(uint64_t id, uint32_t why)
{
    reply_stopped(id, why);
}

static void serve_one(const struct shm_msg *m)
{
    const char *p = (const char *)m->payload, *end = p + m->len;

    switch (m->type) {
    case SHM_FRAME_CALL:
        serve_call(m->id, p, end);
        break;
    case SHM_FRAME_MAP_CHUNK:
        serve_map(m->id, p, end);
        break;
    case SHM_FRAME_ADD_SUB:
        serve_admin(m->id, H.add_sub, p, end);
        break;
    case SHM_FRAME_SET_ATTR:
        serve_admin(m->id, H.set_attr, p, end);
        break;
    case SHM_FRAME_ADD_NATIVE:
        serve_admin(m->id, H.add_native, p, end);
        break;
    case SHM_FRAME_CANCEL:
        serve_note(m->id, H.cancel, p, end);
        break;
    case SHM_FRAME_CREDIT:
        serve_note(m->id, H.credit, p, end);
        break;
    case SHM_FRAME_CALLBACK_REPLY:
        serve_note(m->id, H.callback_reply, p, end);
        break;
    case SHM_FRAME_SHUTDOWN:
        serve_shutdown();
        break;
    case SHM_FRAME_FORGET:
        serve_forget(p, end);
        break;
    default:
        reply_error_text(m->id, ENOSYS, "NotImplementedError",
                         "this worker does not handle that request");
        break;
    }
}

WORKER_HOT bool worker_control_pending(void)
{
    struct worker *w = &the_worker;
    struct shm_seg_header *h = w->seg.hdr;

    /* Pairs with the release bump in shm_seg_stop_post(). */
    if (atomic_load_explicit(&h->stop_seq, memory_order_acquire) != w->stop_seq_seen)
        return true;
    /* Pairs with the release store in pyproc__worker_ask_stop(). */
    return !w->shutdown && atomic_load_explicit(&h->shutdown, memory_order_acquire);
}

/*
 * Cancel the tasks and streams whose ids were posted to the stop table
 * since the last scan; queued calls are caught in serve_call() and plain
 * ones running by the signal handler.  Then tell the host how far we got,
 * so it may reuse what we have seen.
 */
static void serve_stops(void)
{
    struct worker *w = &the_worker;
    struct shm_seg_header *h = w->seg.hdr;
    /* Pairs with the release bump in shm_seg_stop_post(): the entries
     * posted up to seq are visible below. */
    uint64_t seq = atomic_load_explicit(&h->stop_seq, memory_order_acquire);

    if (seq == w->stop_seq_seen)
        return;
    for (unsigned i = 0; i < SHM_STOP_SLOTS; i++) {
        uint64_t id = atomic_load_explicit(&h->stops[i].call, memory_order_acquire);
        if (!id || id == w->stop_done[i])
            continue;
        w->stop_done[i] = id;
        PyObject *r = PyObject_CallFunction(H.cancel, "KO", (unsigned long long)id,
                                            Py_None); /* new ref */
        if (!r)
            PyErr_Print();
        Py_XDECREF(r);
    }
    w->stop_seq_seen = seq;
    /* Pairs with the acquire in shm_seg_stop_seen(): what we read above
     * was read before the host may free those slots. */
    atomic_store_explicit(&h->stop_seen, seq, memory_order_release);
}

WORKER_HOT long serve_ring(void)
{
    struct worker *w = &the_worker;
    struct shm_msg m;
    long n = 0;
    int r = 0;

    worker_leave_if_forked();
    if (!w->shutdown && atomic_load_explicit(&w->seg.hdr->shutdown, memory_order_acquire))
        serve_shutdown();
    serve_stops();
    /* An empty ring (the usual end of a turn) is told by one load. */
    while (!w->shutdown && !shm_ring_empty(&w->requests) &&
           (r = shm_ring_read(&w->requests, &m)) == 1) {
        if (m.len > TRIM_AFTER_BYTES)
            w->trim_when_idle = true;
        serve_one(&m);
        shm_ring_done(&w->requests, &m);
        n++;
    }
    if (!w->shutdown && r < 0 && !shm_ring_is_closed(&w->requests)) {
        /* A host that corrupts the ring cannot be trusted with anything. */
        fprintf(stderr, "pyproc-worker %s/%d: bad frame from the host: %s\n", w->pool, w->index,
                strerror(-r));
        _exit(3);
    }
    return n;
}
