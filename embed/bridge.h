/*
 * What the worker's C files share: the hub functions the C side calls, and
 * the ways to answer the host.
 */
#ifndef PYPROC_EMBED_BRIDGE_H
#define PYPROC_EMBED_BRIDGE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

/* Python functions of the hub (embed/python/hub.py), set by set_hub(). */
struct hub_funcs {
    PyObject *hub;            /* first argument of functions that take `hub`  */
    PyObject *resolve;        /* resolve(ref) -> (callable, wants_hub)        */
    PyObject *start_coro;     /* start_coro(id, coro)                         */
    PyObject *create_task;    /* the loop's create_task(coro)                 */
    PyObject *ready;          /* the loop's ready queue (a deque)             */
    PyObject *ready_pop;      /* the loop's ready queue's pop()               */
    PyObject *track_task;     /* track_task(id, task): answer when it ends    */
    PyObject *start_gen;      /* start_gen(id, iterable)                      */
    PyObject *error_info;     /* error_info(exc) -> (errno, type, msg, tb)    */
    PyObject *add_sub;        /* add_sub(name, pypath, init)                  */
    PyObject *add_native;     /* add_native(name, library, decls)             */
    PyObject *set_attr;       /* set_attr(ref, value)                         */
    PyObject *shutdown;       /* shutdown()                                   */
    PyObject *cancel;         /* cancel(id)                                   */
    PyObject *credit;         /* credit(id, n)                                */
    PyObject *callback_reply; /* callback_reply(id, ok, value)                */
    PyObject *refs;           /* dict: ref -> (callable, wants_hub)           */
};

extern struct hub_funcs H;

/* ---- reply.c: answers to the host ---- */

/* Send `value` as a RESULT or READY; an unsendable value becomes an ERROR. */
void reply_value(uint16_t type, uint64_t id, PyObject *value);
/* Send the exception being raised now as the ERROR of call `id`. */
void reply_current_error(uint64_t id);
/* Send an ERROR made of plain strings. */
void reply_error_text(uint64_t id, int errnum, const char *type, const char *msg);
/* Send a frame with no payload but nil (END). */
void reply_nil(uint16_t type, uint64_t id);

/* Methods of the _pyproc module that reply.c implements. */
PyObject *py_send_result(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *py_send_error(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *py_send_yield(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *py_send_end(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *py_send_callback(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *py_pump(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *py_ready(PyObject *self, PyObject *unused);

/* ---- bridge.c ---- */

/* A new _pyproc module for the_worker, whose rings are attached. */
PyObject *pyproc_bridge_module(void);

/* ---- serve.c: requests from the host ---- */

/* Serve every whole message in the request ring; returns how many. */
long serve_ring(void);

#endif
