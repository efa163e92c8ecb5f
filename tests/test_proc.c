/*
 * End to end: the whole proc API.  Streams, tracking, pub, set_attr,
 * add_proc, callbacks and host event loops, against real workers.
 */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *pool;

/* The callback server: answer n * 10, or call back into the pool. */
static _Atomic int callbacks_seen;

static int on_callback(pyproc_pool *p, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    const char *k1, *k2;
    int n, from;

    (void)data;
    atomic_fetch_add(&callbacks_seen, 1);
    if (pyproc_msg_type(payload) == PYPROC_INT) {
        /* call_home_hub: make a call on the same pool from the callback. */
        pyproc_msg *m = NULL;
        int rc = pyproc_func(p, "t.proc.index", &m, NULL);
        if (rc < 0)
            return rc;
        int other;
        pyproc_msg_read(m, "i", &other);
        pyproc_msg_free(m);
        return pyproc_msg_new(reply, "[ii]", ind, other);
    }
    if (pyproc_msg_read(payload, "{sisi}", &k1, &n, &k2, &from) < 0)
        return -EBADMSG;
    if (from != ind)
        return -EPROTO;
    return pyproc_msg_new(reply, "i", n * 10);
}

static pyproc_pool *proc_pool(int workers, pyproc_callback_fn cb)
{
    pyproc_opts opts = {.workers = workers, .python_path = "tests/py", .callback = cb};
    pyproc_pool *p = NULL;

    assert_int_equal(pyproc_pool_new(&p, "proc", &opts), 0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", PYPROC_SUB_INIT), 0);
    return p;
}

static int setup(void **state)
{
    (void)state;
    pool = proc_pool(3, on_callback);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    return 0;
}

static void ping_all(pyproc_pool *p, int n)
{
    for (int i = 0; i < n; i++) {
        pyproc_msg *m;
        assert_int_equal(pyproc_func(p, "t.proc.ping", &m, NULL), 0);
        assert_int_equal(pyproc_msg_type(m), PYPROC_MAP);
        assert_int_equal(pyproc_msg_len(m), 0);
        pyproc_msg_free(m);
    }
}

/* Read a whole stream of ints and check it is exactly [a, b). */
static void expect_range(pyproc_call *s, int a, int b)
{
    pyproc_msg *item;
    int v, want = a, rc;

    while ((rc = pyproc_next(s, &item)) == 1) {
        assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
        assert_int_equal(v, want);
        want++;
        pyproc_msg_free(item);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(want, b);
    assert_int_equal(pyproc_next(s, &item), 0);
}

/* The original project's own scenario, step by step. */
static void the_proc_scenario(void **state)
{
    pyproc_pool *p = proc_pool(3, on_callback);
    pyproc_call *s, *c;
    pyproc_msg *m, **rets;
    int ind, v, n;

    (void)state;
    ping_all(p, 20);

    /* A function that calls back into the host and returns a value. */
    assert_int_equal(pyproc_func(p, "t.proc.call_home", &m, "i", 4), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    assert_int_equal(v, 41);
    pyproc_msg_free(m);

    /* gen and an async generator over range(23, 77). */
    assert_int_equal(pyproc_gen(p, "t.proc.gen_range", &s, "ii", 23, 77), 0);
    expect_range(s, 23, 77);
    pyproc_call_free(s);
    assert_int_equal(pyproc_gen(p, "t.proc.agen_range", &s, "ii", 23, 77), 0);
    expect_range(s, 23, 77);
    pyproc_call_free(s);

    /* pub seeds per-worker state: one answer per worker index. */
    n = pyproc_pub(p, "t.proc.seed", &rets, "i", 100);
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        int idx, val;
        assert_int_equal(pyproc_msg_read(rets[i], "[ii]", &idx, &val), 0);
        assert_int_equal(idx, i);
        assert_int_equal(val, 100);
        pyproc_msg_free(rets[i]);
    }
    free(rets);

    /* track_func, then ind_func calls that see the state the previous left. */
    assert_int_equal(pyproc_track_func(p, &ind, &c, "t.proc.bump", NULL), 0);
    assert_int_equal(pyproc_wait(c, &m, -1), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    assert_int_equal(v, 101);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pyproc_ind_func(p, ind, "t.proc.bump", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
        assert_int_equal(v, 102 + i);
        pyproc_msg_free(m);
    }
    /* ind_gen on the same worker does the same. */
    assert_int_equal(pyproc_ind_gen(p, ind, "t.proc.bump_gen", &s, "i", 5), 0);
    expect_range(s, 107, 112);
    pyproc_call_free(s);
    /* track_gen says where its stream runs. */
    int gind;
    assert_int_equal(pyproc_track_gen(p, &gind, &s, "t.proc.gen_range", "ii", 0, 3), 0);
    assert_true(gind >= 0 && gind < 3);
    assert_int_equal(pyproc_call_worker(s), gind);
    expect_range(s, 0, 3);
    pyproc_call_free(s);

    /* add_proc, then 20 more round-robin pings reach the new worker too. */
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(ind, 3);
    assert_int_equal(pyproc_workers(p), 4);
    ping_all(p, 20);
    assert_int_equal(pyproc_ind_func(p, 3, "t.proc.index", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    assert_int_equal(v, 3);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void first_item_arrives_before_the_end(void **state)
{
    static const char *const refs[] = {"t.proc.slow_agen", "t.proc.slow_gen"};

    (void)state;
    for (int r = 0; r < 2; r++) {
        pyproc_call *s;
        pyproc_msg *item;
        double made, t0 = e2e_now();
        int i, count = 1, rc;

        /* 5 items, 0.1 s apart: the generator runs for 0.5 s. */
        assert_int_equal(pyproc_ind_gen(pool, 0, refs[r], &s, "id", 5, 0.1), 0);
        assert_int_equal(pyproc_next(s, &item), 1);
        double first = e2e_now() - t0;
        assert_int_equal(pyproc_msg_read(item, "[id]", &i, &made), 0);
        assert_int_equal(i, 0);
        pyproc_msg_free(item);
        while ((rc = pyproc_next(s, &item)) == 1) {
            count++;
            pyproc_msg_free(item);
        }
        double end = e2e_now() - t0;
        assert_int_equal(rc, 0);
        assert_int_equal(count, 5);
        printf("%s: first item after %.3f s, end after %.3f s\n", refs[r], first, end);
        assert_true(end >= 0.4);
        assert_true(first < end - 0.2);
        pyproc_call_free(s);
    }
}

static void unread_stream_is_parked(void **state)
{
    pyproc_call *s;
    pyproc_msg *m, *item;
    int64_t produced, again;
    double t0;

    (void)state;
    assert_int_equal(pyproc_ind_gen(pool, 1, "t.proc.counting_gen", &s, "i", 1000000), 0);
    usleep(200000);
    /* Another call on the same worker is answered at once. */
    t0 = e2e_now();
    assert_int_equal(pyproc_ind_func(pool, 1, "t.proc.progress", &m, NULL), 0);
    assert_true(e2e_now() - t0 < 0.5);
    assert_int_equal(pyproc_msg_read(m, "I", &produced), 0);
    pyproc_msg_free(m);
    /* The generator stopped after a bounded number of unread items. */
    assert_true(produced > 0 && produced <= 1024);
    usleep(100000);
    assert_int_equal(pyproc_ind_func(pool, 1, "t.proc.progress", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &again), 0);
    pyproc_msg_free(m);
    assert_true(again == produced);
    /* Reading lets it go on, in order. */
    for (int i = 0; i < 5000; i++) {
        int v;
        assert_int_equal(pyproc_next(s, &item), 1);
        assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
        assert_int_equal(v, i);
        pyproc_msg_free(item);
    }
    pyproc_call_free(s);
}

static void freeing_a_stream_closes_its_generator(void **state)
{
    static const char *const refs[] = {"t.proc.closing_gen", "t.proc.closing_agen"};

    (void)state;
    for (int r = 0; r < 2; r++) {
        pyproc_call *s;
        pyproc_msg *item, *m;
        int closed = 0;

        assert_int_equal(pyproc_ind_gen(pool, 2, refs[r], &s, NULL), 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(pyproc_next(s, &item), 1);
            pyproc_msg_free(item);
        }
        pyproc_call_free(s);
        for (int tries = 0; tries < 500 && !closed; tries++) { /* 5 s */
            assert_int_equal(pyproc_ind_func(pool, 2, "t.proc.was_closed", &m, NULL), 0);
            assert_int_equal(pyproc_msg_read(m, "b", &closed), 0);
            pyproc_msg_free(m);
            if (!closed)
                usleep(10000);
        }
        assert_true(closed);
    }
}

static void generator_error_ends_the_stream(void **state)
{
    pyproc_call *s;
    pyproc_msg *item;

    (void)state;
    assert_int_equal(pyproc_gen(pool, "t.proc.gen_raises", &s, "i", 3), 0);
    for (int i = 0; i < 3; i++) {
        int v;
        assert_int_equal(pyproc_next(s, &item), 1);
        assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
        assert_int_equal(v, i);
        pyproc_msg_free(item);
    }
    assert_int_equal(pyproc_next(s, &item), PYPROC_EREMOTE);
    assert_int_equal(strncmp(pyproc_msg_error(item), "ValueError: stopped after 3", 27), 0);
    assert_non_null(strstr(pyproc_msg_error(item), "in gen_raises"));
    pyproc_msg_free(item);
    assert_int_equal(pyproc_next(s, &item), 0);
    pyproc_call_free(s);
    /* Unknown references fail the stream the same way. */
    assert_int_equal(pyproc_gen(pool, "t.proc.nothing", &s, NULL), 0);
    assert_int_equal(pyproc_next(s, &item), -ENOENT);
    pyproc_msg_free(item);
    pyproc_call_free(s);
}

static void pub_runs_everywhere_at_once(void **state)
{
    pyproc_pool *p = proc_pool(4, NULL);
    pyproc_msg **rets;
    double t0 = e2e_now();

    (void)state;
    assert_int_equal(pyproc_pub(p, "t.proc.nap", &rets, "d", 0.3), 4);
    double took = e2e_now() - t0;
    printf("pub of a 0.3 s sleep on 4 workers: %.3f s\n", took);
    assert_true(took < 0.9); /* one after another: 1.2 s */
    for (int i = 0; i < 4; i++) {
        int v;
        assert_int_equal(pyproc_msg_read(rets[i], "i", &v), 0);
        assert_int_equal(v, i);
        pyproc_msg_free(rets[i]);
    }
    free(rets);
    /* Each worker's error lands in its own slot. */
    assert_int_equal(pyproc_pub(p, "t.basic.fail", &rets, "s", "x"), 4);
    for (int i = 0; i < 4; i++) {
        assert_non_null(strstr(pyproc_msg_error(rets[i]), "KeyError"));
        pyproc_msg_free(rets[i]);
    }
    free(rets);
    assert_int_equal(pyproc_pub(p, "t.proc.nap", &rets, "q"), -EINVAL);
    pyproc_pool_free(p);
}

static void set_attr_reaches_new_workers(void **state)
{
    pyproc_pool *p = proc_pool(2, NULL);
    pyproc_msg *m;
    const char *s;
    int ind, v;

    (void)state;
    assert_int_equal(pyproc_set_attr(p, "t.CONFIG", "{si}", "level", 3), 0);
    assert_int_equal(pyproc_set_attr(p, "t.NAME", "s", "first"), 0);
    assert_int_equal(pyproc_set_attr(p, "t.NAME", "s", "second"), 0);
    assert_int_equal(pyproc_set_attr(p, "", "i", 1), -EINVAL);
    assert_int_equal(pyproc_set_attr(p, "nosub.x", "i", 1), PYPROC_EREMOTE);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(ind, 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pyproc_ind_func(p, i, "t.proc.get_attr", &m, "s", "t.CONFIG"), 0);
        assert_int_equal(pyproc_msg_read(m, "{si}", &s, &v), 0);
        assert_string_equal(s, "level");
        assert_int_equal(v, 3);
        pyproc_msg_free(m);
        /* Replayed in order: the later value wins. */
        assert_int_equal(pyproc_ind_func(p, i, "t.proc.get_attr", &m, "s", "t.NAME"), 0);
        assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
        assert_string_equal(s, "second");
        pyproc_msg_free(m);
    }
    /* The sub's __init__ ran on the new worker as well. */
    assert_int_equal(pyproc_ind_func(p, 2, "t.basic.inits", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    assert_int_equal(v, 1);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void callback_may_call_the_pool(void **state)
{
    pyproc_msg *m;
    int ind, other;

    (void)state;
    int before = atomic_load(&callbacks_seen);
    assert_int_equal(pyproc_ind_func(pool, 1, "t.proc.call_home_hub", &m, "i", 5), 0);
    assert_int_equal(pyproc_msg_read(m, "[ii]", &ind, &other), 0);
    assert_int_equal(ind, 1);
    assert_true(other >= 0 && other < 3);
    pyproc_msg_free(m);
    assert_int_equal(atomic_load(&callbacks_seen), before + 1);
}

static void no_callback_is_a_python_error(void **state)
{
    pyproc_pool *p = proc_pool(1, NULL);
    pyproc_msg *m = NULL;

    (void)state;
    assert_int_equal(pyproc_func(p, "t.proc.call_home", &m, "i", 1), PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(m), "CallbackError"));
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

struct loop_state {
    int done, failed;
    long sum;
};

static void on_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    struct loop_state *st = data;
    int v;

    (void)p;
    if (result < 0 || pyproc_msg_read(ret, "i", &v) < 0)
        st->failed++;
    else
        st->sum += v;
    st->done++;
    pyproc_msg_free(ret);
}

static void event_loop_completes_async_calls(void **state)
{
    struct loop_state st = {0};
    long want = 0;
    int fd = pyproc_pool_fd(pool);

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(pyproc_dispatch(pool), 0); /* nothing yet, and no block */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(pyproc_func_async(pool, "t.basic.echo_one", on_done, &st, "i", i), 0);
        want += i;
    }
    while (st.done < 1000) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        assert_true(poll(&pfd, 1, 5000) == 1);
        assert_true(pyproc_dispatch(pool) >= 0);
    }
    assert_int_equal(st.failed, 0);
    assert_true(st.sum == want);
    assert_int_equal(pyproc_func_async(pool, "t.basic.echo_one", NULL, &st, "i", 1), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_proc_scenario),
        cmocka_unit_test(first_item_arrives_before_the_end),
        cmocka_unit_test(unread_stream_is_parked),
        cmocka_unit_test(freeing_a_stream_closes_its_generator),
        cmocka_unit_test(generator_error_ends_the_stream),
        cmocka_unit_test(pub_runs_everywhere_at_once),
        cmocka_unit_test(set_attr_reaches_new_workers),
        cmocka_unit_test(callback_may_call_the_pool),
        cmocka_unit_test(no_callback_is_a_python_error),
        cmocka_unit_test(event_loop_completes_async_calls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
