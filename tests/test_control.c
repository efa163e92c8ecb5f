/*
 * End to end: stopping calls and workers never waits on the request ring,
 * and faults in a worker's own Python (forks, task factories, SystemExit
 * in a later step) stay with the call that caused them.
 *
 * A call that waits for ring space holds the ring's producer side for as
 * long as the worker does not read; timeouts, cancels and pyproc_pool_free()
 * must still get through.  For a worker that never reads at all, the pool's
 * worker_path is this very binary: started with the worker's command line,
 * it maps its segment, says READY, and then reads nothing.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "e2e.h"
#include "fake_worker.h"

#define SMALL_RING 4096
#define BIG_ARG (64 * 1024)

/* Every test must end well within this; a hang is killed by SIGALRM. */
#define WATCHDOG_S 60

static char big[BIG_ARG];

static pyproc_pool *control_pool(int timeout_ms, size_t ring_bytes)
{
    return e2e_pool_opts((pyproc_opts){
        .workers = 1,
        .call_timeout_ms = timeout_ms,
        .ring_bytes = ring_bytes,
    });
}

static uint64_t restarts_of(pyproc_pool *p)
{
    pyproc_worker_stats st;

    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    return st.restarts;
}

/* Whether "t.control.seen" lists what. */
static bool ran(pyproc_pool *p, const char *what)
{
    return e2e_saw(p, 0, "t.control.seen", what);
}

/* Wait for c and expect rc, with an error message holding `text`. */
static void expect_end(pyproc_call *c, int rc, const char *text)
{
    pyproc_msg *m = NULL;
    int got = pyproc_wait(c, &m, 20000);

    if (!m)
        fail_msg("the call did not end (wait returned %d)", got);
    if (got != rc)
        fail_msg("expected %d, got %d: %s", rc, got,
                 pyproc_msg_error(m) ? pyproc_msg_error(m) : "(no error)");
    if (text)
        assert_non_null(strstr(pyproc_msg_error(m), text));
    pyproc_msg_free(m);
    pyproc_call_free(c);
}

static void free_within(pyproc_pool *p, double seconds)
{
    double t0 = e2e_now();

    pyproc_pool_free(p);
    if (e2e_now() - t0 > seconds)
        fail_msg("pyproc_pool_free() took %.1f s", e2e_now() - t0);
}

/* A caller that sends a 64 KiB argument to worker 0 and waits for it. */
struct big_caller {
    pyproc_pool *pool;
    const char *ref;
    pthread_t thread;
    int sent;   /* what pyproc_ind_call() returned */
    int result; /* what pyproc_wait() returned */
    bool ended;
};

static void *big_call(void *arg)
{
    struct big_caller *b = arg;
    pyproc_call *c = NULL;
    pyproc_msg *m = NULL;

    b->sent = pyproc_ind_call(b->pool, 0, &c, b->ref, "y", big, sizeof big);
    if (b->sent == 0) {
        b->result = pyproc_wait(c, &m, 30000);
        b->ended = m != NULL || b->result == 0;
        pyproc_msg_free(m);
        pyproc_call_free(c);
    }
    return NULL;
}

static void big_caller_start(struct big_caller *b, pyproc_pool *p, const char *ref)
{
    *b = (struct big_caller){.pool = p, .ref = ref};
    assert_int_equal(pthread_create(&b->thread, NULL, big_call, b), 0);
    usleep(200000); /* until it waits for ring space */
}

/*
 * A call in a Python loop times out while another caller waits for ring
 * space behind it: the timeout interrupts the loop, the blocked argument
 * goes through, and freeing the pool does not hang.
 */
static void timeout_with_a_caller_blocked_on_the_ring(void **state)
{
    pyproc_pool *p = control_pool(300, SMALL_RING);
    struct big_caller b;
    pyproc_call *spin;
    double t0 = e2e_now();

    (void)state;
    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_call(p, 0, &spin, "t.control.spin", NULL), 0);
    usleep(50000);
    big_caller_start(&b, p, "t.control.take");
    expect_end(spin, -ETIMEDOUT, "interrupted");
    assert_true(e2e_now() - t0 < 10.0);
    assert_int_equal(pthread_join(b.thread, NULL), 0);
    assert_int_equal(b.sent, 0);
    /* Queued past its own deadline: stopped before it started, or run. */
    assert_true(b.ended);
    assert_true(b.result == 0 || b.result == -ETIMEDOUT);
    assert_int_equal(restarts_of(p), 0);
    free_within(p, 10.0);
    alarm(0);
}

/* The same with no call timeout: freeing the pool ends both calls. */
static void free_with_a_caller_blocked_on_the_ring(void **state)
{
    pyproc_pool *p = control_pool(0, SMALL_RING);
    struct big_caller b;
    pyproc_call *spin;

    (void)state;
    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_call(p, 0, &spin, "t.control.spin", "d", 30.0), 0);
    usleep(50000);
    big_caller_start(&b, p, "t.control.take");
    free_within(p, 10.0);
    assert_int_equal(pthread_join(b.thread, NULL), 0);
    assert_true(b.sent < 0 || b.result < 0);
    expect_end(spin, -ECANCELED, NULL);
    alarm(0);
}

/*
 * Two calls reach the pool's call timeout together, one running a Python
 * loop, one queued behind it: both are stopped, most often in the same
 * tick of the service thread; the running one is interrupted, the queued
 * one never starts, and the worker lives on.
 *
 * The queued call was sent a moment later, so the 20 ms tick may fall
 * between the two deadlines: the running call is then interrupted one
 * tick before the queued one is stopped, and had the worker become free
 * at once, running the queued call would have been right.  The running call keeps the worker LINGER_S after its interrupt,
 * long past the queued call's deadline and the tick after it, so the
 * queued call is stopped before the worker is free wherever the tick
 * falls; well within the second after which a timed-out call's worker is
 * killed.
 */
#define LINGER_S 0.4
static void two_timeouts_in_one_tick(void **state)
{
    pyproc_pool *p = control_pool(300, 0);
    pyproc_call *spin, *queued;
    int pid = e2e_pid_of(p, 0);

    (void)state;
    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_call(p, 0, &spin, "t.control.spin_then_linger", "d", LINGER_S), 0);
    assert_int_equal(pyproc_ind_call(p, 0, &queued, "t.control.record", "s", "queued"), 0);
    expect_end(spin, -ETIMEDOUT, "interrupted");
    expect_end(queued, -ETIMEDOUT, "timeout");
    assert_int_equal(e2e_pid_of(p, 0), pid);
    assert_int_equal(restarts_of(p), 0);
    assert_false(ran(p, "queued"));
    pyproc_pool_free(p);
    alarm(0);
}

/* Cancelling a plain call queued behind another: it never runs. */
static void cancel_a_queued_plain_call(void **state)
{
    pyproc_pool *p = control_pool(0, 0);
    pyproc_call *nap, *queued;

    (void)state;
    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_call(p, 0, &nap, "t.control.nap", "d", 0.3), 0);
    assert_int_equal(pyproc_ind_call(p, 0, &queued, "t.control.record", "s", "queued"), 0);
    usleep(50000);
    assert_int_equal(pyproc_cancel(queued), 0);
    expect_end(queued, -ECANCELED, "CancelledError");
    expect_end(nap, 0, NULL);
    assert_false(ran(p, "queued"));
    pyproc_pool_free(p);
    alarm(0);
}

/*
 * More cancels at once than the stop table holds: those that find no room
 * are posted as slots free, and every call still ends.
 */
static void more_cancels_than_the_table_holds(void **state)
{
    enum { N = SHM_STOP_SLOTS + 36 };
    pyproc_pool *p = control_pool(0, 0);
    pyproc_call *nap, *queued[N];
    int cancelled = 0;

    (void)state;
    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_call(p, 0, &nap, "t.control.nap", "d", 0.5), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(pyproc_ind_call(p, 0, &queued[i], "t.control.record", "s", "many"), 0);
    usleep(50000);
    for (int i = 0; i < N; i++)
        assert_int_equal(pyproc_cancel(queued[i]), 0);
    for (int i = 0; i < N; i++) {
        pyproc_msg *m = NULL;
        int rc = pyproc_wait(queued[i], &m, 20000);
        if (!m && rc != 0)
            fail_msg("call %d did not end", i);
        assert_true(rc == 0 || rc == -ECANCELED);
        cancelled += rc == -ECANCELED;
        pyproc_msg_free(m);
        pyproc_call_free(queued[i]);
    }
    /* The table's worth, at least, were stopped before they started. */
    assert_true(cancelled >= SHM_STOP_SLOTS);
    expect_end(nap, 0, NULL);
    pyproc_pool_free(p);
    alarm(0);
}

static bool process_alive(int pid)
{
    char path[64], buf[512];
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z';
}

/*
 * User code forks and returns in both processes: the call gets the
 * worker's answer, the worker goes on serving, and the child is gone once
 * the pool is.
 */
static void a_forked_child_leaves_the_rings_alone(void **state)
{
    pyproc_pool *p = control_pool(0, 0);
    pyproc_msg *m = NULL;
    const char *who;
    int child = -1, pid = e2e_pid_of(p, 0);

    (void)state;
    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_func(p, 0, "t.control.fork_and_return", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "si", &who, &child), 0);
    assert_string_equal(who, "parent");
    assert_true(child > 0);
    pyproc_msg_free(m);
    for (int i = 0; i < 50; i++) {
        pyproc_call *c;
        assert_int_equal(pyproc_ind_call(p, 0, &c, "t.control.pid", NULL), 0);
        m = NULL;
        int rc = pyproc_wait(c, &m, 5000);
        if (rc != 0)
            fail_msg("call %d after the fork: %d %s", i, rc,
                     m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "");
        int got = -1;
        assert_int_equal(pyproc_msg_read(m, "i", &got), 0);
        assert_int_equal(got, pid);
        pyproc_msg_free(m);
        pyproc_call_free(c);
    }
    assert_int_equal(restarts_of(p), 0);
    pyproc_pool_free(p);
    for (int i = 0; i < 500 && process_alive(child); i++)
        usleep(10000);
    if (process_alive(child)) {
        kill(child, SIGKILL);
        fail_msg("the forked child %d outlived the pool", child);
    }
    alarm(0);
}

static int64_t int_call(pyproc_pool *p, const char *ref, int64_t x)
{
    pyproc_msg *m = NULL;
    int64_t v = -1;
    int rc = pyproc_ind_func(p, 0, ref, &m, "I", x);

    if (rc < 0)
        fail_msg("%s: %d %s", ref, rc, m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "");
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    return v;
}

/* A task factory of the application's own: coroutines still answer. */
static void a_task_factory_of_its_own(void **state)
{
    static const char *const factories[] = {"done", "busy"};
    pyproc_pool *p = control_pool(0, 0);

    (void)state;
    alarm(WATCHDOG_S);
    for (size_t k = 0; k < 2; k++) {
        pyproc_msg *m = NULL;
        assert_int_equal(pyproc_ind_func(p, 0, "t.control.use_factory", &m, "s", factories[k]), 0);
        pyproc_msg_free(m);
        for (int i = 0; i < 5; i++) {
            assert_int_equal(int_call(p, "t.control.double", 21), 42);
            assert_int_equal(int_call(p, "t.control.double_later", 21), 42);
        }
        assert_true(e2e_int(p, "t.control.factory_count") >= 10);
    }
    pyproc_pool_free(p);
    alarm(0);
}

/* SystemExit or KeyboardInterrupt after an await ends that call only. */
static void exit_in_a_later_step(const char *how, const char *type)
{
    pyproc_pool *p = control_pool(0, 0);
    pyproc_call *slow, *quitter;
    pyproc_msg *m = NULL;
    const char *s;
    int pid = e2e_pid_of(p, 0);

    alarm(WATCHDOG_S);
    assert_int_equal(pyproc_ind_call(p, 0, &slow, "t.control.slow_ok", NULL), 0);
    assert_int_equal(pyproc_ind_call(p, 0, &quitter, "t.control.exit_later", "s", how), 0);
    expect_end(quitter, PYPROC_EREMOTE, type);
    assert_int_equal(pyproc_wait(slow, &m, 20000), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "ok");
    pyproc_msg_free(m);
    pyproc_call_free(slow);
    assert_int_equal(e2e_pid_of(p, 0), pid);
    assert_int_equal(restarts_of(p), 0);
    pyproc_pool_free(p);
    alarm(0);
}

static void system_exit_in_a_later_step(void **state)
{
    (void)state;
    exit_in_a_later_step("exit", "SystemExit");
}

static void keyboard_interrupt_in_a_later_step(void **state)
{
    (void)state;
    exit_in_a_later_step("interrupt", "KeyboardInterrupt");
}

/* ---- a worker that never reads its request ring ---- */

/* Not against MPI pools (tests/mpi.sh): it starts this program again as
 * a worker, outside mpirun, where its MPI start-up fails. */
#ifndef PYPROC_E2E_MPI

static int deaf_worker(int argc, char **argv)
{
    fake_attach(argc, argv);
    /* Deaf from now on: head never moves, and nothing is ever read. */
    struct pollfd pfd = {.fd = fake.death_fd, .events = POLLIN};
    while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

static void free_a_deaf_worker_with_a_caller_blocked(void **state)
{
    pyproc_pool *p;
    struct big_caller b;

    (void)state;
    alarm(WATCHDOG_S);
    p = fake_pool_new("deaf", (pyproc_opts){.workers = 1, .ring_bytes = SMALL_RING}, NULL);
    big_caller_start(&b, p, "anything");
    free_within(p, 10.0);
    assert_int_equal(pthread_join(b.thread, NULL), 0);
    assert_true(b.sent < 0 || b.result < 0);
    alarm(0);
}
#endif

int main(int argc, char **argv)
{
#ifndef PYPROC_E2E_MPI
    /* Started as a worker: be the deaf one, never run the tests. */
    if (fake_started_as_worker(argc, argv))
        return deaf_worker(argc, argv);
#endif
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* one test, by name */

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timeout_with_a_caller_blocked_on_the_ring),
        cmocka_unit_test(free_with_a_caller_blocked_on_the_ring),
#ifndef PYPROC_E2E_MPI
        cmocka_unit_test(free_a_deaf_worker_with_a_caller_blocked),
#endif
        cmocka_unit_test(two_timeouts_in_one_tick),
        cmocka_unit_test(cancel_a_queued_plain_call),
        cmocka_unit_test(more_cancels_than_the_table_holds),
        cmocka_unit_test(a_forked_child_leaves_the_rings_alone),
        cmocka_unit_test(a_task_factory_of_its_own),
        cmocka_unit_test(system_exit_in_a_later_step),
        cmocka_unit_test(keyboard_interrupt_in_a_later_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
