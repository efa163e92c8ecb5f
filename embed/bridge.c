/*
 * The _pyproc module: the C half of the worker's loop.
 *
 * The hub (embed/python/hub.py) runs an asyncio loop whose selector calls
 * _pyproc.select().  That call serves the request ring in C: it decodes
 * each frame straight from the ring, resolves the reference through a
 * cache, calls plain functions at once and writes their replies, and hands
 * coroutines to the hub, which runs their first step inside a real Task.
 * It returns to the loop only when the loop has work of its own (ready
 * handles, a wake-up from another thread, a timer due, a signal), so a busy
 * stream of plain calls never leaves C.
 */
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <msgpuck.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../shm/futex.h"
#include "convert.h"
#include "worker.h"

/* Python functions of the hub that the C side calls; set by set_hub(). */
static struct {
    PyObject *hub;        /* the hub object, first argument of `hub` functions */
    PyObject *resolve;    /* resolve(ref) -> (callable, wants_hub)             */
    PyObject *start_coro; /* start_coro(id, coro): eager first step in a Task  */
    PyObject *error_info; /* error_info(exc) -> (errno, type, message, tb)     */
    PyObject *add_sub;    /* add_sub(name, pypath, init)                       */
    PyObject *set_attr;   /* set_attr(ref, value)                              */
    PyObject *shutdown;   /* shutdown(): stop the loop                         */
    PyObject *refs;       /* dict: ref -> (callable, wants_hub)                */
} H;

/* ---- replies ---- */

static int send_frame(uint16_t type, uint64_t id, const struct shm_buf *b)
{
    struct worker *w = &the_worker;
    int err = shm_ring_write(&w->replies, type, id, b->data, b->len, w->spin_ns);
    if (err == -EPIPE)
        _exit(0); /* the host closed the ring: it is gone or done with us */
    return err;
}

/* Send ERROR [errno, type, message, traceback] built from plain strings. */
static void send_error_text(uint64_t id, int errnum, const char *type,
                            const char *msg, const char *tb)
{
    struct shm_buf *b = &the_worker.out;
    size_t tl = strlen(type), ml = strlen(msg), bl = strlen(tb);
    int err = 0;
    char *p;

    shm_buf_reset(b);
    p = shm_buf_reserve(b, 32 + tl + ml + bl, &err);
    if (!p)
        return;
    char *q = mp_encode_array(p, 4);
    q = mp_encode_uint(q, (uint64_t)errnum);
    q = mp_encode_str(q, type, (uint32_t)tl);
    q = mp_encode_str(q, msg, (uint32_t)ml);
    q = mp_encode_str(q, tb, (uint32_t)bl);
    b->len = (size_t)(q - b->data);
    send_frame(SHM_FRAME_ERROR, id, b);
}

/* Pack `info` (the tuple error_info() returns) into an ERROR frame. */
static void send_error_info(uint64_t id, PyObject *info)
{
    struct shm_buf *b = &the_worker.out;

    shm_buf_reset(b);
    if (pyproc_pack(b, info) == 0) {
        send_frame(SHM_FRAME_ERROR, id, b);
        return;
    }
    PyErr_Clear();
    send_error_text(id, 0, "RuntimeError", "the error could not be encoded", "");
}

/* Send the exception being raised now as the answer to call `id`. */
static void send_current_error(uint64_t id)
{
    PyObject *type, *value, *tb, *info;

    PyErr_Fetch(&type, &value, &tb); /* new refs */
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    info = value ? PyObject_CallOneArg(H.error_info, value) : NULL; /* new ref */
    if (info && PyTuple_Check(info)) {
        send_error_info(id, info);
    } else {
        PyErr_Clear();
        send_error_text(id, 0, "RuntimeError", "the error could not be described", "");
    }
    Py_XDECREF(info);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Pack `value` as RESULT (or YIELD); an unsendable value becomes an error. */
static void send_value(uint16_t type, uint64_t id, PyObject *value)
{
    struct shm_buf *b = &the_worker.out;
    int err;

    shm_buf_reset(b);
    if (pyproc_pack(b, value) < 0) {
        send_current_error(id);
        return;
    }
    err = send_frame(type, id, b);
    if (err == -EMSGSIZE) {
        char msg[128];
        snprintf(msg, sizeof msg, "the result takes %zu bytes, over the pool's limit of %llu",
                 b->len, (unsigned long long)the_worker.replies.max_msg);
        send_error_text(id, EMSGSIZE, "ValueError", msg, "");
    }
}

/* ---- requests ---- */

/* Find (callable, wants_hub) for ref, through the cache.  Borrowed ref. */
static PyObject *lookup(const char *ref, uint32_t len)
{
    PyObject *key, *hit;

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
    if (PyCoro_CheckExact(o))
        return true;
    PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
    return am && am->am_await;
}

/* CALL [kind, ref, args, kwargs] */
static void serve_call(uint64_t id, const char *p, const char *end)
{
    PyObject *args = NULL, *kwargs = NULL, *full = NULL, *res = NULL;
    PyObject *entry;
    const char *ref;
    uint32_t ref_len;

    if (mp_check(&(const char *){p}, end) || mp_typeof(*p) != MP_ARRAY ||
        mp_decode_array(&p) != 4 || mp_typeof(*p) != MP_UINT) {
        send_error_text(id, EBADMSG, "ValueError", "malformed call frame", "");
        return;
    }
    (void)mp_decode_uint(&p); /* kind: generators arrive with the stream work */
    if (mp_typeof(*p) != MP_STR) {
        send_error_text(id, EBADMSG, "ValueError", "malformed call frame", "");
        return;
    }
    ref = mp_decode_str(&p, &ref_len);
    entry = lookup(ref, ref_len); /* borrowed */
    if (!entry)
        goto fail;
    args = pyproc_unpack_tuple(&p, end); /* new ref */
    if (!args)
        goto fail;
    kwargs = pyproc_unpack_kwargs(&p, end); /* new ref */
    if (!kwargs)
        goto fail;
    if (PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1))) {
        full = with_hub(args); /* new ref */
        if (!full)
            goto fail;
    }
    res = PyObject_Call(PyTuple_GET_ITEM(entry, 0), full ? full : args,
                        PyDict_GET_SIZE(kwargs) ? kwargs : NULL); /* new ref */
    if (!res)
        goto fail;
    if (is_awaitable(res)) {
        PyObject *idobj = PyLong_FromUnsignedLongLong(id); /* new ref */
        PyObject *r = idobj ? PyObject_CallFunctionObjArgs(H.start_coro, idobj, res, NULL)
                            : NULL; /* new ref */
        Py_XDECREF(idobj);
        if (!r)
            goto fail;
        Py_DECREF(r);
    } else {
        send_value(SHM_FRAME_RESULT, id, res);
    }
    goto out;
fail:
    send_current_error(id);
out:
    Py_XDECREF(res);
    Py_XDECREF(full);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
}

/* Run a hub function on the decoded payload and answer nil or the error. */
static void serve_admin(uint64_t id, PyObject *fn, const char *p, const char *end)
{
    PyObject *args = pyproc_unpack_tuple(&p, end); /* new ref */
    PyObject *res = args ? PyObject_Call(fn, args, NULL) : NULL; /* new ref */

    if (res) {
        /* Subs and attributes can replace what a cached reference meant. */
        PyDict_Clear(H.refs);
        send_value(SHM_FRAME_RESULT, id, Py_None);
    } else {
        send_current_error(id);
    }
    Py_XDECREF(res);
    Py_XDECREF(args);
}

static void serve_one(const struct shm_msg *m)
{
    const char *p = (const char *)m->payload, *end = p + m->len;

    switch (m->type) {
    case SHM_FRAME_CALL:
        serve_call(m->id, p, end);
        break;
    case SHM_FRAME_ADD_SUB:
        serve_admin(m->id, H.add_sub, p, end);
        break;
    case SHM_FRAME_SET_ATTR:
        serve_admin(m->id, H.set_attr, p, end);
        break;
    case SHM_FRAME_SHUTDOWN: {
        PyObject *r = PyObject_CallNoArgs(H.shutdown); /* new ref */
        if (!r)
            PyErr_Print();
        Py_XDECREF(r);
        the_worker.shutdown = true;
        break;
    }
    default:
        send_error_text(m->id, ENOSYS, "NotImplementedError",
                        "this worker does not handle that request", "");
        break;
    }
}

/*
 * Serve every whole message in the request ring.  Returns how many, or -1
 * when the host wrote something impossible (the worker then exits: a host
 * that corrupts the ring cannot be trusted with anything else).
 */
static long serve_ring(void)
{
    struct worker *w = &the_worker;
    struct shm_msg m;
    long n = 0;
    int r;

    while (!w->shutdown && (r = shm_ring_read(&w->requests, &m)) == 1) {
        serve_one(&m);
        shm_ring_done(&w->requests, &m);
        n++;
    }
    if (!w->shutdown && r < 0) {
        fprintf(stderr, "pyproc-worker %s/%d: bad frame from the host: %s\n",
                w->pool, w->index, strerror(-r));
        _exit(3);
    }
    return n;
}

/* ---- waiting ---- */

static bool has_work(void)
{
    struct worker *w = &the_worker;
    return !shm_ring_empty(&w->requests) || atomic_load(&w->woken) ||
           shm_ring_is_closed(&w->requests);
}

/* Spin up to the budget; true when work turned up. */
static bool spin(int64_t budget_ns)
{
    int64_t until = shm_now_ns() + budget_ns;

    for (unsigned i = 1;; i++) {
        if (has_work())
            return true;
        shm_cpu_relax();
        if ((i & 63) == 0 && shm_now_ns() >= until)
            return false;
    }
}

enum { WAIT_WORK, WAIT_TIMEOUT, WAIT_SIGNAL };

/*
 * Sleep on the request ring's futex until a frame, a wake-up or the
 * timeout.  Called without the GIL.
 */
static int sleep_futex(int timeout_ms)
{
    struct worker *w = &the_worker;
    int r = 0;

    if (!shm_ring_sleep_begin(&w->requests, SHM_SLEEP_FUTEX) && !atomic_load(&w->woken))
        r = shm_futex_wait(&w->requests.ctl->consumer_wait, SHM_SLEEP_FUTEX,
                           timeout_ms, true);
    shm_ring_sleep_end(&w->requests);
    if (r == -EINTR)
        return WAIT_SIGNAL;
    return r == -ETIMEDOUT ? WAIT_TIMEOUT : WAIT_WORK;
}

static int timeout_ms_of(PyObject *timeout)
{
    if (timeout == Py_None)
        return -1;
    double t = PyFloat_AsDouble(timeout);
    if (t <= 0 || isnan(t))
        return 0;
    return t > 86400.0 ? 86400000 : (int)ceil(t * 1000.0);
}

/*
 * select(timeout, ready, scheduled, fds) -> 0 | 1: serve the ring until
 * the loop has something of its own to do: a ready handle, a new timer
 * (which may be due before our timeout), a new fd to watch (the loop must
 * then wait in epoll), a wake-up from another thread, or the timeout.  Returns 1 when a signal interrupted the wait (the caller polls
 * its fds at once so asyncio sees the wake-up byte).
 */
static PyObject *py_select(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    struct worker *w = &the_worker;
    int64_t deadline;
    int timeout_ms;

    (void)self;
    if (n != 4 || !PyList_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "select(timeout, ready, scheduled, fds)");
        return NULL;
    }
    Py_ssize_t timers = PyList_GET_SIZE(args[2]), fds = PyDict_GET_SIZE(args[3]);
    timeout_ms = timeout_ms_of(args[0]);
    deadline = timeout_ms < 0 ? INT64_MAX : shm_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        atomic_store(&w->woken, 0);
        if (serve_ring() < 0 || w->shutdown)
            break;
        if (PyObject_Length(args[1]) > 0 || PyList_GET_SIZE(args[2]) != timers ||
            PyDict_GET_SIZE(args[3]) != fds || timeout_ms == 0)
            break;
        int64_t left = deadline - shm_now_ns();
        if (left <= 0)
            break;
        int how = WAIT_WORK;
        Py_BEGIN_ALLOW_THREADS
        if (!spin(w->spin_ns < left ? w->spin_ns : left)) {
            left = deadline - shm_now_ns();
            int ms = deadline == INT64_MAX ? -1 : (int)((left + 999999) / 1000000);
            how = left > 0 ? sleep_futex(ms) : WAIT_TIMEOUT;
        }
        Py_END_ALLOW_THREADS
        if (how == WAIT_SIGNAL) {
            if (PyErr_CheckSignals() < 0)
                return NULL;
            return PyLong_FromLong(1);
        }
        if (atomic_load(&w->woken))
            break;
    }
    return PyLong_FromLong(0);
}

/* serve() -> count: serve what is in the ring now, without waiting. */
static PyObject *py_serve(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(serve_ring());
}

/*
 * spin_then_arm() -> bool: before the loop sleeps in epoll (user code has
 * fds of its own), spin for the budget, then ask the host to ring the
 * doorbell.  False when work turned up and the loop must not sleep.
 */
static PyObject *py_spin_then_arm(PyObject *self, PyObject *unused)
{
    struct worker *w = &the_worker;
    bool found;

    (void)self;
    (void)unused;
    Py_BEGIN_ALLOW_THREADS
    found = spin(w->spin_ns);
    Py_END_ALLOW_THREADS
    if (found || shm_ring_sleep_begin(&w->requests, SHM_SLEEP_DOORBELL) ||
        atomic_load(&w->woken)) {
        shm_ring_sleep_end(&w->requests);
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyObject *py_disarm(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    shm_ring_sleep_end(&the_worker.requests);
    Py_RETURN_NONE;
}

/* wake(): from any thread, make the loop look at its ready queue. */
static PyObject *py_wake(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    atomic_store(&the_worker.woken, 1);
    shm_ring_notify(&the_worker.requests);
    Py_RETURN_NONE;
}

/* ---- answers from Python ---- */

static int parse_id(PyObject *o, uint64_t *id)
{
    *id = PyLong_AsUnsignedLongLong(o);
    return *id == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

/* send_result(id, value) */
static PyObject *py_send_result(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    uint64_t id;

    (void)self;
    if (n != 2 || parse_id(args[0], &id) < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "send_result(id, value)");
    send_value(SHM_FRAME_RESULT, id, args[1]);
    Py_RETURN_NONE;
}

/* send_error(id, exc) */
static PyObject *py_send_error(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    uint64_t id;

    (void)self;
    if (n != 2 || parse_id(args[0], &id) < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "send_error(id, exc)");
    PyObject *info = PyObject_CallOneArg(H.error_info, args[1]); /* new ref */
    if (info)
        send_error_info(id, info);
    else
        send_current_error(id);
    Py_XDECREF(info);
    Py_RETURN_NONE;
}

/* ready(): tell the host this worker serves calls now. */
static PyObject *py_ready(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *pid = PyLong_FromLong(getpid()); /* new ref */
    if (!pid)
        return NULL;
    send_value(SHM_FRAME_READY, 0, pid);
    Py_DECREF(pid);
    Py_RETURN_NONE;
}

/* set_hub(hub, resolve, start_coro, error_info, add_sub, set_attr, shutdown) */
static PyObject *py_set_hub(PyObject *self, PyObject *args)
{
    PyObject *o[7];

    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6]))
        return NULL;
    PyObject **slots[] = {&H.hub, &H.resolve, &H.start_coro, &H.error_info,
                          &H.add_sub, &H.set_attr, &H.shutdown};
    for (int i = 0; i < 7; i++) {
        Py_INCREF(o[i]);
        Py_XSETREF(*slots[i], o[i]);
    }
    if (!H.refs && !(H.refs = PyDict_New()))
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"select", (PyCFunction)(void (*)(void))py_select, METH_FASTCALL, NULL},
    {"serve", py_serve, METH_NOARGS, NULL},
    {"spin_then_arm", py_spin_then_arm, METH_NOARGS, NULL},
    {"disarm", py_disarm, METH_NOARGS, NULL},
    {"wake", py_wake, METH_NOARGS, NULL},
    {"send_result", (PyCFunction)(void (*)(void))py_send_result, METH_FASTCALL, NULL},
    {"send_error", (PyCFunction)(void (*)(void))py_send_error, METH_FASTCALL, NULL},
    {"ready", py_ready, METH_NOARGS, NULL},
    {"set_hub", py_set_hub, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pyproc", "The worker's link to its rings.", -1, methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *init_module(void)
{
    struct worker *w = &the_worker;
    PyObject *m = PyModule_Create(&module); /* new ref */

    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "index", w->index) < 0 ||
        PyModule_AddStringConstant(m, "pool", w->pool) < 0 ||
        PyModule_AddStringConstant(m, "python_path", w->python_path ? w->python_path : "") < 0 ||
        PyModule_AddIntConstant(m, "doorbell", w->requests.doorbell_fd) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

int pyproc_bridge_register(void)
{
    return PyImport_AppendInittab("_pyproc", init_module);
}
