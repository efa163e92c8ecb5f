/*
 * Native functions in the worker: _pyproc.load_native() and the
 * _pyproc.NativeFunction type (embed/native.c).
 */
#ifndef PYPROC_EMBED_NATIVE_H
#define PYPROC_EMBED_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Add load_native() and NativeFunction to the _pyproc module.  0 or -1
 * with a Python exception set. */
int native_register(PyObject *module);

#endif
