/*
 * End to end: where pyproc_func() sends a call.  Round robin while the
 * workers are idle, as the original system promises; a worker busy with a
 * long call is passed over while another has less to do.
 */
#include <unistd.h>

#include "e2e.h"

static int worker_of(pyproc_pool *p)
{
    pyproc_msg *m = NULL;
    int ind = -1, pid = 0;

    assert_int_equal(pyproc_func(p, "t.basic.where", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[ii]", &ind, &pid), 0);
    pyproc_msg_free(m);
    return ind;
}

static void idle_pool_goes_round_robin(void **state)
{
    pyproc_pool *p = e2e_pool(3);
    int first = worker_of(p);
    (void)state;

    for (int i = 1; i < 30; i++)
        assert_int_equal(worker_of(p), (first + i) % 3);
    pyproc_pool_free(p);
}

static void busy_worker_is_passed_over(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *slow;
    pyproc_msg *m = NULL;
    (void)state;

    /* Worker 0 sleeps in a plain function: a call queued behind it would
     * wait the whole second. */
    assert_int_equal(pyproc_ind_call(p, 0, &slow, "t.calls.block", "d", 1.0), 0);
    double start = e2e_now();
    for (int i = 0; i < 20; i++)
        assert_int_equal(worker_of(p), 1);
    assert_true(e2e_now() - start < 0.9);
    assert_int_equal(pyproc_wait(slow, &m, 5000), 0);
    pyproc_msg_free(m);
    pyproc_call_free(slow);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(idle_pool_goes_round_robin),
        cmocka_unit_test(busy_worker_is_passed_over),
    };
    alarm(60);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
