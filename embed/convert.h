/*
 * Conversion between msgpack and Python objects in the worker.
 *
 * The wire format is what Python's msgpack package writes with
 * use_bin_type=True: str as str, bytes as bin, the smallest encoding of
 * every int and length, floats as float64.  Every function here needs the
 * GIL and runs no Python code of its own.
 */
#ifndef PYPROC_EMBED_CONVERT_H
#define PYPROC_EMBED_CONVERT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../shm/buf.h"

/* Containers may nest this deep, counting the outermost as 1; deeper
 * input or objects (a list that contains itself) are refused. */
#define PYPROC_MAX_DEPTH 512

/*
 * Decode one msgpack value from [*p, end) and advance *p past it.
 * Returns a new reference, or NULL with a Python exception set and *p
 * unchanged: ValueError for malformed or truncated input, ext types or
 * nesting deeper than PYPROC_MAX_DEPTH; UnicodeDecodeError for a str that
 * is not UTF-8; TypeError for an unhashable map key.  Never reads outside
 * [*p, end); lengths in the input are checked against end before use.
 */
PyObject *pyproc_unpack(const char **p, const char *end);

/*
 * Accept shared buffer arguments (the host's ext 8 of type 0x42: token,
 * offset, length), made into objects by hook; without one, every ext is a
 * ValueError.
 */
void pyproc_unpack_set_buffer_hook(PyObject *(*hook)(uint64_t token, uint64_t off, uint64_t len));

/*
 * Decode a msgpack array into a new tuple (positional arguments).
 * Errors as pyproc_unpack(), plus TypeError when the value is not an array.
 */
PyObject *pyproc_unpack_tuple(const char **p, const char *end);

/*
 * Decode a msgpack map into a new dict whose keys are interned str
 * (keyword arguments).  Errors as pyproc_unpack(), plus TypeError when the
 * value is not a map or a key is not a str.
 */
PyObject *pyproc_unpack_kwargs(const char **p, const char *end);

/*
 * Decode a msgpack array of at most max values into out[] (new refs) and
 * advance *p past it; returns how many.  An array of more than max values
 * is left alone (*p unchanged): its length comes back, for
 * pyproc_unpack_tuple() to take.  -1 with an exception set (as
 * pyproc_unpack_tuple()) and nothing left in out on failure.
 */
Py_ssize_t pyproc_unpack_array_into(const char **p, const char *end, PyObject **out,
                                    Py_ssize_t max);

/*
 * Append the msgpack encoding of o to b.  Accepts None, bool, int, float,
 * str, bytes, bytearray, C-contiguous memoryview, list, tuple and dict
 * (subclasses count as their base type).  Returns 0, or -1 with a Python
 * exception set and b->len as it was on entry:
 *   TypeError     "cannot send object of type 'X'" for anything else;
 *   OverflowError for an int outside int64 and uint64;
 *   ValueError    for nesting deeper than PYPROC_MAX_DEPTH, a str, bytes or
 *                 container too long for msgpack, or "message too large"
 *                 when b's limit would be passed;
 *   MemoryError   when b cannot grow;
 *   UnicodeEncodeError for a str holding lone surrogates.
 */
int pyproc_pack(struct shm_buf *b, PyObject *o);

/*
 * The bytes pyproc_pack_scalar() writes for o, or 0 when o is not a scalar
 * it takes: None, bool, and exact int (within int64), float,
 * ASCII str and bytes of at most 4 KiB.  These need no hook, allocation or
 * Python call, so a reply can be encoded straight into the ring.  Neither
 * raises.
 */
size_t pyproc_pack_scalar_size(PyObject *o);
/* Write o's encoding at dst, which has room for pyproc_pack_scalar_size(o)
 * bytes (not 0); returns that size. */
size_t pyproc_pack_scalar(char *dst, PyObject *o);

/* The most shared buffers one packed value may name. */
#define PYPROC_MAX_REFERENCES 64

/*
 * Pack objects whose memory lies in a shared buffer as references: hook
 * gets every object with the buffer protocol that is not bytes or
 * bytearray and answers 1 (written as a reference), 0 (other memory) or
 * -1 (error set).  Without a hook, memoryviews travel as bytes and other
 * buffer exporters are a TypeError.
 */
void pyproc_pack_set_reference_hook(int (*hook)(struct shm_buf *b, PyObject *o));

#endif
