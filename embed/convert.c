/*
 * msgpack <-> Python objects, on the path of every call and every reply.
 *
 * Decoding trusts nothing in the input: every header and every length is
 * checked against the end of the buffer before it is used, so a hostile or
 * torn message costs an exception, never a read out of bounds or a huge
 * allocation.  Both directions use the concrete C APIs of each type and
 * call no Python-level code.  Encoding also allocates no Python object, so
 * no garbage collection, finalizer or thread switch can run while it walks
 * borrowed references: the objects it walks cannot change underneath.
 */
/* The one file of the worker that carries msgpuck's out-of-line code. */
#define MP_SOURCE 1
#include "convert.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <msgpuck.h>

#include "hot.h"

/* ---- decoding ---- */

/* What one msgpack header said, before any object is made from it. */
enum head_kind {
    HEAD_NIL,
    HEAD_FALSE,
    HEAD_TRUE,
    HEAD_INT,    /* i */
    HEAD_UINT,   /* u, may exceed INT64_MAX */
    HEAD_FLOAT,  /* d */
    HEAD_STR,    /* n payload bytes follow */
    HEAD_BIN,    /* n payload bytes follow */
    HEAD_ARRAY,  /* n values follow */
    HEAD_MAP,    /* n key/value pairs follow */
    HEAD_BUFFER, /* a shared buffer's token, offset and length */
};

struct head {
    enum head_kind kind;
    union {
        int64_t i;
        uint64_t u;
        double d;
        uint32_t n;
        uint64_t buf[3]; /* token, offset, length */
    };
};

/* What makes a shared buffer argument into a Python object; NULL: none
 * is accepted (see pyproc_unpack_set_buffer_hook()). */
static PyObject *(*buffer_hook)(uint64_t token, uint64_t off, uint64_t len);

void pyproc_unpack_set_buffer_hook(PyObject *(*hook)(uint64_t, uint64_t, uint64_t))
{
    buffer_hook = hook;
}

/*
 * Bytes that follow the first byte 0xc0 + i before any payload: the value
 * of a scalar or the length field of a str, bin or container.  Ext types
 * (0xc7-0xc9, 0xd4-0xd8) and 0xc1 are refused before this is looked at.
 */
static const uint8_t head_extra[32] = {
    0, 0, 0, 0, 1, 2, 4, 0, /* nil, never used, false, true, bin 8/16/32, ext */
    0, 0, 4, 8, 1, 2, 4, 8, /* ext, ext, float32/64, uint 8/16/32/64 */
    1, 2, 4, 8, 0, 0, 0, 0, /* int 8/16/32/64, fixext */
    0, 1, 2, 4, 2, 4, 2, 4, /* fixext, str 8/16/32, array 16/32, map 16/32 */
};

static int truncated(void)
{
    PyErr_SetString(PyExc_ValueError, "truncated msgpack data");
    return -1;
}

static size_t left(const char *p, const char *end)
{
    return (size_t)(end - p);
}

/* Length field of 1, 2 or 4 bytes, already known to be in bounds. */
static uint32_t load_len(const char **p, unsigned width)
{
    if (width == 1)
        return mp_load_u8(p);
    if (width == 2)
        return mp_load_u16(p);
    return mp_load_u32(p);
}

/* Decode a header of the first byte c >= 0xc0 (and <= 0xdf). */
/* The one ext the host sends: ext 8 of 24 bytes, type 0x42. */
static int read_buffer_ext(const char **p, const char *end, struct head *h)
{
    if (!buffer_hook || left(*p, end) < 2 + 24 || (uint8_t)(*p)[0] != 24 ||
        (uint8_t)(*p)[1] != 0x42) {
        PyErr_SetString(PyExc_ValueError, "msgpack ext types are not supported");
        return -1;
    }
    *p += 2;
    h->kind = HEAD_BUFFER;
    for (int i = 0; i < 3; i++)
        h->buf[i] = mp_load_u64(p);
    return 0;
}

static int read_head_c0(const char **p, const char *end, uint8_t c, struct head *h)
{
    if (c == 0xc1) {
        PyErr_SetString(PyExc_ValueError, "invalid msgpack byte 0xc1");
        return -1;
    }
    if (c == 0xc7)
        return read_buffer_ext(p, end, h);
    if ((c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8)) {
        PyErr_SetString(PyExc_ValueError, "msgpack ext types are not supported");
        return -1;
    }
    unsigned extra = head_extra[c - 0xc0];
    if (left(*p, end) < extra)
        return truncated();

    /* One line per head byte, as the format lists them. */
    /* clang-format off */
    switch (c) {
    case 0xc0: h->kind = HEAD_NIL; break;
    case 0xc2: h->kind = HEAD_FALSE; break;
    case 0xc3: h->kind = HEAD_TRUE; break;
    case 0xca: h->kind = HEAD_FLOAT; h->d = mp_load_float(p); break;
    case 0xcb: h->kind = HEAD_FLOAT; h->d = mp_load_double(p); break;
    case 0xcc: h->kind = HEAD_UINT; h->u = mp_load_u8(p); break;
    case 0xcd: h->kind = HEAD_UINT; h->u = mp_load_u16(p); break;
    case 0xce: h->kind = HEAD_UINT; h->u = mp_load_u32(p); break;
    case 0xcf: h->kind = HEAD_UINT; h->u = mp_load_u64(p); break;
    case 0xd0: h->kind = HEAD_INT; h->i = (int8_t)mp_load_u8(p); break;
    case 0xd1: h->kind = HEAD_INT; h->i = (int16_t)mp_load_u16(p); break;
    case 0xd2: h->kind = HEAD_INT; h->i = (int32_t)mp_load_u32(p); break;
    case 0xd3: h->kind = HEAD_INT; h->i = (int64_t)mp_load_u64(p); break;
    case 0xc4: case 0xc5: case 0xc6:
        h->kind = HEAD_BIN; h->n = load_len(p, extra); break;
    case 0xd9: case 0xda: case 0xdb:
        h->kind = HEAD_STR; h->n = load_len(p, extra); break;
    case 0xdc: case 0xdd:
        h->kind = HEAD_ARRAY; h->n = load_len(p, extra); break;
    default: /* 0xde, 0xdf */
        h->kind = HEAD_MAP; h->n = load_len(p, extra); break;
    }
    /* clang-format on */
    return 0;
}

/*
 * Read one header at *p and advance past it.  A str or bin must have its
 * whole payload before end, a container at least one byte per value, so
 * no length from the input is ever trusted further than the input goes.
 */
static int read_head(const char **p, const char *end, struct head *h)
{
    if (*p >= end)
        return truncated();
    uint8_t c = mp_load_u8(p);

    if (c <= 0x7f) {
        h->kind = HEAD_INT;
        h->i = c;
        return 0;
    }
    if (c >= 0xe0) {
        h->kind = HEAD_INT;
        h->i = (int8_t)c;
        return 0;
    }
    if (c <= 0x8f) {
        h->kind = HEAD_MAP;
        h->n = c & 0x0f;
    } else if (c <= 0x9f) {
        h->kind = HEAD_ARRAY;
        h->n = c & 0x0f;
    } else if (c <= 0xbf) {
        h->kind = HEAD_STR;
        h->n = c & 0x1f;
    } else if (read_head_c0(p, end, c, h) < 0) {
        return -1;
    }

    if ((h->kind == HEAD_STR || h->kind == HEAD_BIN || h->kind == HEAD_ARRAY) &&
        left(*p, end) < h->n)
        return truncated();
    if (h->kind == HEAD_MAP && left(*p, end) / 2 < h->n)
        return truncated();
    return 0;
}

static PyObject *unpack_value(const char **p, const char *end, int depth);

static PyObject *too_deep(void)
{
    PyErr_Format(PyExc_ValueError, "msgpack data nested deeper than %d levels", PYPROC_MAX_DEPTH);
    return NULL;
}

/* The n values of an array as a new list, or a new tuple when as_tuple. */
static PyObject *unpack_seq(const char **p, const char *end, uint32_t n, int depth, bool as_tuple)
{
    if (depth > PYPROC_MAX_DEPTH)
        return too_deep();

    /* new ref; slots not yet filled are NULL, which dealloc skips */
    PyObject *seq = as_tuple ? PyTuple_New(n) : PyList_New(n);
    if (!seq)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *item = unpack_value(p, end, depth); /* new ref */
        if (!item)
            goto fail;
        if (as_tuple)
            PyTuple_SET_ITEM(seq, i, item); /* steals item */
        else
            PyList_SET_ITEM(seq, i, item); /* steals item */
    }
    return seq;

fail:
    Py_DECREF(seq);
    return NULL;
}

/*
 * The n pairs of a map as a new dict.  str keys are interned, as Python's
 * msgpack does: keyword names then match parameter names by identity.
 */
static PyObject *unpack_dict(const char **p, const char *end, uint32_t n, int depth, bool str_keys)
{
    PyObject *key = NULL, *value = NULL;

    if (depth > PYPROC_MAX_DEPTH)
        return too_deep();
    PyObject *dict = PyDict_New(); /* new ref */
    if (!dict)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        key = unpack_value(p, end, depth); /* new ref */
        if (!key)
            goto fail;
        if (PyUnicode_CheckExact(key)) {
            PyUnicode_InternInPlace(&key); /* swaps key for the interned ref */
        } else if (str_keys) {
            PyErr_Format(PyExc_TypeError, "keyword names must be str, not '%.200s'",
                         Py_TYPE(key)->tp_name);
            goto fail;
        }
        value = unpack_value(p, end, depth); /* new ref */
        if (!value)
            goto fail;
        /* An unhashable key (a list) raises TypeError here. */
        if (PyDict_SetItem(dict, key, value) < 0)
            goto fail;
        Py_CLEAR(key);
        Py_CLEAR(value);
    }
    return dict;

fail:
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_DECREF(dict);
    return NULL;
}

/* depth counts the containers around the value at *p. */
static PyObject *unpack_value(const char **p, const char *end, int depth)
{
    struct head h;
    PyObject *ret;

    if (read_head(p, end, &h) < 0)
        return NULL;
    switch (h.kind) {
    case HEAD_NIL:
        return Py_NewRef(Py_None);
    case HEAD_FALSE:
        return Py_NewRef(Py_False);
    case HEAD_TRUE:
        return Py_NewRef(Py_True);
    case HEAD_INT:
        return PyLong_FromLongLong(h.i);
    case HEAD_UINT:
        return PyLong_FromUnsignedLongLong(h.u);
    case HEAD_FLOAT:
        return PyFloat_FromDouble(h.d);
    case HEAD_STR:
        ret = PyUnicode_DecodeUTF8(*p, h.n, NULL); /* strict: bad UTF-8 raises */
        *p += h.n;
        return ret;
    case HEAD_BIN:
        ret = PyBytes_FromStringAndSize(*p, h.n);
        *p += h.n;
        return ret;
    case HEAD_ARRAY:
        return unpack_seq(p, end, h.n, depth + 1, false);
    case HEAD_MAP:
        return unpack_dict(p, end, h.n, depth + 1, false);
    case HEAD_BUFFER:
        return buffer_hook(h.buf[0], h.buf[1], h.buf[2]);
    }
    Py_UNREACHABLE();
}

PyObject *pyproc_unpack(const char **p, const char *end)
{
    const char *q = *p;
    PyObject *ret = unpack_value(&q, end, 0); /* new ref */

    if (ret)
        *p = q;
    return ret;
}

/* Shared by the argument decoders: one container of the wanted kind. */
static PyObject *unpack_args(const char **p, const char *end, enum head_kind want)
{
    const char *q = *p;
    struct head h;
    PyObject *ret; /* new ref */

    if (read_head(&q, end, &h) < 0)
        return NULL;
    if (h.kind != want) {
        PyErr_SetString(PyExc_TypeError, want == HEAD_ARRAY
                                             ? "positional arguments must be a msgpack array"
                                             : "keyword arguments must be a msgpack map");
        return NULL;
    }
    if (want == HEAD_ARRAY && h.n == 0)
        ret = PyTuple_New(0); /* the shared empty tuple: most calls */
    else if (want == HEAD_ARRAY)
        ret = unpack_seq(&q, end, h.n, 1, true);
    else
        ret = unpack_dict(&q, end, h.n, 1, true);
    if (ret)
        *p = q;
    return ret;
}

PyObject *pyproc_unpack_tuple(const char **p, const char *end)
{
    return unpack_args(p, end, HEAD_ARRAY);
}

PyObject *pyproc_unpack_kwargs(const char **p, const char *end)
{
    return unpack_args(p, end, HEAD_MAP);
}

Py_ssize_t pyproc_unpack_array_into(const char **p, const char *end, PyObject **out, Py_ssize_t max)
{
    const char *q = *p;
    struct head h;

    if (read_head(&q, end, &h) < 0)
        return -1;
    if (h.kind != HEAD_ARRAY) {
        PyErr_SetString(PyExc_TypeError, "positional arguments must be a msgpack array");
        return -1;
    }
    if (h.n > (uint64_t)max)
        return h.n; /* the caller takes the tuple way; *p stays */
    for (uint32_t i = 0; i < h.n; i++) {
        if (!(out[i] = unpack_value(&q, end, 1))) { /* new ref */
            while (i > 0) {
                i--; /* not inside Py_CLEAR(), which names its argument twice */
                Py_CLEAR(out[i]);
            }
            return -1;
        }
    }
    *p = q;
    return h.n;
}

/* ---- encoding ---- */

/* Room for exactly n more bytes, or NULL with the Python error set. */
static char *reserve(struct shm_buf *b, size_t n)
{
    int err = 0;
    char *w = shm_buf_reserve(b, n, &err);

    if (!w) {
        if (err == -EMSGSIZE)
            PyErr_SetString(PyExc_ValueError, "message too large");
        else
            PyErr_NoMemory();
    }
    return w;
}

/* Exact sizes only: a worst-case reservation could trip the limit of a
 * message that would have fit. */
static int pack_byte(struct shm_buf *b, uint8_t c)
{
    char *w = reserve(b, 1);

    if (!w)
        return -1;
    *w = (char)c;
    b->len++;
    return 0;
}

static int pack_int(struct shm_buf *b, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    uint64_t u;
    char *w;

    if (overflow == 0 && v == -1 && PyErr_Occurred())
        return -1;
    if (overflow == 0 && v < 0) {
        if (!(w = reserve(b, mp_sizeof_int(v))))
            return -1;
        b->len = (size_t)(mp_encode_int(w, v) - b->data);
        return 0;
    }
    if (overflow == 0) {
        u = (uint64_t)v;
    } else {
        /* Only uint64 lies beyond int64; msgpack carries nothing larger. */
        u = overflow > 0 ? PyLong_AsUnsignedLongLong(o) : (uint64_t)-1;
        if (overflow < 0 || (u == (uint64_t)-1 && PyErr_Occurred())) {
            PyErr_SetString(PyExc_OverflowError, "int out of range for msgpack (int64 or uint64)");
            return -1;
        }
    }
    if (!(w = reserve(b, mp_sizeof_uint(u))))
        return -1;
    b->len = (size_t)(mp_encode_uint(w, u) - b->data);
    return 0;
}

static int pack_float(struct shm_buf *b, double d)
{
    char *w = reserve(b, mp_sizeof_double(d));

    if (!w)
        return -1;
    b->len = (size_t)(mp_encode_double(w, d) - b->data);
    return 0;
}

/* A str (is_str) or bin of n bytes at s. */
static int pack_raw(struct shm_buf *b, const char *s, Py_ssize_t n, bool is_str)
{
    if ((uint64_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        is_str ? "str too large for msgpack" : "bytes too large for msgpack");
        return -1;
    }
    uint32_t len = (uint32_t)n;
    size_t hsize = is_str ? mp_sizeof_strl(len) : mp_sizeof_binl(len);
    char *w = reserve(b, hsize + len);

    if (!w)
        return -1;
    w = is_str ? mp_encode_strl(w, len) : mp_encode_binl(w, len);
    if (len)
        memcpy(w, s, len);
    b->len += hsize + len;
    return 0;
}

static int pack_str(struct shm_buf *b, PyObject *o)
{
    Py_ssize_t n;
    /* borrowed: o keeps the UTF-8 form (ASCII strings are their own) */
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);

    if (!s)
        return -1;
    return pack_raw(b, s, n, true);
}

static int pack_memoryview(struct shm_buf *b, PyObject *o)
{
    Py_buffer view;

    /* PyBUF_SIMPLE asks for one contiguous run of bytes, as msgpack does. */
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_SetString(PyExc_TypeError,
                            "cannot send object of type 'memoryview' "
                            "(not C-contiguous)");
        }
        return -1;
    }
    int rc = pack_raw(b, view.buf, view.len, false);
    PyBuffer_Release(&view);
    return rc;
}

/* Header of an array (is_map false) or map of n entries. */
static int pack_container(struct shm_buf *b, Py_ssize_t n, bool is_map)
{
    if ((uint64_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        is_map ? "dict too large for msgpack" : "list too large for msgpack");
        return -1;
    }
    uint32_t len = (uint32_t)n;
    char *w = reserve(b, is_map ? mp_sizeof_map(len) : mp_sizeof_array(len));

    if (!w)
        return -1;
    w = is_map ? mp_encode_map(w, len) : mp_encode_array(w, len);
    b->len = (size_t)(w - b->data);
    return 0;
}

static int pack_value(struct shm_buf *b, PyObject *o, int depth);

/* How a value inside a shared buffer is packed as a reference (NULL:
 * never), and how many references the value being packed holds: each one
 * is an fd in flight to the host, whose socket holds a few hundred. */
static int (*reference_hook)(struct shm_buf *b, PyObject *o);
static int references;

void pyproc_pack_set_reference_hook(int (*hook)(struct shm_buf *b, PyObject *o))
{
    reference_hook = hook;
}

static int too_deep_to_pack(void)
{
    PyErr_Format(PyExc_ValueError, "object nested deeper than %d levels (does it contain itself?)",
                 PYPROC_MAX_DEPTH);
    return -1;
}

/* items[0..n) are borrowed from a list or tuple (see the top of the file
 * for why they stay valid). */
static int pack_items(struct shm_buf *b, PyObject *const *items, Py_ssize_t n, int depth)
{
    if (depth > PYPROC_MAX_DEPTH)
        return too_deep_to_pack();
    if (pack_container(b, n, false) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pack_value(b, items[i], depth) < 0)
            return -1;
    }
    return 0;
}

static int pack_dict(struct shm_buf *b, PyObject *o, int depth)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value; /* borrowed */

    if (depth > PYPROC_MAX_DEPTH)
        return too_deep_to_pack();
    if (pack_container(b, PyDict_GET_SIZE(o), true) < 0)
        return -1;
    while (PyDict_Next(o, &pos, &key, &value)) {
        if (pack_value(b, key, depth) < 0 || pack_value(b, value, depth) < 0)
            return -1;
    }
    return 0;
}

/* depth counts the containers around o.  The exact types come first
 * because they are what calls carry; bool before int, as bool is one. */
static int pack_value(struct shm_buf *b, PyObject *o, int depth)
{
    if (o == Py_None)
        return pack_byte(b, 0xc0);
    if (PyBool_Check(o))
        return pack_byte(b, o == Py_True ? 0xc3 : 0xc2);
    if (PyLong_Check(o))
        return pack_int(b, o);
    if (PyFloat_Check(o))
        return pack_float(b, PyFloat_AS_DOUBLE(o));
    if (PyUnicode_Check(o))
        return pack_str(b, o);
    if (PyBytes_Check(o))
        return pack_raw(b, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o), false);
    if (PyList_Check(o) || PyTuple_Check(o))
        return pack_items(b, PySequence_Fast_ITEMS(o), PySequence_Fast_GET_SIZE(o), depth + 1);
    if (PyDict_Check(o))
        return pack_dict(b, o, depth + 1);
    if (PyByteArray_Check(o))
        return pack_raw(b, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o), false);
    if (reference_hook && PyObject_CheckBuffer(o)) {
        int r = reference_hook(b, o);
        if (r != 0) {
            if (r > 0 && ++references > PYPROC_MAX_REFERENCES) {
                PyErr_Format(PyExc_TypeError, "a value may hold at most %d shared buffers",
                             PYPROC_MAX_REFERENCES);
                return -1;
            }
            return r < 0 ? -1 : 0;
        }
    }
    if (PyMemoryView_Check(o))
        return pack_memoryview(b, o);
    PyErr_Format(PyExc_TypeError, "cannot send object of type '%.200s'", Py_TYPE(o)->tp_name);
    return -1;
}

/* Scalars pyproc_pack_scalar() writes: short enough to reserve at once. */
#define SCALAR_MAX 4096

WORKER_HOT size_t pyproc_pack_scalar_size(PyObject *o)
{
    if (o == Py_None || PyBool_Check(o))
        return 1;
    if (PyFloat_CheckExact(o))
        return 9;
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow); /* raises nothing for an int */
        if (overflow)
            return 0;
        return v < 0 ? mp_sizeof_int(v) : mp_sizeof_uint((uint64_t)v);
    }
    if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o) &&
        PyUnicode_GET_LENGTH(o) <= SCALAR_MAX)
        return mp_sizeof_str((uint32_t)PyUnicode_GET_LENGTH(o));
    if (PyBytes_CheckExact(o) && PyBytes_GET_SIZE(o) <= SCALAR_MAX)
        return mp_sizeof_bin((uint32_t)PyBytes_GET_SIZE(o));
    return 0;
}

WORKER_HOT size_t pyproc_pack_scalar(char *dst, PyObject *o)
{
    char *w = dst;

    if (o == Py_None) {
        *w++ = (char)0xc0;
    } else if (PyBool_Check(o)) {
        *w++ = (char)(o == Py_True ? 0xc3 : 0xc2);
    } else if (PyFloat_CheckExact(o)) {
        w = mp_encode_double(w, PyFloat_AS_DOUBLE(o));
    } else if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        w = v < 0 ? mp_encode_int(w, v) : mp_encode_uint(w, (uint64_t)v);
    } else if (PyUnicode_CheckExact(o)) {
        /* Compact ASCII, as pyproc_pack_scalar_size() checked: its bytes
         * are its UTF-8. */
        w = mp_encode_str(w, (const char *)PyUnicode_DATA(o), (uint32_t)PyUnicode_GET_LENGTH(o));
    } else {
        w = mp_encode_bin(w, PyBytes_AS_STRING(o), (uint32_t)PyBytes_GET_SIZE(o));
    }
    return (size_t)(w - dst);
}

int pyproc_pack(struct shm_buf *b, PyObject *o)
{
    size_t len = b->len;

    references = 0;
    if (pack_value(b, o, 0) < 0) {
        b->len = len;
        return -1;
    }
    return 0;
}
