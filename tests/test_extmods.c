/*
 * End to end: extension modules loaded from shared objects work in a
 * worker, whose interpreter is never the shared libpython: outside
 * AddressSanitizer builds the worker is /usr/bin/python3 itself, with the
 * worker's code loaded as an extension module (embed/boot.c); in them, it
 * embeds Debian's static libpython and must export the whole C API.
 * Each test imports a module and uses it, so a missing symbol fails the
 * import; no libpython shared object may be mapped.
 */
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *pool;

static int setup(void **state)
{
    (void)state;
    alarm(120); /* a hang is a failure */
    pool = e2e_pool(1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    return 0;
}

/* Call ref and return its result; fails the test, with Python's error,
 * when the call fails. */
static pyproc_msg *call(const char *ref)
{
    pyproc_msg *m = NULL;
    int rc = pyproc_func(pool, ref, &m, NULL);

    if (rc < 0)
        fail_msg("%s: %s", ref, m ? pyproc_msg_error(m) : pyproc_strerror(rc));
    return m;
}

static void test_interpreter_in_executable(void **state)
{
    pyproc_msg *m = call("t.extmods.no_libpython");
    int yes = 0;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "b", &yes), 0);
    assert_true(yes);
    pyproc_msg_free(m);
}

static void test_runs_as_python(void **state)
{
    pyproc_msg *m = call("t.extmods.runs_as_python");
    int yes = -1;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "b", &yes), 0);
#ifdef __SANITIZE_ADDRESS__
    assert_false(yes); /* the worker embeds Python (see the Makefile) */
#else
    assert_true(yes);
#endif
    pyproc_msg_free(m);
}

static void test_ssl(void **state)
{
    pyproc_msg *m = call("t.extmods.ssl_context");
    int verifies = 0, hello = 0;
    const char *lib;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "bbs", &verifies, &hello, &lib), 0);
    assert_true(verifies);
    assert_true(hello);
    assert_string_equal(lib, "OpenSSL");
    pyproc_msg_free(m);
}

static void test_decimal(void **state)
{
    pyproc_msg *m = call("t.extmods.decimal_sum");
    const char *s;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "0.333333333333333333333333333334");
    pyproc_msg_free(m);
}

static void test_json(void **state)
{
    pyproc_msg *m = call("t.extmods.json_c");
    int c_scan = 0, c_enc = 0, same = 0;
    const char *text;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "bbsb", &c_scan, &c_enc, &text, &same), 0);
    assert_true(c_scan);
    assert_true(c_enc);
    assert_string_equal(text, "{\"a\": [1, 2.5, \"\\u00e9\"], \"b\": null}");
    assert_true(same);
    pyproc_msg_free(m);
}

static void test_asyncio(void **state)
{
    pyproc_msg *m = call("t.extmods.asyncio_c");
    int c_task = 0, v = 0;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "bi", &c_task, &v), 0);
    assert_true(c_task);
    assert_int_equal(v, 42);
    pyproc_msg_free(m);
}

/* numpy comes with python3-numpy, which make deps installs. */
static void test_numpy(void **state)
{
    pyproc_msg *m = call("t.extmods.numpy_dot");
    const char *so;
    double trace = 0;

    (void)state;
    assert_int_equal(pyproc_msg_read(m, "ds", &trace, &so), 0);
    /* rows of arange(12) as 3x4: 0..3, 4..7, 8..11; squared norms summed */
    assert_true(trace == 506.0);
    assert_non_null(strstr(so, ".so"));
    pyproc_msg_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interpreter_in_executable),
        cmocka_unit_test(test_runs_as_python),
        cmocka_unit_test(test_ssl),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_asyncio),
        cmocka_unit_test(test_numpy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
