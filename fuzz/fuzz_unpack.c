/*
 * The worker's msgpack decoder (embed/convert.c) against any bytes.
 *
 * The first byte picks the entry point (a value, positional arguments,
 * keyword arguments, or positional arguments onto a stack of four); the
 * rest is the input, copied into a block of its
 * exact size so that AddressSanitizer sees any read past its end.  A
 * decoder must fail with a Python exception and leave the position alone,
 * or succeed having moved it inside the input.  What decodes must encode
 * again, and the encoding must be a fixed point: decoding and encoding it
 * once more gives the same bytes, and a scalar written straight into a
 * reply (pyproc_pack_scalar()) is those bytes too.  Nesting past PYPROC_MAX_DEPTH is an
 * error, never a deep C recursion.
 *
 * References are checked too: decoding and freeing the same input again
 * and again must not make CPython's count of allocated blocks grow every
 * time, so a reference that convert.c forgets to drop is found even though
 * LeakSanitizer does not look inside CPython's allocator.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed/convert.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_unpack: %s\n", what);
        if (PyErr_Occurred())
            PyErr_Print();
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs after which every CPython free list is full (the largest holds
 * 2000 tuples of one size), and runs that must then not grow by one block
 * each. */
enum { FREE_LISTS_FULL = 2100, LEAK_RUNS = 64 };

static PyObject *allocated_blocks; /* sys.getallocatedblocks */

/* CPython's count of the blocks its allocator has handed out. */
static Py_ssize_t blocks_now(void)
{
    PyObject *n = PyObject_CallNoArgs(allocated_blocks); /* new ref */
    Py_ssize_t v;

    check(n != NULL, "sys.getallocatedblocks() failed");
    v = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PyConfig config;
    PyStatus st;

    (void)argc;
    (void)argv;
    PyConfig_InitIsolatedConfig(&config);
    /* libFuzzer owns the signals; the stdlib comes from Debian's prefix. */
    config.install_signal_handlers = 0;
    config.site_import = 0;
    st = PyConfig_SetBytesString(&config, &config.program_name, "/usr/bin/python3");
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);
    allocated_blocks = PySys_GetObject("getallocatedblocks"); /* borrowed */
    check(allocated_blocks != NULL, "no sys.getallocatedblocks");
    Py_INCREF(allocated_blocks);
    return 0;
}

/* Encode o; the encoding must decode into something that encodes alike. */
static void round_trip(PyObject *o)
{
    struct shm_buf b1 = {0}, b2 = {0};
    const char *p;
    PyObject *again;

    check(pyproc_pack(&b1, o) == 0, "a decoded value does not encode");
    /* A scalar written straight into a reply is the same bytes. */
    size_t n = pyproc_pack_scalar_size(o);
    if (n) {
        char scalar[4200];
        check(n <= sizeof scalar && pyproc_pack_scalar(scalar, o) == n && n == b1.len &&
                  memcmp(scalar, b1.data, n) == 0,
              "a scalar is written otherwise than pyproc_pack() writes it");
    }
    p = b1.data;
    again = pyproc_unpack(&p, b1.data + b1.len); /* new ref */
    check(again != NULL, "an encoding does not decode");
    check(p == b1.data + b1.len, "an encoding decodes short");
    check(pyproc_pack(&b2, again) == 0, "a value decoded twice does not encode");
    check(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0,
          "encode(decode(x)) is not a fixed point");
    Py_DECREF(again);
    shm_buf_free(&b1);
    shm_buf_free(&b2);
}

/* Arguments onto a stack of 4, as a call's few are. */
static void decode_into(const char *in, size_t n)
{
    const char *p = in, *end = in + n;
    PyObject *out[4];
    Py_ssize_t got = pyproc_unpack_array_into(&p, end, out, 4);

    if (got < 0) {
        check(PyErr_Occurred() != NULL, "failed without an exception");
        check(p == in, "failed but moved the position");
        PyErr_Clear();
        return;
    }
    check(!PyErr_Occurred(), "succeeded with an exception set");
    if (got > 4) {
        check(p == in, "an array too long for the stack moved the position");
        return;
    }
    check(p > in && p <= end, "succeeded but the position is off");
    for (Py_ssize_t i = 0; i < got; i++)
        Py_DECREF(out[i]);
}

static void decode(int entry, const char *in, size_t n)
{
    const char *p = in, *end = in + n;
    PyObject *o; /* new ref */

    if (entry == 3) {
        decode_into(in, n);
        return;
    }

    if (entry == 0)
        o = pyproc_unpack(&p, end);
    else if (entry == 1)
        o = pyproc_unpack_tuple(&p, end);
    else
        o = pyproc_unpack_kwargs(&p, end);
    if (!o) {
        check(PyErr_Occurred() != NULL, "failed without an exception");
        check(p == in, "failed but moved the position");
        PyErr_Clear();
        return;
    }
    check(!PyErr_Occurred(), "succeeded with an exception set");
    check(p > in && p <= end, "succeeded but the position is off");
    if (entry == 0)
        round_trip(o);
    Py_DECREF(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int entry;
    char *in;
    Py_ssize_t blocks;

    if (size < 1)
        return 0;
    entry = data[0] % 4;
    in = malloc(size - 1 ? size - 1 : 1);
    check(in != NULL, "out of memory");
    memcpy(in, data + 1, size - 1);
    /*
     * The first run may fill caches, and CPython's own tables may still
     * settle (a dict resized past the small-block size); a forgotten
     * reference shows as growth on every run that follows.  Free lists
     * fill one block per run too, for up to PyTuple_MAXFREELIST (2000)
     * runs of the same tuple size, so an input that grows is run past
     * that before its growth counts, and the garbage collector runs
     * before each count there: containers it has yet to look at (deep
     * lists torn down by the trashcan, its generations' thresholds) make
     * counts swing by tens of blocks either way without any leak.
     */
    decode(entry, in, size - 1);
    blocks = blocks_now();
    decode(entry, in, size - 1);
    if (blocks_now() != blocks) {
        for (int i = 0; i < FREE_LISTS_FULL; i++)
            decode(entry, in, size - 1);
        PyGC_Collect();
        blocks = blocks_now();
        for (int i = 0; i < LEAK_RUNS; i++)
            decode(entry, in, size - 1);
        PyGC_Collect();
        check(blocks_now() - blocks < LEAK_RUNS, "decoding leaks a reference");
    }
    free(in);
    return 0;
}
