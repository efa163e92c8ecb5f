/*
 * End to end: the whole API from an event loop.  A plain poll() loop runs
 * calls of every kind with callbacks on their handles (tracked, pinned,
 * streams), cancels, deadlines, frees handles from inside callbacks and
 * before they ran, kills a worker under load, and frees the pool with
 * callbacks pending.  Misuse (-EBUSY, -EALREADY, -EINVAL) is checked too.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "e2e.h"

/* Dispatch until *flag turns true or timeout_ms pass; false on timeout. */
static bool loop_until(pyproc_pool *p, const bool *flag, int timeout_ms)
{
    double end = e2e_now() + timeout_ms / 1000.0;

    while (!*flag) {
        int left = (int)((end - e2e_now()) * 1000);
        if (left <= 0)
            return false;
        struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
        if (poll(&fd, 1, left) > 0)
            assert_true(pyproc_dispatch(p) >= 0);
    }
    return true;
}

/* ---- many calls, tracked and pinned ---- */

#define MANY 2000

struct many {
    pyproc_call *calls[MANY];
    int results[MANY], ran[MANY];
    int answered;
    bool all;
};

struct many_ref {
    struct many *m;
    int i;
};

static void many_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    struct many_ref *r = data;
    struct many *m = r->m;
    int v = -1;

    (void)p;
    if (result == 0)
        assert_int_equal(pyproc_msg_read(ret, "i", &v), 0);
    pyproc_msg_free(ret);
    m->results[r->i] = result == 0 ? v : result;
    m->ran[r->i]++;
    /* Half the handles are freed from inside their own callback. */
    if (r->i % 2) {
        pyproc_call_free(m->calls[r->i]);
        m->calls[r->i] = NULL;
    }
    m->all = ++m->answered == MANY;
}

static void tracked_and_pinned_calls_end_in_callbacks(void **state)
{
    static struct many m;
    static struct many_ref refs[MANY];
    pyproc_pool *p = e2e_pool(2);
    (void)state;

    memset(&m, 0, sizeof m);
    for (int i = 0; i < MANY; i++) {
        refs[i] = (struct many_ref){&m, i};
        if (i % 3 == 0)
            assert_int_equal(pyproc_ind_call(p, i % 2, &m.calls[i], "t.events.twice", "i", i), 0);
        else
            assert_int_equal(pyproc_track_func(p, NULL, &m.calls[i], "t.events.twice", "i", i), 0);
        assert_int_equal(pyproc_call_on_done(m.calls[i], many_done, &refs[i]), 0);
    }
    assert_true(loop_until(p, &m.all, 30000));
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(m.ran[i], 1);
        assert_int_equal(m.results[i], 2 * i);
        if (i % 3 == 0 && m.calls[i])
            assert_int_equal(pyproc_call_worker(m.calls[i]), i % 2);
        pyproc_call_free(m.calls[i]);
    }
    /* Nothing runs twice. */
    assert_int_equal(pyproc_dispatch(p), 0);
    pyproc_pool_free(p);
}

/* ---- one call ---- */

struct one {
    int result, ran;
    pyproc_msg *ret;
    double at;
    bool done;
};

static void one_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    struct one *o = data;

    (void)p;
    o->result = result;
    o->ret = ret;
    o->at = e2e_now();
    o->ran++;
    o->done = true;
}

static void callback_set_after_the_end_runs_at_next_dispatch(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *c;
    struct one o = {0};
    (void)state;

    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.events.twice", "i", 21), 0);
    usleep(300 * 1000); /* it has ended long before */
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), 0);
    assert_false(o.done); /* not before a dispatch */
    assert_true(loop_until(p, &o.done, 5000));
    int v = 0;
    assert_int_equal(o.result, 0);
    assert_int_equal(pyproc_msg_read(o.ret, "i", &v), 0);
    assert_int_equal(v, 42);
    pyproc_msg_free(o.ret);
    assert_int_equal(pyproc_dispatch(p), 0);
    assert_int_equal(o.ran, 1);
    pyproc_call_free(c);
    pyproc_pool_free(p);
}

static void item_ignored(pyproc_pool *p, int result, pyproc_msg *item, void *data)
{
    (void)p, (void)result, (void)data;
    pyproc_msg_free(item);
}

static void mixing_is_an_error(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *c, *s;
    pyproc_msg *m = NULL;
    struct one o = {0};
    (void)state;

    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.events.later", "id", 1, 0.2), 0);
    assert_int_equal(pyproc_stream_on_item(c, item_ignored, NULL), -EINVAL);
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), 0);
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), -EALREADY);
    assert_int_equal(pyproc_wait(c, &m, 0), -EBUSY);
    assert_int_equal(pyproc_wait(c, &m, -1), -EBUSY);
    assert_true(loop_until(p, &o.done, 5000));
    pyproc_msg_free(o.ret);
    pyproc_call_free(c);

    assert_int_equal(pyproc_gen(p, "t.events.numbers", &s, "i", 3), 0);
    assert_int_equal(pyproc_call_on_done(s, one_done, &o), -EINVAL);
    assert_int_equal(pyproc_stream_on_item(s, item_ignored, NULL), 0);
    assert_int_equal(pyproc_stream_on_item(s, item_ignored, NULL), -EALREADY);
    assert_int_equal(pyproc_next(s, &m), -EBUSY);
    pyproc_call_free(s);

    /* A result already taken has nothing left for a callback. */
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.events.twice", "i", 1), 0);
    assert_int_equal(pyproc_wait(c, &m, -1), 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), -EALREADY);
    assert_int_equal(pyproc_call_deadline(c, 10), -EALREADY);
    assert_int_equal(pyproc_call_deadline(c, -1), -EINVAL);
    pyproc_call_free(c);
    pyproc_pool_free(p);
}

/* ---- streams ---- */

struct items {
    int next, ended, errors, result;
    bool done;
    bool out_of_order;
    pyproc_call *free_me; /* freed from inside the callback at item 10 */
};

static void count_items(pyproc_pool *p, int result, pyproc_msg *item, void *data)
{
    struct items *it = data;
    int v = -1;

    (void)p;
    if (result == 1) {
        assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
        if (v != it->next)
            it->out_of_order = true;
        it->next++;
        if (it->free_me && it->next == 10) {
            pyproc_call_free(it->free_me);
            it->free_me = NULL;
            it->done = true;
        }
    } else {
        it->result = result;
        it->ended++;
        it->done = true;
    }
    pyproc_msg_free(item);
}

static void stream_items_flow_with_credit(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    struct items it = {0};
    pyproc_call *s;
    (void)state;

    assert_int_equal(pyproc_gen(p, "t.events.numbers", &s, "i", 100000), 0);
    assert_int_equal(pyproc_stream_on_item(s, count_items, &it), 0);
    /* Nobody dispatches: the generator parks after a window of items. */
    usleep(300 * 1000);
    int64_t made = e2e_int(p, "t.events.how_many_produced");
    assert_true(made < 5000);
    assert_true(loop_until(p, &it.done, 60000));
    assert_int_equal(it.next, 100000);
    assert_false(it.out_of_order);
    assert_int_equal(it.ended, 1);
    assert_int_equal(it.result, 0);
    assert_int_equal(pyproc_dispatch(p), 0); /* the end ran once */
    assert_int_equal(it.ended, 1);
    pyproc_call_free(s);
    pyproc_pool_free(p);
}

static void stream_freed_inside_its_callback(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    struct items it = {0};
    pyproc_call *s;
    (void)state;

    assert_int_equal(pyproc_gen(p, "t.cancel.stream_forever", &s, NULL), 0);
    it.free_me = s;
    assert_int_equal(pyproc_stream_on_item(s, count_items, &it), 0);
    assert_true(loop_until(p, &it.done, 10000));
    assert_int_equal(it.next, 10); /* nothing after the free */
    usleep(100 * 1000);
    assert_true(pyproc_dispatch(p) >= 0);
    assert_int_equal(it.next, 10);
    assert_int_equal(it.ended, 0);
    /* The worker goes on. */
    assert_int_equal(e2e_int(p, "t.calls.ping"), 0);
    pyproc_pool_free(p);
}

struct mapped {
    int next, ended, result;
    bool done, out_of_order;
};

static void count_mapped(pyproc_pool *p, int result, pyproc_msg *item, void *data)
{
    struct mapped *mp = data;
    int v = -1;

    (void)p;
    if (result == 1) {
        assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
        if (v != 2 * mp->next)
            mp->out_of_order = true;
        mp->next++;
    } else {
        mp->result = result;
        mp->ended++;
        mp->done = true;
    }
    pyproc_msg_free(item);
}

/* A map read by callback: pushed from the loop until its window is full,
 * its results delivered by dispatch, in order, then its end. */
static void map_items_by_callback(void **state)
{
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .map_window = 256});
    struct mapped mp = {0};
    pyproc_call *m;
    int pushed = 0, rc;
    (void)state;

    assert_int_equal(pyproc_map(p, "t.events.twice", 0, &m), 0);
    assert_int_equal(pyproc_stream_on_item(m, count_mapped, &mp), 0);
    assert_int_equal(pyproc_call_on_done(m, one_done, NULL), -EINVAL);
    assert_int_equal(pyproc_call_deadline(m, 10), -EOPNOTSUPP);
    pyproc_msg *none = NULL;
    assert_int_equal(pyproc_next(m, &none), -EBUSY);
    double end = e2e_now() + 60;
    while (!mp.done && e2e_now() < end) {
        while (pushed < 20000 && (rc = pyproc_push(m, "i", pushed)) == 0)
            pushed++;
        if (pushed == 20000) {
            assert_int_equal(pyproc_push_end(m), 0);
            pushed++;
        } else if (pushed < 20000) {
            assert_int_equal(rc, -EAGAIN);
        }
        struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
        if (poll(&fd, 1, 100) > 0)
            assert_true(pyproc_dispatch(p) >= 0);
    }
    assert_true(mp.done);
    assert_int_equal(mp.next, 20000);
    assert_false(mp.out_of_order);
    assert_int_equal(mp.ended, 1);
    assert_int_equal(mp.result, 0);
    pyproc_call_free(m);
    pyproc_pool_free(p);
}

/* ---- cancellation and deadlines ---- */

static void cancel_half_way(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    struct one o = {0};
    pyproc_call *c;
    (void)state;

    assert_int_equal(pyproc_func(p, "t.cancel.reset", NULL, NULL), 0);
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.wait_forever", NULL), 0);
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), 0);
    usleep(100 * 1000);
    assert_int_equal(pyproc_cancel(c), 0);
    assert_true(loop_until(p, &o.done, 5000));
    assert_int_equal(o.result, -ECANCELED);
    pyproc_msg_free(o.ret);
    assert_true(e2e_saw(p, 0, "t.cancel.seen", "finally"));
    pyproc_call_free(c);
    pyproc_pool_free(p);
}

static void deadline_ends_a_slow_call_while_fast_ones_go_on(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    struct one slow = {0}, fast[20] = {{0}};
    pyproc_call *c, *f[20];
    (void)state;

    assert_int_equal(pyproc_func(p, "t.cancel.reset", NULL, NULL), 0);
    double start = e2e_now();
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.wait_forever", NULL), 0);
    assert_int_equal(pyproc_call_on_done(c, one_done, &slow), 0);
    assert_int_equal(pyproc_call_deadline(c, 10000), 0);
    assert_int_equal(pyproc_call_deadline(c, 200), 0); /* replaces the first */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(pyproc_track_func(p, NULL, &f[i], "t.events.later", "id", i, 0.01), 0);
        assert_int_equal(pyproc_call_on_done(f[i], one_done, &fast[i]), 0);
    }
    assert_true(loop_until(p, &slow.done, 5000));
    assert_int_equal(slow.result, -ETIMEDOUT);
    assert_non_null(strstr(pyproc_msg_error(slow.ret), "deadline"));
    pyproc_msg_free(slow.ret);
    /* Not before its deadline, and not at the 10 s one. */
    assert_true(slow.at - start >= 0.2);
    assert_true(slow.at - start < 3.0);
    for (int i = 0; i < 20; i++) {
        assert_true(fast[i].done);
        assert_int_equal(fast[i].result, 0);
        assert_true(fast[i].at < slow.at);
        pyproc_msg_free(fast[i].ret);
        pyproc_call_free(f[i]);
    }
    /* The worker was told to stop it: its finally ran. */
    for (int i = 0; i < 50 && !e2e_saw(p, 0, "t.cancel.seen", "finally"); i++)
        usleep(20 * 1000);
    assert_true(e2e_saw(p, 0, "t.cancel.seen", "finally"));
    pyproc_call_free(c);
    pyproc_pool_free(p);
}

static void deadline_serves_blocking_callers(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_msg *m = NULL;
    pyproc_call *c;
    (void)state;

    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.wait_forever", NULL), 0);
    assert_int_equal(pyproc_call_deadline(c, 100), 0);
    double start = e2e_now();
    assert_int_equal(pyproc_wait(c, &m, 5000), -ETIMEDOUT);
    assert_true(e2e_now() - start < 3.0); /* the deadline, not the wait's 5 s */
    assert_non_null(m);
    assert_non_null(strstr(pyproc_msg_error(m), "deadline"));
    pyproc_msg_free(m);
    assert_int_equal(pyproc_wait(c, &m, 0), -EALREADY);
    pyproc_call_free(c);
    /* A stream too. */
    assert_int_equal(pyproc_gen(p, "t.cancel.stream_forever", &c, NULL), 0);
    assert_int_equal(pyproc_call_deadline(c, 100), 0);
    int r;
    while ((r = pyproc_next(c, &m)) == 1)
        pyproc_msg_free(m);
    assert_int_equal(r, -ETIMEDOUT);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    assert_int_equal(e2e_int(p, "t.calls.ping"), 0);
    pyproc_pool_free(p);
}

static void free_before_the_callback_cancels_cleanly(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    struct one o = {0};
    pyproc_call *c;
    (void)state;

    assert_int_equal(pyproc_func(p, "t.cancel.reset", NULL, NULL), 0);
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.cancel.wait_forever", NULL), 0);
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), 0);
    assert_int_equal(pyproc_call_deadline(c, 100000), 0);
    usleep(50 * 1000);
    pyproc_call_free(c);
    for (int i = 0; i < 50 && !e2e_saw(p, 0, "t.cancel.seen", "finally"); i++)
        usleep(20 * 1000);
    assert_true(e2e_saw(p, 0, "t.cancel.seen", "finally"));
    usleep(50 * 1000);
    assert_int_equal(pyproc_dispatch(p), 0);
    assert_int_equal(o.ran, 0);

    /* Ended and queued, but freed before the dispatch: it never runs. */
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.events.twice", "i", 1), 0);
    assert_int_equal(pyproc_call_on_done(c, one_done, &o), 0);
    usleep(200 * 1000);
    pyproc_call_free(c);
    assert_int_equal(pyproc_dispatch(p), 0);
    assert_int_equal(o.ran, 0);
    pyproc_pool_free(p);
}

/* ---- failures ---- */

static void worker_killed_under_load(void **state)
{
    static struct one o[400];
    static pyproc_call *c[400];
    pyproc_pool *p = e2e_pool(2);
    int victim = e2e_pid_of(p, 0);
    (void)state;

    memset(o, 0, sizeof o);
    for (int i = 0; i < 400; i++) {
        assert_int_equal(pyproc_ind_call(p, i % 2, &c[i], "t.events.later", "id", i,
                                         i % 2 ? 0.05 : 60.0),
                         0);
        assert_int_equal(pyproc_call_on_done(c[i], one_done, &o[i]), 0);
    }
    usleep(100 * 1000);
    kill(victim, SIGKILL);
    bool all = false;
    double end = e2e_now() + 20;
    while (!all && e2e_now() < end) {
        struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
        if (poll(&fd, 1, 100) > 0)
            pyproc_dispatch(p);
        all = true;
        for (int i = 0; i < 400; i++)
            all = all && o[i].done;
    }
    assert_true(all);
    for (int i = 0; i < 400; i++) {
        assert_int_equal(o[i].ran, 1);
        assert_int_equal(o[i].result, i % 2 ? 0 : PYPROC_EWORKER);
        pyproc_msg_free(o[i].ret);
        pyproc_call_free(c[i]);
    }
    pyproc_pool_free(p);
}

static void pool_free_runs_pending_callbacks_once(void **state)
{
    static struct one o[50];
    static pyproc_call *c[50];
    struct items it = {0};
    pyproc_call *s;
    pyproc_pool *p = e2e_pool(2);
    (void)state;

    memset(o, 0, sizeof o);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(pyproc_track_func(p, NULL, &c[i], "t.events.later", "id", i, 60.0), 0);
        assert_int_equal(pyproc_call_on_done(c[i], one_done, &o[i]), 0);
    }
    assert_int_equal(pyproc_gen(p, "t.cancel.stream_forever", &s, NULL), 0);
    assert_int_equal(pyproc_stream_on_item(s, count_items, &it), 0);
    usleep(100 * 1000);
    pyproc_pool_free(p);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(o[i].ran, 1);
        assert_int_equal(o[i].result, -ECANCELED);
        pyproc_msg_free(o[i].ret);
        pyproc_call_free(c[i]);
    }
    assert_int_equal(it.ended, 1);
    assert_int_equal(it.result, -ECANCELED);
    assert_false(it.out_of_order);
    pyproc_call_free(s);
}

/* ---- answers wake the loop itself (local pools) ---- */
#ifndef PYPROC_E2E_MPI

/* The pool's output function, which runs on its service thread: holds
 * that thread on a given line until released. */
struct gate {
    atomic_bool held, release;
};

static void hold_on_first_line(pyproc_pool *p, int ind, int fd, const char *line, size_t len,
                               void *data)
{
    struct gate *g = data;
    double end = e2e_now() + 20;

    (void)p, (void)ind, (void)fd;
    if (len != strlen("first line") || memcmp(line, "first line", len) != 0)
        return;
    atomic_store(&g->held, true);
    while (!atomic_load(&g->release) && e2e_now() < end)
        usleep(1000);
}

static void answers_reach_the_loop_without_the_service_thread(void **state)
{
    static struct gate g;
    struct one o[8] = {0};
    pyproc_call *c[8];
    bool all = false;
    pyproc_pool *p = e2e_pool_opts(
        (pyproc_opts){.workers = 2, .output = hold_on_first_line, .output_data = &g});
    (void)state;

    atomic_store(&g.held, false);
    atomic_store(&g.release, false);
    assert_int_equal(e2e_int(p, "t.hygiene.say"), 1);
    for (int i = 0; i < 2000 && !atomic_load(&g.held); i++)
        usleep(1000);
    assert_true(atomic_load(&g.held)); /* the service thread is stuck now */
    /* Slower than any spin, so each answer comes by the doorbell. */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pyproc_track_func(p, NULL, &c[i], "t.calls.block", "d", 0.02), 0);
        assert_int_equal(pyproc_call_on_done(c[i], one_done, &o[i]), 0);
    }
    double end = e2e_now() + 5;
    while (!all && e2e_now() < end) {
        struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
        if (poll(&fd, 1, 100) > 0)
            assert_true(pyproc_dispatch(p) >= 0);
        all = true;
        for (int i = 0; i < 8; i++)
            all = all && o[i].done;
    }
    atomic_store(&g.release, true);
    assert_true(all);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(o[i].result, 0);
        assert_int_equal(o[i].ran, 1);
        pyproc_msg_free(o[i].ret);
        pyproc_call_free(c[i]);
    }
    pyproc_pool_free(p);
}

/* More answers than one pyproc_dispatch() takes, all waiting, under a loop
 * that holds the pool's fd edge-triggered: the rest must wake it again. */
static void edge_triggered_loop_gets_every_answer(void **state)
{
    enum { N = 40 }; /* more doorbells than a dispatch takes */
    static struct gate g;
    static struct one o[N];
    pyproc_call *c[N];
    int ndone = 0, ep = epoll_create1(EPOLL_CLOEXEC);
    pyproc_pool *p = e2e_pool_opts(
        (pyproc_opts){.workers = N, .output = hold_on_first_line, .output_data = &g});
    (void)state;

    memset(o, 0, sizeof o);
    atomic_store(&g.held, false);
    atomic_store(&g.release, false);
    assert_int_equal(e2e_int(p, "t.hygiene.say"), 1);
    for (int i = 0; i < 2000 && !atomic_load(&g.held); i++)
        usleep(1000);
    assert_true(atomic_load(&g.held)); /* nobody but the loop reads answers */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, pyproc_pool_fd(p), &ev), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pyproc_ind_call(p, i, &c[i], "t.calls.block", "d", 0.02), 0);
        assert_int_equal(pyproc_call_on_done(c[i], one_done, &o[i]), 0);
    }
    usleep(500 * 1000); /* every answer is in its ring, every doorbell rung */
    double end = e2e_now() + 5;
    while (ndone < N && e2e_now() < end) {
        if (epoll_wait(ep, &ev, 1, 100) == 1)
            assert_true(pyproc_dispatch(p) >= 0);
        ndone = 0;
        for (int i = 0; i < N; i++)
            ndone += o[i].done;
    }
    atomic_store(&g.release, true);
    assert_int_equal(ndone, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(o[i].result, 0);
        pyproc_msg_free(o[i].ret);
        pyproc_call_free(c[i]);
    }
    pyproc_pool_free(p);
    close(ep);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tracked_and_pinned_calls_end_in_callbacks),
        cmocka_unit_test(callback_set_after_the_end_runs_at_next_dispatch),
        cmocka_unit_test(mixing_is_an_error),
        cmocka_unit_test(stream_items_flow_with_credit),
        cmocka_unit_test(stream_freed_inside_its_callback),
        cmocka_unit_test(map_items_by_callback),
        cmocka_unit_test(cancel_half_way),
        cmocka_unit_test(deadline_ends_a_slow_call_while_fast_ones_go_on),
        cmocka_unit_test(deadline_serves_blocking_callers),
        cmocka_unit_test(free_before_the_callback_cancels_cleanly),
        cmocka_unit_test(worker_killed_under_load),
        cmocka_unit_test(pool_free_runs_pending_callbacks_once),
#ifndef PYPROC_E2E_MPI
        /* Holds the thread that runs the output function: in a pool over
         * MPI that is the relay, which carries the answers too. */
        cmocka_unit_test(answers_reach_the_loop_without_the_service_thread),
        cmocka_unit_test(edge_triggered_loop_gets_every_answer),
#endif
    };
    alarm(240);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
