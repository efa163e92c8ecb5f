/*
 * End to end: pyproc_cancel() and the pool's call timeout, for coroutines,
 * streams, plain functions in Python code, and plain functions stuck where
 * Python cannot interrupt them.
 */
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *timeout_pool(int timeout_ms)
{
    pyproc_opts opts = {.workers = 1, .python_path = "tests/py", .call_timeout_ms = timeout_ms};
    pyproc_pool *p = NULL;

    assert_int_equal(pyproc_pool_new(&p, "cancel", &opts), 0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", 0), 0);
    return p;
}

static int pid_of(pyproc_pool *p)
{
    pyproc_msg *m = NULL;
    int pid = -1;
    assert_int_equal(pyproc_func(p, "t.cancel.pid", &m, NULL), 0);
    pyproc_msg_read(m, "i", &pid);
    pyproc_msg_free(m);
    return pid;
}

static bool seen(pyproc_pool *p, const char *what)
{
    return e2e_saw(p, 0, "t.cancel.seen", what);
}

static void cancel_a_coroutine(void **state)
{
    pyproc_pool *p = timeout_pool(0);
    pyproc_call *c;
    pyproc_msg *m = NULL;

    (void)state;
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.wait_forever", NULL), 0);
    assert_int_equal(pyproc_wait(c, &m, 100), -ETIMEDOUT);
    assert_int_equal(pyproc_cancel(c), 0);
    assert_int_equal(pyproc_wait(c, &m, 5000), -ECANCELED);
    assert_non_null(strstr(pyproc_msg_error(m), "CancelledError"));
    pyproc_msg_free(m);
    assert_int_equal(pyproc_cancel(c), -EALREADY);
    pyproc_call_free(c);
    assert_true(seen(p, "cancelled"));
    assert_true(seen(p, "finally"));
    assert_int_equal(pyproc_cancel(NULL), -EINVAL);
    pyproc_pool_free(p);
}

static void cancel_a_plain_function(void **state)
{
    pyproc_pool *p = timeout_pool(0);
    pyproc_call *c;
    pyproc_msg *m = NULL;
    int pid = pid_of(p);

    (void)state;
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.spin_forever", NULL), 0);
    usleep(100000);
    assert_int_equal(pyproc_cancel(c), 0);
    assert_int_equal(pyproc_wait(c, &m, 5000), -ECANCELED);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    assert_true(seen(p, "spin finally"));
    assert_int_equal(pid_of(p), pid); /* interrupted, not killed */
    pyproc_pool_free(p);
}

static void cancel_a_stream(void **state)
{
    pyproc_pool *p = timeout_pool(0);
    pyproc_call *s;
    pyproc_msg *item = NULL;
    int rc;

    (void)state;
    assert_int_equal(pyproc_gen(p, "t.cancel.stream_forever", &s, NULL), 0);
    assert_int_equal(pyproc_next(s, &item), 1);
    pyproc_msg_free(item);
    assert_int_equal(pyproc_cancel(s), 0);
    while ((rc = pyproc_next(s, &item)) == 1)
        pyproc_msg_free(item);
    assert_int_equal(rc, -ECANCELED);
    pyproc_msg_free(item);
    pyproc_call_free(s);
    pyproc_pool_free(p);
}

static void timeout_ends_a_coroutine(void **state)
{
    pyproc_pool *p = timeout_pool(200);
    pyproc_msg *m = NULL;
    int pid = pid_of(p);
    double t0 = e2e_now();

    (void)state;
    assert_int_equal(pyproc_func(p, "t.cancel.wait_forever", &m, NULL), -ETIMEDOUT);
    double took = e2e_now() - t0;
    assert_true(took >= 0.2 && took < 2.0);
    assert_non_null(strstr(pyproc_msg_error(m), "timeout"));
    pyproc_msg_free(m);
    assert_true(seen(p, "finally"));
    assert_int_equal(pid_of(p), pid);
    /* Calls within the limit are not touched. */
    assert_int_equal(pyproc_func(p, "t.cancel.quick", &m, NULL), 0);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void timeout_interrupts_python_code(void **state)
{
    pyproc_pool *p = timeout_pool(200);
    pyproc_msg *m = NULL;
    int pid = pid_of(p);

    (void)state;
    assert_int_equal(pyproc_func(p, "t.cancel.spin_forever", &m, NULL), -ETIMEDOUT);
    assert_non_null(strstr(pyproc_msg_error(m), "CallTimeout"));
    pyproc_msg_free(m);
    assert_true(seen(p, "spin finally"));
    assert_int_equal(pid_of(p), pid);
    pyproc_pool_free(p);
}

static void timeout_kills_what_cannot_be_interrupted(void **state)
{
    pyproc_pool *p = timeout_pool(200);
    pyproc_msg *m = NULL;
    int pid = pid_of(p);
    double t0 = e2e_now();

    (void)state;
    assert_int_equal(pyproc_func(p, "t.cancel.sleep_blocked", &m, "d", 30.0), -ETIMEDOUT);
    assert_true(e2e_now() - t0 < 5.0);
    assert_non_null(strstr(pyproc_msg_error(m), "signal 9"));
    pyproc_msg_free(m);
    /* The worker was respawned and serves again. */
    int now = -1;
    for (int i = 0; i < 500 && (now < 0 || now == pid); i++) {
        pyproc_msg *r = NULL;
        if (pyproc_func(p, "t.cancel.pid", &r, NULL) == 0)
            pyproc_msg_read(r, "i", &now);
        pyproc_msg_free(r);
        usleep(10000);
    }
    assert_true(now > 0 && now != pid);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cancel_a_coroutine),
        cmocka_unit_test(cancel_a_plain_function),
        cmocka_unit_test(cancel_a_stream),
        cmocka_unit_test(timeout_ends_a_coroutine),
        cmocka_unit_test(timeout_interrupts_python_code),
        cmocka_unit_test(timeout_kills_what_cannot_be_interrupted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
