/*
 * End to end: recycling workers at pyproc_opts.max_calls_per_worker and
 * max_rss_bytes.  Under calls from several threads (some pinned to an
 * index) and open streams, every call ends well while workers are
 * replaced, and pyproc_stats() counts recycles, not restarts.
 */
#include <errno.h>
#include <unistd.h>

#include "life.h"

static uint64_t recycles(pyproc_pool *p)
{
    uint64_t n = 0;
    for (int i = 0; i < pyproc_workers(p); i++)
        n += life_stats(p, i).recycles;
    return n;
}

static uint64_t restarts(pyproc_pool *p)
{
    uint64_t n = 0;
    for (int i = 0; i < pyproc_workers(p); i++)
        n += life_stats(p, i).restarts;
    return n;
}

/* Read a stream to its end: n items 0..n-1, then 0 (ended normally). */
static void read_stream(pyproc_call *s, int n)
{
    pyproc_msg *item = NULL;
    int v, got = 0, rc;

    while ((rc = pyproc_next(s, &item)) == 1) {
        assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
        assert_int_equal(v, got++);
        pyproc_msg_free(item);
        item = NULL;
    }
    if (rc < 0 && item)
        fprintf(stderr, "stream: %s\n", pyproc_msg_error(item));
    pyproc_msg_free(item);
    assert_int_equal(rc, 0);
    assert_int_equal(got, n);
    pyproc_call_free(s);
}

static void recycled_by_calls_under_load(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .max_calls_per_worker = 25});
    struct life_load l = {.pool = p,
                          .ref = "t.life.work",
                          .fmt = "d",
                          .arg = 0.001,
                          .pinned_every = 3};
    int pid0 = e2e_pid_of(p, 0), pid1 = e2e_pid_of(p, 1);
    pyproc_call *s[2];
    (void)state;

    /* Streams outlive the recycle of the worker that runs them. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(pyproc_ind_gen(p, i, "t.life.count", &s[i], "id", 20, 0.05), 0);
    life_start(&l);
    double until = e2e_now() + 30;
    while (recycles(p) < 6 && e2e_now() < until)
        life_sleep(0.05);
    life_stop(&l);
    for (int i = 0; i < 2; i++)
        read_stream(s[i], 20);
    assert_true(recycles(p) >= 6);
    assert_int_equal(restarts(p), 0);
    /* Both indices now run other processes than at the start. */
    assert_true(e2e_pid_of(p, 0) != pid0);
    assert_true(e2e_pid_of(p, 1) != pid1);
    /* The history was replayed: the sub's __init__ ran in the new ones. */
    assert_int_equal(e2e_int(p, "t.calls.ping"), 0);
    pyproc_pool_free(p);
}

static void recycled_by_rss(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .max_rss_bytes = 96u << 20});
    pyproc_msg *m = NULL;
    int64_t held = 0;
    int pid = e2e_pid_of(p, 0);
    (void)state;

    /* 16 MiB a call, kept: the worker passes 96 MiB after a few. */
    double until = e2e_now() + 30;
    while (life_stats(p, 0).recycles == 0 && e2e_now() < until) {
        assert_int_equal(pyproc_func(p, "t.life.leak", &m, "i", 16), 0);
        pyproc_msg_free(m);
        life_sleep(0.05);
    }
    pyproc_worker_stats st = life_stats(p, 0);
    assert_int_equal(st.recycles, 1);
    assert_int_equal(st.restarts, 0);
    assert_true(st.pid != pid);
    /* The new worker holds nothing yet. */
    assert_int_equal(pyproc_func(p, "t.life.holding", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &held), 0);
    pyproc_msg_free(m);
    assert_true(held <= 1);
    pyproc_pool_free(p);
}

static void rss_recycle_under_load(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .max_rss_bytes = 64u << 20});
    struct life_load l = {.pool = p,
                          .ref = "t.life.work",
                          .fmt = "d",
                          .arg = 0.002,
                          .pinned_every = 2};
    (void)state;

    /* Calls from the load threads while this one makes the workers grow
     * by 8 MiB a call. */
    life_start(&l);
    double until = e2e_now() + 30;
    pyproc_msg *m = NULL;
    while (recycles(p) < 2 && e2e_now() < until) {
        assert_int_equal(pyproc_func(p, "t.life.leak", &m, "i", 8), 0);
        pyproc_msg_free(m);
        m = NULL;
        life_sleep(0.01);
    }
    life_stop(&l);
    assert_true(recycles(p) >= 2);
    assert_int_equal(restarts(p), 0);
    pyproc_pool_free(p);
}

static void map_runs_through_recycles(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .max_calls_per_worker = 4});
    enum { N = 3000 };
    static bool got[N];
    pyproc_call *map;
    pyproc_msg *m = NULL;
    size_t at;
    int rc, n = 0;
    (void)state;

    assert_int_equal(pyproc_map(p, "t.events.twice", 0, &map), 0);
    /* Pushed in runs, read in between: many chunks, so many recycles. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(pyproc_push(map, "i", i), 0);
        if (i % 100 == 99)
            life_sleep(0.02);
    }
    assert_int_equal(pyproc_push_end(map), 0);
    while ((rc = pyproc_next_at(map, &m, &at)) == 1) {
        int64_t v = -1;
        assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
        assert_true(at < N && !got[at]);
        assert_int_equal(v, 2 * (int64_t)at);
        got[at] = true;
        pyproc_msg_free(m);
        m = NULL;
        n++;
    }
    if (rc < 0 && m)
        fprintf(stderr, "map: %s\n", pyproc_msg_error(m));
    pyproc_msg_free(m);
    assert_int_equal(rc, 0);
    assert_int_equal(n, N);
    pyproc_call_free(map);
    printf("map of %d items through %llu recycles\n", N, (unsigned long long)recycles(p));
    assert_true(recycles(p) >= 1);
    assert_int_equal(restarts(p), 0);
    pyproc_pool_free(p);
}

static void crash_counts_as_restart(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .max_calls_per_worker = 1000});
    pyproc_msg *m = NULL;
    int pid = e2e_pid_of(p, 0);
    (void)state;

    assert_true(pyproc_func(p, "t.crash.exit_now", &m, "i", 3) < 0);
    pyproc_msg_free(m);
    e2e_wait_respawned(p, 0, pid);
    pyproc_worker_stats st = life_stats(p, 0);
    assert_int_equal(st.restarts, 1);
    assert_int_equal(st.recycles, 0);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(recycled_by_calls_under_load), cmocka_unit_test(recycled_by_rss),
        cmocka_unit_test(rss_recycle_under_load),       cmocka_unit_test(map_runs_through_recycles),
        cmocka_unit_test(crash_counts_as_restart),
    };
    alarm(240);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
