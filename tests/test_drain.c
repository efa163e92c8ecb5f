/*
 * End to end: pyproc_drain().  New work is refused with -ESHUTDOWN in
 * every form, the calls in flight finish, the count of those still running
 * at the timeout comes back, and pyproc_pool_free() then cancels only
 * them.
 */
#include <errno.h>
#include <unistd.h>

#include "e2e.h"

static void drain_waits_for_calls_and_refuses_new_work(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *quick[4], *slow, *s, *m;
    pyproc_msg *r = NULL, **rets = NULL;
    (void)state;

    assert_int_equal(pyproc_map(p, "t.events.twice", 0, &m), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pyproc_track_func(p, NULL, &quick[i], "t.events.later", "id", i, 0.3), 0);
    assert_int_equal(pyproc_track_func(p, NULL, &slow, "t.events.later", "id", 9, 30.0), 0);

    double start = e2e_now();
    assert_int_equal(pyproc_drain(p, 1500), 1); /* the slow one still runs */
    double took = e2e_now() - start;
    assert_true(took >= 1.4 && took < 10);

    for (int i = 0; i < 4; i++) {
        int v = -1;
        assert_int_equal(pyproc_wait(quick[i], &r, 0), 0);
        assert_int_equal(pyproc_msg_read(r, "i", &v), 0);
        assert_int_equal(v, i);
        pyproc_msg_free(r);
        pyproc_call_free(quick[i]);
    }
    /* Nothing new starts. */
    assert_int_equal(pyproc_func(p, "t.calls.ping", &r, NULL), -ESHUTDOWN);
    assert_int_equal(pyproc_ind_func(p, 0, "t.calls.ping", &r, NULL), -ESHUTDOWN);
    assert_int_equal(pyproc_gen(p, "t.events.numbers", &s, "i", 3), -ESHUTDOWN);
    assert_int_equal(pyproc_pub(p, "t.calls.ping", &rets, NULL), -ESHUTDOWN);
    assert_int_equal(pyproc_add_sub(p, "u", "e2e", 0), -ESHUTDOWN);
    assert_int_equal(pyproc_add_proc(p, NULL), -ESHUTDOWN);
    assert_int_equal(pyproc_push(m, "i", 1), -ESHUTDOWN);
    pyproc_call *none;
    assert_int_equal(pyproc_map(p, "t.events.twice", 0, &none), -ESHUTDOWN);
    pyproc_call_free(m);

    /* Freed now, only the slow one is cancelled. */
    pyproc_pool_free(p);
    assert_int_equal(pyproc_wait(slow, &r, 1000), -ECANCELED);
    pyproc_msg_free(r);
    pyproc_call_free(slow);
}

static void drain_of_an_idle_pool_returns_at_once(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    (void)state;

    assert_int_equal(e2e_int(p, "t.calls.ping"), 0);
    double start = e2e_now();
    assert_int_equal(pyproc_drain(p, -1), 0);
    assert_true(e2e_now() - start < 1.0);
    assert_int_equal(pyproc_drain(p, 0), 0);
    assert_int_equal(pyproc_drain(p, -2), -EINVAL);
    assert_int_equal(pyproc_drain(NULL, 0), -EINVAL);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(drain_waits_for_calls_and_refuses_new_work),
        cmocka_unit_test(drain_of_an_idle_pool_returns_at_once),
    };
    alarm(60);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
