/*
 * Shared buffers in the worker (buffers.c): arguments the host passes by
 * reference, pyproc.buffer(), and values packed as references.
 */
#ifndef PYPROC_EMBED_BUFFERS_H
#define PYPROC_EMBED_BUFFERS_H

#include <Python.h>

/* Take shared buffers' fds from fd, our end of the host's socket, and
 * pass values inside them as references.  After Python has started; 0 or
 * a negative errno. */
int worker_buffers_init(int fd);

/* The host freed shared buffer buf_id: drop the mapping kept for it (it
 * goes once Python code no longer uses it either). */
void worker_buffers_forget(uint64_t buf_id);

/* Add buffer() to the _pyproc module. */
int worker_buffers_register(PyObject *module);

#endif
