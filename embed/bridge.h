/*
 * What the worker's C files share: the hub functions the C side calls, and
 * the ways to answer the host.
 */
#ifndef PYPROC_EMBED_BRIDGE_H
#define PYPROC_EMBED_BRIDGE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <stdint.h>

#include "../shm/buf.h"

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
    PyObject *start_map;      /* start_map(id, [(index, awaitable)...])       */
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
/* Send b as one frame of the type; 0, -EMSGSIZE (exits if the host is
 * gone). */
int reply_frame(uint16_t type, uint64_t id, const struct shm_buf *b);

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
/* Read the fixed part of a CALL frame, [kind, ref, ...]: true with *p past
 * ref, false (*p unchanged) when it is malformed or runs past end. */
bool serve_call_header(const char **p, const char *end, uint64_t *kind, const char **ref,
                       uint32_t *ref_len);
/* Find (callable, wants_hub) for ref, through the cache.  Borrowed ref. */
PyObject *serve_lookup(const char *ref, uint32_t len);
/* Prepend the hub to args when the function takes it first.  New ref. */
PyObject *serve_with_hub(PyObject *args);
bool serve_is_awaitable(PyObject *o);
/* Call id runs user code from now until serve_leave(); returns why it
 * was stopped before it started (SHM_INTERRUPT_*), or 0 to run it. */
uint32_t serve_enter(uint64_t id);
void serve_leave(void);
/* Answer a call stopped before it started. */
void serve_reply_stopped(uint64_t id, uint32_t why);

/* ---- map.c: a map's chunks ---- */

/* Run a MAP_CHUNK's items and answer them (MAP_ITEMS, then END). */
void serve_map(uint64_t id, const char *p, const char *end);
/* send_map_item(id, index, ok, value or exception) */
PyObject *py_send_map_item(PyObject *self, PyObject *const *args, Py_ssize_t n);

#endif
