/*
 * embed/convert.c against Python's msgpack package: same bytes out, same
 * objects in, and clean failures on truncated, hostile or too deep input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "embed/convert.h"

static PyObject *ns;        /* globals the expressions run in */
static PyObject *packb;     /* msgpack.packb */
static PyObject *pack_kw;   /* {"use_bin_type": True} */
static PyObject *unpackb;   /* msgpack.unpackb */
static PyObject *unpack_kw; /* {"strict_map_key": False} */

static const char prelude[] =
    "import array, collections, enum, msgpack\n"
    "class I(int): pass\n"
    "class S(str): pass\n"
    "class F(float): pass\n"
    "class B(bytes): pass\n"
    "class L(list): pass\n"
    "class D(dict): pass\n"
    "class E(enum.IntEnum):\n"
    "    A = 7\n"
    "P = collections.namedtuple('P', 'x y')\n"
    "def nest(n, leaf=None, dict_=False):\n"
    "    for _ in range(n):\n"
    "        leaf = {'k': leaf} if dict_ else [leaf]\n"
    "    return leaf\n";

static int setup(void **state)
{
    PyConfig config;
    PyStatus st;

    (void)state;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    /* Debian's prefix, so python3-msgpack is on sys.path. */
    st = PyConfig_SetBytesString(&config, &config.program_name, "/usr/bin/python3");
    if (PyStatus_Exception(st))
        goto fail;
    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st))
        goto fail;
    PyConfig_Clear(&config);

    PyObject *main_mod = PyImport_AddModule("__main__"); /* borrowed */
    if (!main_mod)
        goto py_fail;
    ns = PyModule_GetDict(main_mod);                            /* borrowed */
    PyObject *r = PyRun_String(prelude, Py_file_input, ns, ns); /* new ref */
    if (!r)
        goto py_fail;
    Py_DECREF(r);
    packb = PyRun_String("msgpack.packb", Py_eval_input, ns, ns);     /* new ref */
    unpackb = PyRun_String("msgpack.unpackb", Py_eval_input, ns, ns); /* new ref */
    pack_kw = Py_BuildValue("{s:O}", "use_bin_type", Py_True);        /* new ref */
    unpack_kw = Py_BuildValue("{s:O}", "strict_map_key", Py_False);   /* new ref */
    if (!packb || !unpackb || !pack_kw || !unpack_kw)
        goto py_fail;
    return 0;

py_fail:
    PyErr_Print();
    return -1;
fail:
    PyConfig_Clear(&config);
    fprintf(stderr, "Python init failed: %s\n", st.err_msg ? st.err_msg : "?");
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    Py_CLEAR(packb);
    Py_CLEAR(unpackb);
    Py_CLEAR(pack_kw);
    Py_CLEAR(unpack_kw);
    return Py_FinalizeEx() < 0 ? -1 : 0;
}

/* ---- helpers ---- */

static PyObject *eval(const char *expr)
{
    PyObject *o = PyRun_String(expr, Py_eval_input, ns, ns); /* new ref */

    if (!o) {
        PyErr_Print();
        fail_msg("cannot evaluate %s", expr);
    }
    return o;
}

/* msgpack.packb(o, use_bin_type=True), as a new bytes object. */
static PyObject *ref_pack(PyObject *o)
{
    PyObject *args = PyTuple_Pack(1, o); /* new ref */
    assert_non_null(args);
    PyObject *ret = PyObject_Call(packb, args, pack_kw); /* new ref */
    Py_DECREF(args);
    if (!ret)
        PyErr_Print();
    assert_non_null(ret);
    return ret;
}

static PyObject *ref_unpack(PyObject *bytes)
{
    PyObject *args = PyTuple_Pack(1, bytes); /* new ref */
    assert_non_null(args);
    PyObject *ret = PyObject_Call(unpackb, args, unpack_kw); /* new ref */
    Py_DECREF(args);
    if (!ret)
        PyErr_Print();
    assert_non_null(ret);
    return ret;
}

/* Same repr (which tells 1 from True and 1.0) and, but for NaN, equal. */
static void assert_same(PyObject *a, PyObject *b, const char *what)
{
    PyObject *ra = PyObject_Repr(a); /* new ref */
    PyObject *rb = PyObject_Repr(b); /* new ref */
    assert_non_null(ra);
    assert_non_null(rb);
    if (PyUnicode_Compare(ra, rb) != 0) {
        fail_msg("%s: %.200s != %.200s", what, PyUnicode_AsUTF8(ra), PyUnicode_AsUTF8(rb));
    }
    Py_DECREF(ra);
    Py_DECREF(rb);
}

/* The pending exception is of type exc (and says msg, when given). */
static void assert_raised(PyObject *exc, const char *msg)
{
    PyObject *type, *value, *tb;

    assert_non_null(PyErr_Occurred());
    assert_true(PyErr_ExceptionMatches(exc));
    PyErr_Fetch(&type, &value, &tb); /* new refs */
    if (msg) {
        PyObject *s = PyObject_Str(value); /* new ref */
        assert_non_null(s);
        if (!strstr(PyUnicode_AsUTF8(s), msg))
            fail_msg("message '%s' lacks '%s'", PyUnicode_AsUTF8(s), msg);
        Py_DECREF(s);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* pyproc_unpack of [data, data + n) from a buffer exactly n bytes long,
 * so that any read past the end shows under ASan and Valgrind. */
static PyObject *unpack_exact(PyObject *(*fn)(const char **, const char *), const char *data,
                              size_t n, size_t *used)
{
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, data, n);
    const char *p = copy;
    PyObject *ret = fn(&p, copy + n);
    if (ret)
        *used = (size_t)(p - copy);
    else
        assert_ptr_equal(p, copy); /* untouched on failure */
    free(copy);
    return ret;
}

/* ---- tests ---- */

struct sample {
    const char *expr;
    int exact; /* decodes back to an equal object of the same types */
};

static const struct sample samples[] = {
    {"None", 1},
    {"True", 1},
    {"False", 1},
    {"0", 1},
    {"1", 1},
    {"127", 1},
    {"128", 1},
    {"255", 1},
    {"256", 1},
    {"65535", 1},
    {"65536", 1},
    {"2**32 - 1", 1},
    {"2**32", 1},
    {"2**63 - 1", 1},
    {"2**63", 1},
    {"2**64 - 1", 1},
    {"-1", 1},
    {"-32", 1},
    {"-33", 1},
    {"-128", 1},
    {"-129", 1},
    {"-32768", 1},
    {"-32769", 1},
    {"-2**31", 1},
    {"-2**31 - 1", 1},
    {"-2**63", 1},
    {"0.0", 1},
    {"-0.0", 1},
    {"1.5", 1},
    {"-2.25e-300", 1},
    {"1e308", 1},
    {"float('inf')", 1},
    {"float('-inf')", 1},
    {"float('nan')", 1},
    {"''", 1},
    {"'a'", 1},
    {"'x' * 31", 1},
    {"'x' * 32", 1},
    {"'x' * 255", 1},
    {"'x' * 256", 1},
    {"'x' * 65535", 1},
    {"'x' * 65536", 1},
    {"'h\\xe9llo w\\xf6rld \\u2603 \\U0001d11e'", 1},
    {"'nul\\x00inside'", 1},
    {"b''", 1},
    {"b'\\x00'", 1},
    {"b'\\x00ab\\x00\\x00'", 1},
    {"bytes(range(256)) * 300", 1},
    {"b'z' * 70000", 1},
    {"[]", 1},
    {"{}", 1},
    {"[[]]", 1},
    {"[{}]", 1},
    {"{'': {}}", 1},
    {"list(range(15))", 1},
    {"list(range(16))", 1},
    {"list(range(-40, 70000, 3))", 1},
    {"{str(i): i for i in range(15)}", 1},
    {"{str(i): i for i in range(16)}", 1},
    {"{str(i): [i, str(i)] for i in range(70000)}", 1},
    {"[1, [2, [3, [4, []]]], {'a': {'b': {'c': None}}}]", 1},
    {"{'a': 1, 'b': [1, 2.5, {'c': None, 'd': b'\\x00'}], 'e': 'f'}", 1},
    {"{1: 'int key', b'k': 2, 2.5: 3, None: 4, -7: []}", 1},
    {"[True, False, None, 1, 1.0, '1', b'1']", 1},
    {"nest(100)", 1},
    {"nest(100, 'leaf', True)", 1},
    /* Sent as something else: tuples as arrays, buffers as bin,
     * subclasses as their base type. */
    {"()", 0},
    {"(1, 'a', (2, (3,)))", 0},
    {"{'t': (1, [2, (3, {})])}", 0},
    {"bytearray(b'ab\\x00c')", 0},
    {"bytearray()", 0},
    {"memoryview(b'xyz')", 0},
    {"memoryview(b'')", 0},
    {"memoryview(array.array('i', [1, -2, 3]))", 0},
    {"memoryview(bytes(range(256)) * 2).cast('B', (16, 32))", 0},
    {"I(5)", 0},
    {"I(-2**63)", 0},
    {"E.A", 0},
    {"S('sub')", 0},
    {"F(2.5)", 0},
    {"B(b'q\\x00')", 0},
    {"L([1, L([2])])", 0},
    {"D(a=D(b=1))", 0},
    {"P(1, P('x', None))", 0},
    {"collections.OrderedDict(a=1, b=2)", 0},
    {"collections.defaultdict(list, k=[1])", 0},
};

/* Same bytes as msgpack.packb; the bytes decode to what msgpack.unpackb
 * makes of them; exact samples come back as themselves. */
static void test_matches_msgpack(void **state)
{
    struct shm_buf b = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const char *expr = samples[i].expr;
        PyObject *o = eval(expr);
        PyObject *ref = ref_pack(o);

        shm_buf_reset(&b);
        if (pyproc_pack(&b, o) < 0) {
            PyErr_Print();
            fail_msg("pyproc_pack(%s) failed", expr);
        }
        if (b.len != (size_t)PyBytes_GET_SIZE(ref) ||
            memcmp(b.data, PyBytes_AS_STRING(ref), b.len) != 0)
            fail_msg("pyproc_pack(%s) differs from msgpack.packb", expr);

        size_t used = 0;
        PyObject *back = unpack_exact(pyproc_unpack, b.data, b.len, &used);
        if (!back) {
            PyErr_Print();
            fail_msg("pyproc_unpack(packb(%s)) failed", expr);
        }
        assert_int_equal(used, b.len);
        PyObject *expect = ref_unpack(ref);
        assert_same(back, expect, expr);
        if (samples[i].exact) {
            assert_same(back, o, expr);
            if (!PyFloat_Check(o) || PyFloat_AS_DOUBLE(o) == PyFloat_AS_DOUBLE(o))
                assert_int_equal(PyObject_RichCompareBool(back, o, Py_EQ), 1);
        }
        Py_DECREF(expect);
        Py_DECREF(back);
        Py_DECREF(ref);
        Py_DECREF(o);
    }
    shm_buf_free(&b);
}

/* Encodings msgpack.packb never writes but other writers may: float32 and
 * lengths wider than they need be. */
static void test_unpack_other_encodings(void **state)
{
    static const struct {
        const char *data;
        size_t len;
        const char *expect;
    } cases[] = {
        {"\xca\x3f\xc0\x00\x00", 5, "1.5"},
        {"\xcd\x00\x01", 3, "1"},
        {"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, "18446744073709551615"},
        {"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, "-9223372036854775808"},
        {"\xd0\x05", 2, "5"},
        {"\xdb\x00\x00\x00\x02hi", 7, "'hi'"},
        {"\xc6\x00\x00\x00\x01\x00", 6, "b'\\x00'"},
        {"\xdd\x00\x00\x00\x02\x01\xc0", 7, "[1, None]"},
        {"\xdf\x00\x00\x00\x01\xa1k\xc3", 8, "{'k': True}"},
        {"\xa0", 1, "''"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t used = 0;
        PyObject *o = unpack_exact(pyproc_unpack, cases[i].data, cases[i].len, &used);
        PyObject *expect = eval(cases[i].expect);

        if (!o)
            PyErr_Print();
        assert_non_null(o);
        assert_int_equal(used, cases[i].len);
        assert_same(o, expect, cases[i].expect);
        Py_DECREF(o);
        Py_DECREF(expect);
    }
}

/* Values written back to back come off one at a time. */
static void test_unpack_advances(void **state)
{
    struct shm_buf b = {0};
    PyObject *objs = eval("[1, 'two', [3.0], {'four': b'4'}, None]");

    (void)state;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs); i++)
        assert_int_equal(pyproc_pack(&b, PyList_GET_ITEM(objs, i)), 0);

    const char *p = b.data, *end = b.data + b.len;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs); i++) {
        PyObject *o = pyproc_unpack(&p, end);
        assert_non_null(o);
        assert_same(o, PyList_GET_ITEM(objs, i), "back to back");
        Py_DECREF(o);
    }
    assert_ptr_equal(p, end);
    assert_null(pyproc_unpack(&p, end));
    assert_raised(PyExc_ValueError, "truncated");
    Py_DECREF(objs);
    shm_buf_free(&b);
}

/* Every proper prefix fails with ValueError, reads nothing beyond it. */
static void check_every_cut(PyObject *(*fn)(const char **, const char *), const char *data,
                            size_t len)
{
    size_t used = 0;

    for (size_t cut = 0; cut < len; cut++) {
        PyObject *o = unpack_exact(fn, data, cut, &used);
        if (o)
            fail_msg("prefix of %zu of %zu bytes decoded", cut, len);
        assert_raised(PyExc_ValueError, NULL);
    }
    PyObject *o = unpack_exact(fn, data, len, &used);
    if (!o)
        PyErr_Print();
    assert_non_null(o);
    assert_int_equal(used, len);
    Py_DECREF(o);
}

static void test_truncated(void **state)
{
    static const char *const exprs[] = {
        "[None, True, False, 0, 200, 70000, 2**40, 2**64 - 1, -1, -100,"
        " -1000, -70000, -2**40, 1.5, '', 's', 'x' * 40, 'y' * 300,"
        " '\\u2603', b'', b'\\x00' * 3, b'b' * 300, [], {}, [[1], {'a': [2]}],"
        " list(range(20)), {str(i): i for i in range(20)}, 'z' * 70000,"
        " b'w' * 70000]",
        "{'a': 1, 'b': [1, 2, 3], 'c': {'d': 'e'}}",
    };
    static const struct {
        const char *data;
        size_t len;
    } handmade[] = {
        {"\xca\x3f\xc0\x00\x00", 5},          {"\xdb\x00\x00\x00\x02hi", 7},
        {"\xc6\x00\x00\x00\x01\x00", 6},      {"\xdd\x00\x00\x00\x02\x01\xc0", 7},
        {"\xdf\x00\x00\x00\x01\xa1k\xc3", 8}, {"\xde\x00\x01\xa1k\x91\xc0", 7},
        {"\xdc\x00\x01\x91\xc0", 5},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
        PyObject *o = eval(exprs[i]);
        PyObject *ref = ref_pack(o);
        const char *data = PyBytes_AS_STRING(ref);
        size_t len = (size_t)PyBytes_GET_SIZE(ref);

        check_every_cut(pyproc_unpack, data, len);
        check_every_cut(PyList_Check(o) ? pyproc_unpack_tuple : pyproc_unpack_kwargs, data, len);
        Py_DECREF(ref);
        Py_DECREF(o);
    }
    for (size_t i = 0; i < sizeof(handmade) / sizeof(handmade[0]); i++)
        check_every_cut(pyproc_unpack, handmade[i].data, handmade[i].len);
}

/* Input that lies about lengths or uses what we refuse. */
static void test_unpack_bad_input(void **state)
{
    static const struct {
        const char *data;
        size_t len;
        PyObject **exc;
        const char *msg;
    } cases[] = {
        {"\xc1", 1, &PyExc_ValueError, "0xc1"},
        {"\xd4\x01\x00", 3, &PyExc_ValueError, "ext types are not supported"},
        {"\xd8\x01"
         "0123456789abcdef",
         18, &PyExc_ValueError, "ext types"},
        {"\xc7\x01\x05\x00", 4, &PyExc_ValueError, "ext types"},
        {"\xc9\x00\x00\x00\x01\x05\x00", 7, &PyExc_ValueError, "ext types"},
        {"\x91\xd5\x01\x00\x00", 5, &PyExc_ValueError, "ext types"},
        /* Lengths near 4 GiB with a few bytes behind them must fail
         * before anything that size is allocated. */
        {"\xdd\xff\xff\xff\xff\xc0\xc0", 7, &PyExc_ValueError, "truncated"},
        {"\xdf\xff\xff\xff\xff\xc0\xc0", 7, &PyExc_ValueError, "truncated"},
        {"\xdb\xff\xff\xff\xff"
         "abc",
         8, &PyExc_ValueError, "truncated"},
        {"\xc6\xff\xff\xff\xff"
         "abc",
         8, &PyExc_ValueError, "truncated"},
        {"\x82\xa1k\xc0", 4, &PyExc_ValueError, "truncated"},
        {"\xa2\xff\xfe", 3, &PyExc_UnicodeDecodeError, NULL},
        {"\xa3\xed\xa0\x80", 4, &PyExc_UnicodeDecodeError, NULL}, /* surrogate */
        {"\x91\xa1\x80", 3, &PyExc_UnicodeDecodeError, NULL},
        {"\x81\x91\x01\x02", 4, &PyExc_TypeError, "unhashable"},
        {"\x81\x80\x02", 3, &PyExc_TypeError, "unhashable"},
        {"", 0, &PyExc_ValueError, "truncated"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t used = 0;
        PyObject *o = unpack_exact(pyproc_unpack, cases[i].data, cases[i].len, &used);
        if (o)
            fail_msg("bad input %zu decoded", i);
        assert_raised(*cases[i].exc, cases[i].msg);
    }
}

static char *repeat(const char *unit, size_t unit_len, size_t n, const char *tail, size_t *len)
{
    size_t tail_len = strlen(tail);
    char *s = malloc(unit_len * n + tail_len);

    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * unit_len, unit, unit_len);
    memcpy(s + unit_len * n, tail, tail_len);
    *len = unit_len * n + tail_len;
    return s;
}

/* PYPROC_MAX_DEPTH containers deep decodes; one more fails, as does far
 * more (which would overflow the stack without the bound). */
static void test_unpack_depth(void **state)
{
    static const struct {
        const char *unit;
        size_t len;
    } units[] = {{"\x91", 1}, {"\x81\xa1k", 3}, {"\xdc\x00\x01", 3}};
    size_t depths[] = {PYPROC_MAX_DEPTH, PYPROC_MAX_DEPTH + 1, 1000000};

    (void)state;
    for (size_t u = 0; u < 3; u++) {
        for (size_t d = 0; d < 3; d++) {
            size_t len, used = 0;
            char *s = repeat(units[u].unit, units[u].len, depths[d], "\xc0", &len);
            PyObject *o = unpack_exact(pyproc_unpack, s, len, &used);
            if (depths[d] <= PYPROC_MAX_DEPTH) {
                assert_non_null(o);
                assert_int_equal(used, len);
                Py_DECREF(o);
            } else {
                assert_null(o);
                assert_raised(PyExc_ValueError, "nested deeper");
            }
            /* The argument decoders count their own container too. */
            o = unpack_exact(pyproc_unpack_tuple, s, len, &used);
            if (u != 1 && depths[d] <= PYPROC_MAX_DEPTH) {
                assert_non_null(o);
                Py_DECREF(o);
            } else {
                assert_null(o);
                assert_raised(u == 1 ? PyExc_TypeError : PyExc_ValueError, NULL);
            }
            free(s);
        }
    }
}

static void test_pack_depth(void **state)
{
    static const char *const ok[] = {"nest(512)", "nest(512, 1, True)"};
    static const char *const deep[] = {
        "nest(513)",
        "nest(513, 1, True)",
        "nest(100000)",
        "(lambda l: (l.append(l), l)[1])([])",
        "(lambda d: (d.update(me=d), d)[1])({})",
        "(lambda l: (l.append({'x': (1, l)}), l)[1])([])",
    };
    struct shm_buf b = {0};

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        PyObject *o = eval(ok[i]);
        shm_buf_reset(&b);
        assert_int_equal(pyproc_pack(&b, o), 0);
        const char *p = b.data;
        PyObject *back = pyproc_unpack(&p, b.data + b.len);
        assert_non_null(back);
        assert_int_equal(PyObject_RichCompareBool(back, o, Py_EQ), 1);
        Py_DECREF(back);
        Py_DECREF(o);
    }
    for (size_t i = 0; i < sizeof(deep) / sizeof(deep[0]); i++) {
        PyObject *o = eval(deep[i]);
        assert_int_equal(shm_buf_append(&b, "keep", 4), 0);
        size_t before = b.len;
        assert_int_equal(pyproc_pack(&b, o), -1);
        assert_raised(PyExc_ValueError, "nested deeper than 512");
        assert_int_equal(b.len, before);
        /* Break the cycles so the objects can go. */
        if (PyList_Check(o))
            assert_int_equal(PyList_SetSlice(o, 0, PyList_GET_SIZE(o), NULL), 0);
        else
            PyDict_Clear(o);
        Py_DECREF(o);
    }
    shm_buf_free(&b);
}

/* Objects that cannot go: the documented error, nothing left in b. */
static void test_pack_errors(void **state)
{
    static const struct {
        const char *expr;
        PyObject **exc;
        const char *msg;
    } cases[] = {
        {"open('/dev/null')", &PyExc_TypeError, "cannot send object of type '_io.TextIOWrapper'"},
        {"{1, 2}", &PyExc_TypeError, "cannot send object of type 'set'"},
        {"[1, 2, object()]", &PyExc_TypeError, "type 'object'"},
        {"{'a': 1, 'b': lambda: 0}", &PyExc_TypeError, "type 'function'"},
        {"{(1, 2j): 3}", &PyExc_TypeError, "type 'complex'"},
        {"2**64", &PyExc_OverflowError, NULL},
        {"[1, 'x', -2**63 - 1]", &PyExc_OverflowError, NULL},
        {"I(2**100)", &PyExc_OverflowError, NULL},
        {"'\\ud800'", &PyExc_UnicodeEncodeError, NULL},
        {"memoryview(b'abcdef')[::2]", &PyExc_TypeError, "not C-contiguous"},
        {"(lambda m: (m.release(), m)[1])(memoryview(b'ab'))", &PyExc_ValueError, "released"},
    };
    struct shm_buf b = {0};

    (void)state;
    assert_int_equal(shm_buf_append(&b, "prefix", 6), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        PyObject *o = eval(cases[i].expr);
        assert_int_equal(pyproc_pack(&b, o), -1);
        assert_raised(*cases[i].exc, cases[i].msg);
        assert_int_equal(b.len, 6);
        if (i == 0) {
            PyObject *r = PyObject_CallMethod(o, "close", NULL); /* new ref */
            assert_non_null(r);
            Py_DECREF(r);
        }
        Py_DECREF(o);
    }
    assert_memory_equal(b.data, "prefix", 6);
    shm_buf_free(&b);
}

/* The buffer's limit: a message that fits exactly goes, one byte less
 * gives "message too large" and leaves b as it was. */
static void test_pack_limit(void **state)
{
    static const char *const exprs[] = {
        "None",     "70000",      "-70000",    "1.5",
        "'x' * 40", "b'y' * 300", "[1, 2, 3]", "{'k': [None, 'v' * 20]}",
    };
    struct shm_buf b = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
        PyObject *o = eval(exprs[i]);
        PyObject *ref = ref_pack(o);
        size_t need = (size_t)PyBytes_GET_SIZE(ref);

        for (size_t limit = 3; limit < 3 + need; limit++) {
            shm_buf_free(&b);
            b.limit = limit;
            assert_int_equal(shm_buf_append(&b, "pre", 3), 0);
            assert_int_equal(pyproc_pack(&b, o), -1);
            assert_raised(PyExc_ValueError, "message too large");
            assert_int_equal(b.len, 3);
        }
        shm_buf_free(&b);
        b.limit = 3 + need;
        assert_int_equal(shm_buf_append(&b, "pre", 3), 0);
        assert_int_equal(pyproc_pack(&b, o), 0);
        assert_int_equal(b.len, 3 + need);
        assert_memory_equal(b.data + 3, PyBytes_AS_STRING(ref), need);
        Py_DECREF(ref);
        Py_DECREF(o);
    }
    shm_buf_free(&b);
}

static void test_unpack_tuple(void **state)
{
    static const char *const good[] = {"[]", "[1, 'a', [2], {'b': None}]"};
    static const char *const bad[] = {"{}", "None", "'[]'", "b''", "1"};

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        PyObject *o = eval(good[i]);
        PyObject *ref = ref_pack(o);
        size_t used = 0;
        PyObject *t = unpack_exact(pyproc_unpack_tuple, PyBytes_AS_STRING(ref),
                                   (size_t)PyBytes_GET_SIZE(ref), &used);
        assert_non_null(t);
        assert_true(PyTuple_CheckExact(t));
        assert_int_equal(used, PyBytes_GET_SIZE(ref));
        PyObject *expect = PyList_AsTuple(o); /* new ref */
        assert_same(t, expect, good[i]);
        Py_DECREF(expect);
        Py_DECREF(t);
        Py_DECREF(ref);
        Py_DECREF(o);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        PyObject *o = eval(bad[i]);
        PyObject *ref = ref_pack(o);
        size_t used = 0;
        assert_null(unpack_exact(pyproc_unpack_tuple, PyBytes_AS_STRING(ref),
                                 (size_t)PyBytes_GET_SIZE(ref), &used));
        assert_raised(PyExc_TypeError, "must be a msgpack array");
        Py_DECREF(ref);
        Py_DECREF(o);
    }
}

static void test_unpack_kwargs(void **state)
{
    static const char *const bad[] = {"[]", "None", "{1: 2}", "{'a': 1, b'b': 2}", "{None: 1}"};
    PyObject *o = eval("{'alpha': 1, 'beta': [2, {'x': 3}], 'gamma': None}");
    PyObject *ref = ref_pack(o);
    size_t used = 0;

    (void)state;
    PyObject *d = unpack_exact(pyproc_unpack_kwargs, PyBytes_AS_STRING(ref),
                               (size_t)PyBytes_GET_SIZE(ref), &used);
    assert_non_null(d);
    assert_true(PyDict_CheckExact(d));
    assert_same(d, o, "kwargs");
    Py_ssize_t pos = 0;
    PyObject *k, *v; /* borrowed */
    while (PyDict_Next(d, &pos, &k, &v))
        assert_true(PyUnicode_CHECK_INTERNED(k));
    Py_DECREF(d);
    Py_DECREF(ref);
    Py_DECREF(o);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o = eval(bad[i]);
        ref = ref_pack(o);
        assert_null(unpack_exact(pyproc_unpack_kwargs, PyBytes_AS_STRING(ref),
                                 (size_t)PyBytes_GET_SIZE(ref), &used));
        assert_raised(PyExc_TypeError, i < 2 ? "must be a msgpack map" : "must be str");
        Py_DECREF(ref);
        Py_DECREF(o);
    }
}

static void test_unpack_array_into(void **state)
{
    static const char *const good[] = {"[]", "[1]", "[1, 'a', [2], {'b': None}]"};
    PyObject *out[4];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        PyObject *o = eval(good[i]);
        PyObject *ref = ref_pack(o);
        const char *p = PyBytes_AS_STRING(ref), *end = p + PyBytes_GET_SIZE(ref);
        Py_ssize_t n = pyproc_unpack_array_into(&p, end, out, 4);
        assert_int_equal(n, PyList_GET_SIZE(o));
        assert_ptr_equal(p, end);
        PyObject *got = PyList_New(n); /* new ref */
        for (Py_ssize_t k = 0; k < n; k++)
            PyList_SET_ITEM(got, k, out[k]); /* steals */
        assert_same(got, o, good[i]);
        Py_DECREF(got);
        Py_DECREF(ref);
        Py_DECREF(o);
    }
    /* Longer than out: its length, nothing decoded, *p where it was. */
    PyObject *o = eval("[1, 2, 3, 4, 5]");
    PyObject *ref = ref_pack(o);
    const char *p = PyBytes_AS_STRING(ref), *start = p;
    assert_int_equal(pyproc_unpack_array_into(&p, p + PyBytes_GET_SIZE(ref), out, 4), 5);
    assert_ptr_equal(p, start);
    assert_null(PyErr_Occurred());
    Py_DECREF(ref);
    Py_DECREF(o);
    /* Not an array, and an item that fails: nothing left behind. */
    o = eval("{}");
    ref = ref_pack(o);
    p = start = PyBytes_AS_STRING(ref);
    assert_int_equal(pyproc_unpack_array_into(&p, p + PyBytes_GET_SIZE(ref), out, 4), -1);
    assert_raised(PyExc_TypeError, "must be a msgpack array");
    assert_ptr_equal(p, start);
    Py_DECREF(ref);
    Py_DECREF(o);
    static const char bad_utf8[] = {(char)0x92, 0x01, (char)0xa1, (char)0xff};
    p = bad_utf8;
    assert_int_equal(pyproc_unpack_array_into(&p, bad_utf8 + sizeof bad_utf8, out, 4), -1);
    assert_true(PyErr_ExceptionMatches(PyExc_UnicodeDecodeError));
    PyErr_Clear();
    assert_ptr_equal(p, bad_utf8);
    static const char truncated[] = {(char)0x93, 0x01, 0x02};
    p = truncated;
    assert_int_equal(pyproc_unpack_array_into(&p, truncated + sizeof truncated, out, 4), -1);
    assert_true(PyErr_ExceptionMatches(PyExc_ValueError));
    PyErr_Clear();
}

/* pyproc_pack_scalar() writes what msgpack writes, and takes only what it
 * says it takes. */
static void test_pack_scalar(void **state)
{
    static const char *const scalars[] = {
        "None", "True",    "False",      "0",      "127",           "128",        "-1",
        "-32",  "-33",     "2**63 - 1",  "-2**63", "1.5",           "-0.0",       "float('inf')",
        "''",   "'ascii'", "'x' * 4096", "b''",    "b'\\x00\\xff'", "b'y' * 4096"};
    static const char *const others[] = {"2**64 - 1",
                                         "2**64",
                                         "-2**63 - 1",
                                         "'d\\u00e9j\\u00e0'",
                                         "'x' * 4097",
                                         "b'y' * 4097",
                                         "I(1)",
                                         "S('s')",
                                         "F(1.0)",
                                         "B(b'b')",
                                         "E.A",
                                         "[]",
                                         "()",
                                         "{}",
                                         "bytearray(b'a')"};
    char buf[4200];

    (void)state;
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
        PyObject *o = eval(scalars[i]);
        PyObject *ref = ref_pack(o);
        size_t n = pyproc_pack_scalar_size(o);
        if (n != (size_t)PyBytes_GET_SIZE(ref))
            fail_msg("%s: %zu bytes, msgpack writes %zd", scalars[i], n, PyBytes_GET_SIZE(ref));
        memset(buf, 0x55, sizeof buf);
        assert_int_equal(pyproc_pack_scalar(buf, o), n);
        assert_memory_equal(buf, PyBytes_AS_STRING(ref), n);
        assert_int_equal((unsigned char)buf[n], 0x55);
        Py_DECREF(ref);
        Py_DECREF(o);
    }
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        PyObject *o = eval(others[i]);
        if (pyproc_pack_scalar_size(o) != 0)
            fail_msg("%s taken as a scalar", others[i]);
        assert_null(PyErr_Occurred());
        Py_DECREF(o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_msgpack),  cmocka_unit_test(test_unpack_other_encodings),
        cmocka_unit_test(test_unpack_advances),  cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_unpack_bad_input), cmocka_unit_test(test_unpack_depth),
        cmocka_unit_test(test_pack_depth),       cmocka_unit_test(test_pack_errors),
        cmocka_unit_test(test_pack_limit),       cmocka_unit_test(test_unpack_tuple),
        cmocka_unit_test(test_unpack_kwargs),    cmocka_unit_test(test_unpack_array_into),
        cmocka_unit_test(test_pack_scalar),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
