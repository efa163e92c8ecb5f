/*
 * End to end: pyproc_resize(), and pyproc_drain() counting the calls of
 * workers that left the pool and draining a pool under load.  Streams open on indices taken away run to
 * their end, calls to a removed index return -EINVAL, and under calls
 * from several threads none fails while the pool grows and shrinks.
 */
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "life.h"

/* Wait (bounded) until process pid is gone. */
static bool gone(int pid)
{
    for (int i = 0; i < 500; i++) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        life_sleep(0.01);
    }
    return false;
}

static void shrink_with_streams_open(void **state)
{
    pyproc_pool *p = e2e_pool(3);
    pyproc_call *s[2];
    pyproc_msg *m = NULL;
    int pid2 = e2e_pid_of(p, 2), pid1 = e2e_pid_of(p, 1);
    (void)state;

    assert_int_equal(pyproc_ind_gen(p, 2, "t.life.count", &s[0], "id", 10, 0.05), 0);
    assert_int_equal(pyproc_ind_gen(p, 1, "t.life.count", &s[1], "id", 10, 0.05), 0);
    assert_int_equal(pyproc_next(s[0], &m), 1);
    pyproc_msg_free(m);
    m = NULL;

    assert_int_equal(pyproc_resize(p, 1), 0);
    assert_int_equal(pyproc_workers(p), 1);
    pyproc_worker_stats st;
    assert_int_equal(pyproc_stats(p, 2, &st), -EINVAL);
    assert_int_equal(pyproc_ind_func(p, 2, "t.calls.ping", &m, NULL), -EINVAL);
    assert_int_equal(pyproc_ind_func(p, 1, "t.calls.ping", &m, NULL), -EINVAL);
    /* Both streams run to their end on the removed workers. */
    for (int k = 0; k < 2; k++) {
        int v, want = k == 0 ? 1 : 0, rc;
        while ((rc = pyproc_next(s[k], &m)) == 1) {
            assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
            assert_int_equal(v, want++);
            pyproc_msg_free(m);
            m = NULL;
        }
        pyproc_msg_free(m);
        m = NULL;
        assert_int_equal(rc, 0);
        assert_int_equal(want, 10);
        pyproc_call_free(s[k]);
    }
    /* Then their processes stop. */
    assert_true(gone(pid2));
    assert_true(gone(pid1));
    assert_int_equal(e2e_int(p, "t.calls.ping"), 0);
    /* Grown again, the new indices serve. */
    assert_int_equal(pyproc_resize(p, 3), 0);
    assert_int_equal(pyproc_workers(p), 3);
    for (int i = 0; i < 3; i++)
        assert_true(e2e_pid_of(p, i) > 0);
    assert_int_equal(pyproc_resize(p, 0), -EINVAL);
    assert_int_equal(pyproc_resize(NULL, 2), -EINVAL);
    pyproc_pool_free(p);
}

static void resize_under_load(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    struct life_load l = {.pool = p,
                          .ref = "t.life.work",
                          .fmt = "d",
                          .arg = 0.003,
                          .pinned_every = 3};
    static const int sizes[] = {4, 1, 3, 2, 1, 2};
    (void)state;

    life_start(&l);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        life_sleep(0.1);
        assert_int_equal(pyproc_resize(p, sizes[i]), 0);
        assert_int_equal(pyproc_workers(p), sizes[i]);
    }
    life_sleep(0.1);
    life_stop(&l);
    pyproc_pool_free(p);
}

static void drain_counts_calls_of_removed_workers(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *slow;
    pyproc_msg *m = NULL;
    (void)state;

    assert_int_equal(pyproc_ind_call(p, 1, &slow, "t.events.later", "id", 7, 30.0), 0);
    assert_int_equal(pyproc_resize(p, 1), 0);
    /* The call still runs, on a worker outside the pool's slots. */
    assert_int_equal(pyproc_drain(p, 100), 1);
    pyproc_pool_free(p);
    assert_int_equal(pyproc_wait(slow, &m, 5000), -ECANCELED);
    pyproc_msg_free(m);
    pyproc_call_free(slow);
}

static void drain_under_load(void **state)
{
    pyproc_pool *p = e2e_pool(3);
    struct life_load l = {.pool = p,
                          .ref = "t.life.work",
                          .fmt = "d",
                          .arg = 0.02,
                          .pinned_every = 2};
    (void)state;

    life_start(&l);
    life_sleep(0.3);
    /* Every call that started before ends well; the rest are refused. */
    assert_int_equal(pyproc_drain(p, 10000), 0);
    atomic_store(&l.drained_at, e2e_now());
    life_sleep(0.1);
    life_stop(&l);
    assert_int_equal(atomic_load(&l.late), 0);
    assert_true(atomic_load(&l.refused) > 0);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shrink_with_streams_open),
        cmocka_unit_test(resize_under_load),
        cmocka_unit_test(drain_counts_calls_of_removed_workers),
        cmocka_unit_test(drain_under_load),
    };
    alarm(180);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
