/*
 * End to end: native functions (pyproc_add_native) in real workers.  Every
 * type of the signature grammar round-trips at its limits; bad arguments
 * are refused before native code runs and the worker lives on; bad
 * declarations, symbols and libraries fail at load with a clear message;
 * libm's cos matches the host's; Python calls native functions through the
 * hub; a crash costs one worker; new workers load what the pool loaded.
 *
 * The test library is tests/native/testnative.c, built beside this program
 * in native/.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *pool;
static char lib_path[PATH_MAX];

static const pyproc_native_decl libm_decls[] = {
    {"cos", "d(d)"},
    {"pow", "d(dd)"},
    {NULL, NULL},
};

static void find_test_library(void)
{
    ssize_t n = readlink("/proc/self/exe", lib_path, sizeof lib_path - 1);
    assert_true(n > 0);
    lib_path[n] = 0;
    char *slash = strrchr(lib_path, '/');
    assert_non_null(slash);
    snprintf(slash, sizeof lib_path - (size_t)(slash - lib_path),
             "/native/libpyproc-testnative.so");
    assert_int_equal(access(lib_path, R_OK), 0);
}

static void add_native_ok(pyproc_pool *p, const char *name, const char *lib,
                          const pyproc_native_decl *decls)
{
    pyproc_msg *err = NULL;
    int rc = pyproc_add_native_err(p, name, lib, decls, &err);
    if (rc < 0)
        fprintf(stderr, "%s\n", err ? pyproc_msg_error(err) : pyproc_strerror(rc));
    assert_int_equal(rc, 0);
}

/* A pool with the e2e sub "t", the test library as "n" (from its own
 * table) and libm as "m" (declared here). */
static pyproc_pool *native_pool(int workers)
{
    pyproc_pool *p = e2e_pool(workers);
    add_native_ok(p, "n", lib_path, NULL);
    add_native_ok(p, "m", "libm.so.6", libm_decls);
    return p;
}

static int setup(void **state)
{
    (void)state;
    find_test_library();
    pool = native_pool(2);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    return 0;
}

/* Expect ref to fail in Python with an error whose text has `want`. */
static void expect_remote(pyproc_pool *p, int ind, const char *ref, const char *want,
                          const char *fmt, ...)
{
    pyproc_msg *m = NULL;
    va_list ap;

    va_start(ap, fmt);
    int rc = ind < 0 ? pyproc_funcv(p, ref, &m, fmt, ap)
                     : pyproc_ind_funcv(p, ind, ref, &m, fmt, ap);
    va_end(ap);
    assert_int_equal(rc, PYPROC_EREMOTE);
    if (!strstr(pyproc_msg_error(m), want))
        fail_msg("%s: \"%s\" lacks \"%s\"", ref, pyproc_msg_error(m), want);
    pyproc_msg_free(m);
}

static int64_t call_int(pyproc_pool *p, int ind, const char *ref, const char *fmt, ...)
{
    pyproc_msg *m = NULL;
    int64_t v = 0;
    va_list ap;

    va_start(ap, fmt);
    int rc = ind < 0 ? pyproc_funcv(p, ref, &m, fmt, ap)
                     : pyproc_ind_funcv(p, ind, ref, &m, fmt, ap);
    va_end(ap);
    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    return v;
}

static double call_double(const char *ref, const char *fmt, ...)
{
    pyproc_msg *m = NULL;
    double v = 0;
    va_list ap;

    va_start(ap, fmt);
    int rc = pyproc_funcv(pool, ref, &m, fmt, ap);
    va_end(ap);
    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "d", &v), 0);
    pyproc_msg_free(m);
    return v;
}

static void signed_round_trip(const char *ref, int64_t v)
{
    assert_true(call_int(pool, -1, ref, "I", v) == v);
}

static void unsigned_round_trip(const char *ref, uint64_t v)
{
    pyproc_msg *m = NULL;
    uint64_t got = 0;

    assert_int_equal(pyproc_func(pool, ref, &m, "u", v), 0);
    assert_int_equal(pyproc_msg_read(m, "u", &got), 0);
    assert_true(got == v);
    pyproc_msg_free(m);
}

static void integers_round_trip_at_their_limits(void **state)
{
    static const struct {
        const char *ref;
        int64_t min, max;
    } s[] = {
        {"n.id_b", INT8_MIN, INT8_MAX},
        {"n.id_h", INT16_MIN, INT16_MAX},
        {"n.id_i", INT32_MIN, INT32_MAX},
        {"n.id_q", INT64_MIN, INT64_MAX},
    };
    static const struct {
        const char *ref;
        uint64_t max;
    } u[] = {
        {"n.id_B", UINT8_MAX},
        {"n.id_H", UINT16_MAX},
        {"n.id_I", UINT32_MAX},
        {"n.id_Q", UINT64_MAX},
    };

    (void)state;
    for (size_t i = 0; i < 4; i++) {
        signed_round_trip(s[i].ref, s[i].min);
        signed_round_trip(s[i].ref, s[i].max);
        signed_round_trip(s[i].ref, -1);
        signed_round_trip(s[i].ref, 0);
        unsigned_round_trip(u[i].ref, u[i].max);
        unsigned_round_trip(u[i].ref, u[i].max - 1);
        unsigned_round_trip(u[i].ref, 0);
    }
    /* Unsigned arithmetic wraps in C, and the answer is what C computed. */
    unsigned_round_trip("n.id_Q", (uint64_t)INT64_MAX + 1);
    pyproc_msg *m;
    uint64_t r;
    assert_int_equal(pyproc_func(pool, "n.add_Q", &m, "uu", UINT64_MAX, (uint64_t)2), 0);
    assert_int_equal(pyproc_msg_read(m, "u", &r), 0);
    assert_true(r == 1);
    pyproc_msg_free(m);
    assert_true(call_double("n.neg_q", "I", INT64_MIN) == 9223372036854775808.0);
}

static void integers_out_of_range_are_refused(void **state)
{
    (void)state;
    expect_remote(pool, -1, "n.id_b",
                  "OverflowError: id_b() argument 1: 128 does not fit in int8_t", "i", 128);
    expect_remote(pool, -1, "n.id_b", "does not fit in int8_t", "i", -129);
    expect_remote(pool, -1, "n.id_B", "-1 does not fit in uint8_t", "i", -1);
    expect_remote(pool, -1, "n.id_h", "does not fit in int16_t", "i", 32768);
    expect_remote(pool, -1, "n.id_H", "does not fit in uint16_t", "i", 65536);
    expect_remote(pool, -1, "n.id_i", "does not fit in int32_t", "I", (int64_t)INT32_MAX + 1);
    expect_remote(pool, -1, "n.id_I", "does not fit in uint32_t", "I", (int64_t)UINT32_MAX + 1);
    expect_remote(pool, -1, "n.id_I", "does not fit in uint32_t", "i", -1);
    expect_remote(pool, -1, "n.id_q", "does not fit in int64_t", "u", (uint64_t)INT64_MAX + 1);
    expect_remote(pool, -1, "n.id_Q", "-1 does not fit in uint64_t", "i", -1);
}

static void floats_round_trip(void **state)
{
    static const double ds[] = {0.0,     1.5,    -2.25,    DBL_MAX,  -DBL_MAX,
                                DBL_MIN, 5e-324, INFINITY, -INFINITY};
    static const float fs[] = {0.0f, 1.5f, -0.1f, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, INFINITY};

    (void)state;
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        assert_true(call_double("n.id_d", "d", ds[i]) == ds[i]);
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        assert_true(call_double("n.id_f", "d", (double)fs[i]) == (double)fs[i]);
    assert_true(isnan(call_double("n.id_d", "d", NAN)));
    assert_true(isnan(call_double("n.id_f", "d", NAN)));
    assert_true(signbit(call_double("n.id_d", "d", -0.0)));
    /* A double rounds to the nearest float, as a C cast does. */
    assert_true(call_double("n.id_f", "d", 0.1) == (double)0.1f);
    /* An int is a fine float; a double beyond float's range is not. */
    assert_true(call_double("n.id_d", "i", -3) == -3.0);
    assert_true(call_double("n.id_f", "I", (int64_t)1 << 40) == 1099511627776.0);
    expect_remote(pool, -1, "n.id_f",
                  "OverflowError: id_f() argument 1: 1e+300 is too large for float", "d", 1e300);
    expect_remote(pool, -1, "n.id_f", "too large for float", "d", -(double)FLT_MAX * 2);
}

static void arguments_keep_their_order(void **state)
{
    (void)state;
    /* Ten arguments of ten types, two of the integers on the stack. */
    double want = 1.0 * -100 + 2.0 * 200 + 3.0 * -30000 + 4.0 * 60000 + 5.0 * -2000000000 +
                  6.0 * 4000000000.0 + 7.0 * -(double)(1LL << 40) + 8.0 * (double)(1ULL << 63) +
                  9.0 * 0.5 + 10.0 * 0.25;
    double got = call_double("n.mix", "iiiiIIIudd", -100, 200, -30000, 60000, (int64_t)-2000000000,
                             (int64_t)4000000000, -(int64_t)(1LL << 40), (uint64_t)1 << 63, 0.5,
                             0.25);
    assert_true(got == want);
}

static void strings_in_and_out(void **state)
{
    pyproc_msg *m;
    const char *s;
    uint64_t n;

    (void)state;
    assert_int_equal(pyproc_func(pool, "n.greet", &m, "s", "world"), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "hello, world");
    pyproc_msg_free(m);
    assert_int_equal(call_int(pool, -1, "n.str_len", "s", ""), 0);
    assert_int_equal(call_int(pool, -1, "n.str_len", "s", "h\xc3\xa9llo"), 6); /* UTF-8 bytes */
    assert_int_equal(call_int(pool, -1, "n.str_len", "y", "abc", (size_t)3), 3);
    /* None passes NULL; a NULL return is None. */
    assert_int_equal(pyproc_func(pool, "n.str_len", &m, "n"), 0);
    assert_int_equal(pyproc_msg_read(m, "u", &n), 0);
    assert_true(n == UINT64_MAX);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(pool, "n.no_str", &m, NULL), 0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_NIL);
    pyproc_msg_free(m);
    expect_remote(pool, -1, "n.str_len",
                  "ValueError: str_len() argument 1: embedded null character", "y", "a\0b",
                  (size_t)3);
    expect_remote(pool, -1, "n.str_len", "TypeError: str_len() argument 1 must be str, not int",
                  "i", 1);
}

static void buffers_in(void **state)
{
    static unsigned char big[100000];

    (void)state;
    /* Empty bytes still pass a valid pointer (buf_len answers -1 for NULL). */
    assert_int_equal(call_int(pool, -1, "n.buf_len", "y", "", (size_t)0), 0);
    assert_int_equal(call_int(pool, -1, "n.buf_sum", "y", "", (size_t)0), 0);
    assert_int_equal(call_int(pool, -1, "n.buf_len", "y", "\0\1\0\2\0", (size_t)5), 5);
    assert_int_equal(call_int(pool, -1, "n.buf_sum", "y", "\0\1\0\2\0", (size_t)5), 3);
    memset(big, 0xff, sizeof big);
    assert_int_equal(call_int(pool, -1, "n.buf_sum", "y", big, sizeof big), 255 * 100000);
    expect_remote(pool, -1, "n.buf_len", "TypeError: buf_len() argument 1 must be bytes, not str",
                  "s", "text");
}

static void expect_fill(int n, size_t want_len)
{
    pyproc_msg *m;
    const unsigned char *b;
    size_t len;
    int ret;

    assert_int_equal(pyproc_func(pool, "n.fill", &m, "i", n), 0);
    assert_int_equal(pyproc_msg_read(m, "[iy]", &ret, &b, &len), 0);
    assert_int_equal(ret, n);
    assert_int_equal(len, want_len);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(b[i], (unsigned char)(i * 7));
    pyproc_msg_free(m);
}

static void buffers_out(void **state)
{
    pyproc_msg *m;
    const void *a, *b;
    size_t alen, blen;

    (void)state;
    /* "i(w64 i)": [return value, bytes], the bytes starting with a NUL. */
    expect_fill(10, 10);
    expect_fill(0, 0);
    expect_fill(64, 64);
    expect_fill(1000, 64);
    /* "v(yw256)": the one result is the bytes themselves. */
    assert_int_equal(pyproc_func(pool, "n.reverse", &m, "y", "abc\0d", (size_t)5), 0);
    assert_int_equal(pyproc_msg_read(m, "y", &a, &alen), 0);
    assert_int_equal(alen, 5);
    assert_memory_equal(a, "d\0cba", 5);
    pyproc_msg_free(m);
    /* "v(y w16 w16)": no return value, two buffers, in order. */
    assert_int_equal(pyproc_func(pool, "n.split", &m, "y", "abcdefg", (size_t)7), 0);
    assert_int_equal(pyproc_msg_read(m, "[yy]", &a, &alen, &b, &blen), 0);
    assert_int_equal(alen, 4);
    assert_memory_equal(a, "aceg", 4);
    assert_int_equal(blen, 3);
    assert_memory_equal(b, "bdf", 3);
    pyproc_msg_free(m);
    expect_remote(pool, -1, "n.overclaim",
                  "RuntimeError: overclaim() says it wrote 9 bytes into a buffer of 8", NULL);
    /* An output buffer takes no argument. */
    expect_remote(pool, -1, "n.overclaim", "overclaim() takes 0 arguments (1 given)", "i", 8);
}

static void bad_calls_run_nothing_and_the_worker_lives(void **state)
{
    (void)state;
    assert_int_equal(pyproc_ind_func(pool, 0, "n.reset", NULL, NULL), 0);
    expect_remote(pool, 0, "n.count_call", "TypeError: count_call() takes 1 argument (0 given)",
                  NULL);
    expect_remote(pool, 0, "n.count_call", "takes 1 argument (2 given)", "ii", 1, 2);
    expect_remote(pool, 0, "n.count_call", "count_call() argument 1 must be int, not str", "s",
                  "1");
    expect_remote(pool, 0, "n.count_call", "argument 1 must be int, not float", "d", 1.0);
    expect_remote(pool, 0, "n.count_call", "argument 1 must be int, not bytes", "y", "1",
                  (size_t)1);
    expect_remote(pool, 0, "n.count_call", "does not fit in int32_t", "I", (int64_t)1 << 31);
    expect_remote(pool, 0, "n.count_call", "takes no keyword arguments", "|si", "x", 1);
    expect_remote(pool, 0, "n.count_call", "must be int, not list", "[i]", 1);
    assert_int_equal(call_int(pool, 0, "n.calls", NULL), 0);
    /* The same worker goes on: the good call runs, once. */
    assert_int_equal(call_int(pool, 0, "n.count_call", "i", 7), 7);
    assert_int_equal(call_int(pool, 0, "n.calls", NULL), 1);
    /* Unknown functions are unknown references, like Python ones. */
    pyproc_msg *m = NULL;
    assert_int_equal(pyproc_func(pool, "n.nothing", &m, NULL), -ENOENT);
    assert_non_null(strstr(pyproc_msg_error(m), "has no 'nothing'"));
    pyproc_msg_free(m);
}

static void expect_add_fails(int want, const char *name, const char *lib,
                             const pyproc_native_decl *decls, const char *const *parts)
{
    pyproc_msg *err = NULL;

    assert_int_equal(pyproc_add_native_err(pool, name, lib, decls, &err), want);
    assert_non_null(err);
    for (; *parts; parts++)
        if (!strstr(pyproc_msg_error(err), *parts))
            fail_msg("\"%s\" lacks \"%s\"", pyproc_msg_error(err), *parts);
    pyproc_msg_free(err);
    /* Nothing was mounted. */
    pyproc_msg *m = NULL;
    char ref[64];
    snprintf(ref, sizeof ref, "%s.cos", name);
    assert_int_equal(pyproc_func(pool, ref, &m, "d", 0.0), -ENOENT);
    pyproc_msg_free(m);
}

static void bad_declarations_fail_at_load(void **state)
{
    static const pyproc_native_decl bad_sig[] = {{"cos", "d(d)"}, {"sin", "d(x)"}, {NULL, NULL}};
    static const pyproc_native_decl bad_name[] = {{"1cos", "d(d)"}, {NULL, NULL}};
    static const pyproc_native_decl no_sig[] = {{"cos", NULL}, {NULL, NULL}};
    static const pyproc_native_decl missing[] = {{"id_i", "i(i)"},
                                                 {"no_such_function", "v()"},
                                                 {NULL, NULL}};

    (void)state;
    /* Checked by the host before anything is sent. */
    expect_add_fails(-EINVAL, "bad", "libm.so.6", bad_sig,
                     (const char *const[]){"ValueError: bad signature 'd(x)' of function 'sin': "
                                           "unknown parameter type (at offset 2)",
                                           NULL});
    expect_add_fails(-EINVAL, "bad", "libm.so.6", bad_name,
                     (const char *const[]){"bad function name '1cos'", NULL});
    expect_add_fails(-EINVAL, "bad", "libm.so.6", no_sig,
                     (const char *const[]){"bad signature", "'cos'", NULL});
    /* Found out by the workers. */
    expect_add_fails(PYPROC_EREMOTE, "bad", lib_path, missing,
                     (const char *const[]){"AttributeError: native library", lib_path,
                                           "has no function 'no_such_function'", NULL});
    expect_add_fails(PYPROC_EREMOTE, "bad", "libpyproc-no-such-library.so", libm_decls,
                     (const char *const[]){"OSError: cannot load native library "
                                           "'libpyproc-no-such-library.so'",
                                           "No such file", NULL});
    expect_add_fails(PYPROC_EREMOTE, "bad", "libm.so.6", NULL,
                     (const char *const[]){"exports no pyproc_native_exports table", NULL});
    expect_add_fails(PYPROC_EREMOTE, "bad dotted", "libm.so.6", libm_decls,
                     (const char *const[]){"not an identifier", NULL});
    /* Plain bad arguments. */
    assert_int_equal(pyproc_add_native(pool, NULL, "libm.so.6", libm_decls), -EINVAL);
    assert_int_equal(pyproc_add_native(pool, "", "libm.so.6", libm_decls), -EINVAL);
    assert_int_equal(pyproc_add_native(pool, "a.b", "libm.so.6", libm_decls), -EINVAL);
    assert_int_equal(pyproc_add_native(pool, "x", NULL, libm_decls), -EINVAL);
    assert_int_equal(pyproc_add_native(pool, "x", "", libm_decls), -EINVAL);
    assert_int_equal(pyproc_add_native(NULL, "x", "libm.so.6", libm_decls), -EINVAL);
    /* The pool is unharmed. */
    assert_int_equal(call_int(pool, -1, "n.id_i", "i", 5), 5);
}

static void libm_cos_matches_the_host(void **state)
{
    /* volatile: the host must call its libm too, not fold at compile time. */
    static volatile double xs[] = {0.0, 0.5, 1.0, -2.5, 3.141592653589793, 1e6, 1e-300, 12345.678};

    (void)state;
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        double x = xs[i], got = call_double("m.cos", "d", x);
        if (got != cos(x))
            fail_msg("cos(%.17g): worker %.17g, host %.17g", x, got, cos(x));
    }
    assert_true(call_double("m.pow", "dd", 2.0, 10.0) == 1024.0);
    double t0 = e2e_now();
    for (int i = 0; i < 10000; i++)
        call_double("m.cos", "d", 0.5);
    printf("m.cos: %.2f us per call, round trip\n", (e2e_now() - t0) * 1e6 / 10000);
}

static void python_calls_native_through_the_hub(void **state)
{
    pyproc_msg *m;
    const char *type, *text, *name, *sig, *lib, *repr, *sub_repr;

    (void)state;
    volatile double x = 0.5;
    assert_int_equal(pyproc_func(pool, "t.native.cos", &m, "d", x), 0);
    double got;
    assert_int_equal(pyproc_msg_read(m, "d", &got), 0);
    assert_true(got == cos(x));
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(pool, "t.native.call", &m, "sss", "n", "greet", "hub"), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &text), 0);
    assert_string_equal(text, "hello, hub");
    pyproc_msg_free(m);
    /* Python sees the refusals as exceptions it can catch. */
    assert_int_equal(pyproc_func(pool, "t.native.refused", &m, "ssi", "n", "id_b", 1000), 0);
    assert_int_equal(pyproc_msg_read(m, "[ss]", &type, &text), 0);
    assert_string_equal(type, "OverflowError");
    assert_string_equal(text, "id_b() argument 1: 1000 does not fit in int8_t");
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(pool, "t.native.describe", &m, "ss", "n", "fill"), 0);
    assert_int_equal(pyproc_msg_read(m, "[sssss]", &name, &sig, &lib, &repr, &sub_repr), 0);
    assert_string_equal(name, "fill");
    assert_string_equal(sig, "i(w64 i)");
    assert_string_equal(lib, lib_path);
    assert_non_null(strstr(repr, "<native function fill i(w64 i) from "));
    assert_non_null(strstr(sub_repr, "<native sub n from "));
    pyproc_msg_free(m);
}

/* Worker ind answers n.id_i again, from a new process, with "n" replayed. */
static bool serves_native_again(pyproc_pool *p, int ind)
{
    for (int i = 0; i < 1000; i++) {
        pyproc_msg *m = NULL;
        int v = 0, rc = pyproc_ind_func(p, ind, "n.id_i", &m, "i", 42);
        if (rc == 0 && pyproc_msg_read(m, "i", &v) == 0 && v == 42) {
            pyproc_msg_free(m);
            return true;
        }
        pyproc_msg_free(m);
        usleep(10000);
    }
    return false;
}

static void a_crash_costs_one_worker(void **state)
{
    pyproc_pool *p = native_pool(3);
    pyproc_msg *m = NULL;

    (void)state;
    assert_int_equal(pyproc_ind_func(p, 0, "n.crash_segv", &m, NULL), PYPROC_EWORKER);
    printf("crash_segv: %s\n", pyproc_msg_error(m));
    assert_non_null(strstr(pyproc_msg_error(m), "signal 11"));
    pyproc_msg_free(m);
    m = NULL;
    assert_int_equal(pyproc_ind_func(p, 1, "n.crash_abort", &m, NULL), PYPROC_EWORKER);
    printf("crash_abort: %s\n", pyproc_msg_error(m));
    assert_non_null(strstr(pyproc_msg_error(m), "signal 6"));
    pyproc_msg_free(m);
    /* The third worker never noticed. */
    assert_int_equal(call_int(p, 2, "n.id_i", "i", 5), 5);
    assert_int_equal(call_int(p, 2, "n.count_call", "i", 6), 6);
    /* The pool brings the dead ones back with the native sub loaded. */
    assert_true(serves_native_again(p, 0));
    assert_true(serves_native_again(p, 1));
    pyproc_pool_free(p);
}

static void new_workers_load_native_subs(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    char cwd[PATH_MAX];
    int ind;

    (void)state;
    add_native_ok(p, "n", lib_path, NULL);
    add_native_ok(p, "m", "libm.so.6", libm_decls);
    /* A relative path is the host's: make check runs from the top. */
    assert_non_null(getcwd(cwd, sizeof cwd));
    size_t n = strlen(cwd);
    if (strncmp(lib_path, cwd, n) == 0 && lib_path[n] == '/')
        add_native_ok(p, "r", lib_path + n + 1, NULL);
    else
        add_native_ok(p, "r", lib_path, NULL);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(ind, 1);
    assert_int_equal(call_int(p, 1, "n.id_i", "i", -9), -9);
    assert_int_equal(call_int(p, 1, "r.id_q", "I", INT64_MIN), INT64_MIN);
    pyproc_msg *m;
    double got;
    volatile double x = 2.0;
    assert_int_equal(pyproc_ind_func(p, 1, "t.native.cos", &m, "d", x), 0);
    assert_int_equal(pyproc_msg_read(m, "d", &got), 0);
    assert_true(got == cos(x));
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

/* Add an option to a sanitizer's options for the workers to come. */
static void add_sanitizer_option(const char *var, const char *opt)
{
    const char *old = getenv(var);
    char opts[1024];

    snprintf(opts, sizeof opts, "%s%s%s", old ? old : "", old && *old ? ":" : "", opt);
    setenv(var, opts, 1);
}

int main(void)
{
    /* Under the sanitizers a worker's SIGSEGV would end in a report and
     * exit status 1; the crash test wants the worker to die of the signal. */
    add_sanitizer_option("ASAN_OPTIONS", "handle_segv=0");
    add_sanitizer_option("UBSAN_OPTIONS", "handle_segv=0");

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(integers_round_trip_at_their_limits),
        cmocka_unit_test(integers_out_of_range_are_refused),
        cmocka_unit_test(floats_round_trip),
        cmocka_unit_test(arguments_keep_their_order),
        cmocka_unit_test(strings_in_and_out),
        cmocka_unit_test(buffers_in),
        cmocka_unit_test(buffers_out),
        cmocka_unit_test(bad_calls_run_nothing_and_the_worker_lives),
        cmocka_unit_test(bad_declarations_fail_at_load),
        cmocka_unit_test(libm_cos_matches_the_host),
        cmocka_unit_test(python_calls_native_through_the_hub),
        cmocka_unit_test(a_crash_costs_one_worker),
        cmocka_unit_test(new_workers_load_native_subs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
