/*
 * End to end: how the pool's fd (pyproc_pool_fd()) behaves under the
 * loops that watch it.  The fd is written as seldom as the contract
 * allows (async.c): these tests hold it to that contract.  A loop that
 * watches it edge-triggered and dispatches once per event gets every
 * answer, one call at a time (the caller catches the answer itself) or
 * many at once, from its own thread or another's; a level-triggered loop
 * sleeps once everything is dispatched; a dispatch that reads a doorbell
 * leaves no event behind; and completions waiting never hide a doorbell
 * that rang from the dispatch that runs them.
 */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "e2e.h"

static void count_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    atomic_int *n = data;

    (void)p;
    assert_int_equal(result, 0);
    pyproc_msg_free(ret);
    atomic_fetch_add(n, 1);
}

/* An epoll set holding the pool's fd edge-triggered. */
static int edge_loop(pyproc_pool *p)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};

    assert_true(ep >= 0);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, pyproc_pool_fd(p), &ev), 0);
    return ep;
}

/* One turn of an edge-triggered loop: wait up to ms for an event, then
 * dispatch once.  False when no event came. */
static bool edge_turn(pyproc_pool *p, int ep, int ms)
{
    struct epoll_event ev;

    if (epoll_wait(ep, &ev, 1, ms) != 1)
        return false;
    assert_true(pyproc_dispatch(p) >= 0);
    return true;
}

/* Whether the pool's fd is readable right now. */
static bool fd_readable(pyproc_pool *p)
{
    struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};

    return poll(&fd, 1, 0) == 1;
}

/* ---- one call at a time, edge-triggered ---- */

#define ONE_BY_ONE 3000

/*
 * The caller's spin catches each answer, so its end is queued with no
 * doorbell, and the pool's fd is left readable after a dispatch that ran
 * it: each next answer must still be a new event.
 */
static void one_at_a_time(int workers)
{
    pyproc_pool *p = e2e_pool(workers);
    int ep = edge_loop(p);
    atomic_int n = 0;

    for (int i = 0; i < ONE_BY_ONE; i++) {
        assert_int_equal(pyproc_func_async(p, "t.calls.ping", count_done, &n, NULL), 0);
        while (atomic_load(&n) == i)
            assert_true(edge_turn(p, ep, 5000)); /* no event: an answer lost */
    }
    assert_int_equal(atomic_load(&n), ONE_BY_ONE);
    close(ep);
    pyproc_pool_free(p);
}

static void edge_triggered_one_at_a_time(void **state)
{
    (void)state;
    one_at_a_time(1);
}

static void edge_triggered_one_at_a_time_two_workers(void **state)
{
    (void)state;
    one_at_a_time(2);
}

/* ---- calls from another thread, edge-triggered ---- */

struct starter {
    pyproc_pool *pool;
    atomic_int started, done;
};

/* Starts each call once the last one ran, so that each is the pool's one
 * asynchronous call in flight and its caller spins for it while the loop
 * dispatches on the other thread. */
static void *start_one_by_one(void *arg)
{
    struct starter *s = arg;
    double end = e2e_now() + 60;

    for (int i = 0; i < ONE_BY_ONE && e2e_now() < end; i++) {
        while (atomic_load(&s->done) < i && e2e_now() < end)
            sched_yield();
        if (pyproc_func_async(s->pool, "t.calls.ping", count_done, &s->done, NULL) < 0)
            break;
        atomic_fetch_add(&s->started, 1);
    }
    return NULL;
}

static void edge_triggered_loop_with_calls_from_another_thread(void **state)
{
    static struct starter s;
    pthread_t t;
    (void)state;

    s.pool = e2e_pool(1);
    atomic_store(&s.started, 0);
    atomic_store(&s.done, 0);
    int ep = edge_loop(s.pool);
    assert_int_equal(pthread_create(&t, NULL, start_one_by_one, &s), 0);
    while (atomic_load(&s.done) < ONE_BY_ONE) {
        /* A call started and not run after 5 s without an event: lost. */
        if (!edge_turn(s.pool, ep, 5000))
            assert_true(atomic_load(&s.done) >= atomic_load(&s.started));
    }
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&s.done), ONE_BY_ONE);
    close(ep);
    pyproc_pool_free(s.pool);
}

/* ---- many answers while the loop is elsewhere ---- */

#define MANY 200

static void many_answers_while_the_loop_is_away(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    int ep = edge_loop(p);
    atomic_int n = 0;
    (void)state;

    for (int i = 0; i < MANY; i++)
        assert_int_equal(pyproc_func_async(p, "t.calls.ping", count_done, &n, NULL), 0);
    usleep(300 * 1000); /* all answered, read by the service thread */
    double end = e2e_now() + 10;
    while (atomic_load(&n) < MANY && e2e_now() < end)
        edge_turn(p, ep, 100);
    assert_int_equal(atomic_load(&n), MANY);
    close(ep);
    pyproc_pool_free(p);
}

/* ---- a level-triggered loop sleeps once everything is dispatched ---- */

static void level_triggered_loop_sleeps_when_all_is_dispatched(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
    atomic_int n = 0;
    int wakes = 0;
    (void)state;

    /* A busy spell, one call at a time, each answer caught by its caller. */
    for (int i = 0; i < 500; i++) {
        assert_int_equal(pyproc_func_async(p, "t.calls.ping", count_done, &n, NULL), 0);
        while (atomic_load(&n) == i)
            if (poll(&fd, 1, 5000) == 1)
                assert_true(pyproc_dispatch(p) >= 0);
    }
    /* Nothing is pending now: the fd may wake the loop once more, for a
     * dispatch that finds nothing, and then never. */
    double end = e2e_now() + 0.5;
    while (e2e_now() < end) {
        if (poll(&fd, 1, 20) == 1) {
            wakes++;
            assert_int_equal(pyproc_dispatch(p), 0);
            assert_false(fd_readable(p));
        }
    }
    assert_true(wakes <= 1);
    assert_false(fd_readable(p));
    pyproc_pool_free(p);
}

/* ---- answers that only the loop reads (local pools) ---- */
#ifndef PYPROC_E2E_MPI

/* The pool's output function, on the service thread: holds that thread
 * on a given line until released. */
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

/* A pool of `workers` whose service thread is held. */
static pyproc_pool *pool_held(int workers, struct gate *g)
{
    pyproc_pool *p = e2e_pool_opts(
        (pyproc_opts){.workers = workers, .output = hold_on_first_line, .output_data = g});

    atomic_store(&g->held, false);
    atomic_store(&g->release, false);
    assert_int_equal(e2e_int(p, "t.hygiene.say"), 1);
    for (int i = 0; i < 2000 && !atomic_load(&g->held); i++)
        usleep(1000);
    assert_true(atomic_load(&g->held));
    return p;
}

/* The answer a dispatch reads from a doorbell ends there: its end is
 * queued without writing the fd, so nothing is left to wake the loop. */
static void doorbell_dispatch_leaves_no_event(void **state)
{
    static struct gate g;
    pyproc_pool *p = pool_held(1, &g);
    struct pollfd fd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
    atomic_int n = 0;
    pyproc_call *c;
    (void)state;

    for (int i = 0; i < 5; i++) {
        /* Slower than any spin: the answer comes by the doorbell. */
        assert_int_equal(pyproc_ind_call(p, 0, &c, "t.calls.block", "d", 0.02), 0);
        assert_int_equal(pyproc_call_on_done(c, count_done, &n), 0);
        while (atomic_load(&n) == i) {
            assert_int_equal(poll(&fd, 1, 5000), 1);
            assert_true(pyproc_dispatch(p) >= 0);
        }
        assert_false(fd_readable(p));
        pyproc_call_free(c);
    }
    atomic_store(&g.release, true);
    pyproc_pool_free(p);
}

/*
 * A completion waits in the queue while another worker's doorbell has
 * rung, and nobody but the loop reads rings: the dispatch that runs the
 * completion must read that ring too, for an edge-triggered loop gets
 * no other event for it.
 */
static void waiting_completions_do_not_hide_a_doorbell(void **state)
{
    static struct gate g;
    pyproc_pool *p = pool_held(2, &g);
    atomic_int slow = 0, quick = 0;
    pyproc_call *c1, *c0;
    pyproc_msg *m = NULL;
    (void)state;

    assert_int_equal(pyproc_ind_call(p, 1, &c1, "t.calls.block", "d", 0.02), 0);
    assert_int_equal(pyproc_call_on_done(c1, count_done, &slow), 0);
    usleep(300 * 1000); /* answered; its doorbell rang */
    /* c0 ends as the blocking call after it drains worker 0's ring, so
     * its callback is queued at once, before any dispatch. */
    assert_int_equal(pyproc_ind_call(p, 0, &c0, "t.calls.ping", NULL), 0);
    assert_int_equal(pyproc_ind_func(p, 0, "t.calls.ping", &m, NULL), 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_call_on_done(c0, count_done, &quick), 0);
    int ep = edge_loop(p);
    double end = e2e_now() + 3;
    while ((atomic_load(&slow) == 0 || atomic_load(&quick) == 0) && e2e_now() < end)
        edge_turn(p, ep, 100);
    assert_int_equal(atomic_load(&quick), 1);
    assert_int_equal(atomic_load(&slow), 1);
    atomic_store(&g.release, true);
    close(ep);
    pyproc_call_free(c0);
    pyproc_call_free(c1);
    pyproc_pool_free(p);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(edge_triggered_one_at_a_time),
        cmocka_unit_test(edge_triggered_one_at_a_time_two_workers),
        cmocka_unit_test(edge_triggered_loop_with_calls_from_another_thread),
        cmocka_unit_test(many_answers_while_the_loop_is_away),
        cmocka_unit_test(level_triggered_loop_sleeps_when_all_is_dispatched),
#ifndef PYPROC_E2E_MPI
        cmocka_unit_test(doorbell_dispatch_leaves_no_event),
        cmocka_unit_test(waiting_completions_do_not_hide_a_doorbell),
#endif
    };
    alarm(240);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
