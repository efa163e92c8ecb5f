/*
 * Sleeping and waking around a call: a caller that polls the reply ring
 * while it sends, the asynchronous call spun for by its starter, and
 * calls after idle gaps, when the worker sleeps and the caller does not
 * spin.  Each would lose an answer (and time out here) if the hand-over
 * between polling, the doorbell and the service thread went wrong.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "e2e.h"
#include "host/chan.h"
#include "host/start.h"

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- the poll around a send, on a ring without a worker ---- */

static struct {
    _Alignas(64) struct shm_ring_ctl ctl;
    _Alignas(64) uint8_t data[4096];
    struct pp_worker w;
    struct shm_ring producer; /* the worker's view of the same ring */
    pyproc_pool pool;
} fake;

static void fake_setup(void)
{
    memset(&fake, 0, sizeof fake);
    int bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(bell >= 0);
    assert_int_equal(shm_ring_attach(&fake.w.rx, &fake.ctl, fake.data, sizeof fake.data, 1024, bell,
                                     NULL),
                     0);
    assert_int_equal(shm_ring_attach(&fake.producer, &fake.ctl, fake.data, sizeof fake.data, 1024,
                                     bell, NULL),
                     0);
    /* As the service thread leaves it: the doorbell armed. */
    assert_false(shm_ring_doorbell_begin(&fake.w.rx));
}

static void fake_frame(uint16_t type)
{
    void *dst;
    assert_int_equal(shm_ring_reserve(&fake.producer, 8, &dst), 0);
    memset(dst, 0, 8);
    shm_ring_commit(&fake.producer, type, 0, 1, 8);
    shm_ring_notify(&fake.producer);
}

static void fake_answer(void)
{
    fake_frame(SHM_FRAME_RESULT);
}

static bool bell_rang(void)
{
    uint64_t n = 0;
    return read(fake.w.rx.doorbell_fd, &n, sizeof n) == sizeof n && n > 0;
}

/*
 * An answer written while the sender polls rings nothing (the ring says
 * SHM_AWAKE): leaving the poll must report it, so the sender drains it or
 * hands it on, and must not leave the doorbell armed over it.
 */
static void answer_during_the_send_is_reported(void **state)
{
    (void)state;
    fake_setup();
    pyproc__poll_enter(&fake.w);
    fake_answer();
    assert_false(bell_rang());
    assert_true(pyproc__poll_leave_quiet(&fake.w));
    assert_int_equal(atomic_load(&fake.ctl.consumer_wait), SHM_AWAKE);
    close(fake.w.rx.doorbell_fd);
}

/* With nothing written meanwhile, leaving re-arms the doorbell, and the
 * next answer rings it. */
static void quiet_leave_rearms_the_doorbell(void **state)
{
    (void)state;
    fake_setup();
    pyproc__poll_enter(&fake.w);
    assert_false(pyproc__poll_leave_quiet(&fake.w));
    assert_int_equal(atomic_load(&fake.ctl.consumer_wait), SHM_SLEEP_DOORBELL);
    fake_answer();
    assert_true(bell_rang());
    close(fake.w.rx.doorbell_fd);
}

/* Only the last of several pollers re-arms, and reports. */
static void inner_poller_leaves_the_ring_awake(void **state)
{
    (void)state;
    fake_setup();
    pyproc__poll_enter(&fake.w);
    pyproc__poll_enter(&fake.w);
    fake_answer();
    assert_false(pyproc__poll_leave_quiet(&fake.w));
    assert_int_equal(atomic_load(&fake.ctl.consumer_wait), SHM_AWAKE);
    assert_true(pyproc__poll_leave_quiet(&fake.w));
    assert_false(bell_rang());
    close(fake.w.rx.doorbell_fd);
}

/*
 * What came in while the sender polled is drained by the sender, which
 * must arm the doorbell again before it leaves: a later answer, when
 * nobody polls, has to ring it.  (A READY frame: its drain needs no call
 * table.)
 */
static void sender_drains_and_rearms(void **state)
{
    (void)state;
    fake_setup();
    fake.w.pool = &fake.pool;
    pthread_mutex_init(&fake.pool.lock, NULL);
    pthread_cond_init(&fake.pool.changed, NULL);
    pthread_mutex_init(&fake.w.rx_lock, NULL);
    pyproc__poll_enter(&fake.w);
    fake_frame(SHM_FRAME_READY);
    pyproc__poll_leave_draining(&fake.w);
    assert_true(shm_ring_empty(&fake.w.rx));
    assert_true(atomic_load(&fake.w.ready));
    assert_false(bell_rang());
    fake_frame(SHM_FRAME_READY);
    assert_true(bell_rang());
    pthread_mutex_destroy(&fake.w.rx_lock);
    pthread_cond_destroy(&fake.pool.changed);
    pthread_mutex_destroy(&fake.pool.lock);
    close(fake.w.rx.doorbell_fd);
}

/* ---- end to end ---- */

struct done_box {
    int calls, result;
};

static void on_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    struct done_box *box = data;
    (void)p;
    box->calls++;
    box->result = result;
    pyproc_msg_free(ret);
}

/* One asynchronous call the way an event loop makes it: start, poll the
 * pool's fd (bounded), dispatch. */
static void one_async_call(pyproc_pool *p)
{
    struct pollfd pfd = {.fd = pyproc_pool_fd(p), .events = POLLIN};
    struct done_box box = {0};

    assert_int_equal(pyproc_func_async(p, "t.calls.ping", on_done, &box, NULL), 0);
    while (box.calls == 0) {
        if (poll(&pfd, 1, 5000) == 0)
            fail_msg("the pool's fd stayed quiet for 5 s after a call");
        assert_true(pyproc_dispatch(p) >= 0);
    }
    assert_int_equal(box.calls, 1);
    assert_int_equal(box.result, 0);
}

/*
 * An event loop making one call at a time, with idle gaps now and then so
 * that the worker sleeps and the call takes the path that wakes it; on
 * one worker and on two (round robin).  The pool's fd must become
 * readable for every one, whoever drained the answer.
 */
static void event_loop_calls_one_at_a_time(void **state)
{
    (void)state;
    alarm(120);
    for (int workers = 1; workers <= 2; workers++) {
        pyproc_pool *p = e2e_pool(workers);
        for (int i = 0; i < 3000; i++) {
            if (i % 100 == 99)
                nap_us(3000);
            one_async_call(p);
        }
        /* Nothing is left counted as in flight. */
        assert_int_equal(atomic_load(&p->async_out), 0);
        pyproc_pool_free(p);
    }
    alarm(0);
}

/* A burst of asynchronous calls, some failing, all counted out again:
 * the count that chooses whether the starter spins must not drift. */
static void async_burst_is_counted_out(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool(2);
    struct done_box ok = {0}, bad = {0};
    struct pollfd pfd = {.fd = pyproc_pool_fd(p), .events = POLLIN};

    alarm(60);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(pyproc_func_async(p, "t.calls.ping", on_done, &ok, NULL), 0);
        assert_int_equal(pyproc_func_async(p, "t.no.such", on_done, &bad, NULL), 0);
    }
    while (ok.calls + bad.calls < 400) {
        if (poll(&pfd, 1, 5000) == 0)
            fail_msg("%d of 400 calls ended", ok.calls + bad.calls);
        assert_true(pyproc_dispatch(p) >= 0);
    }
    assert_int_equal(ok.result, 0);
    assert_true(bad.result < 0);
    assert_int_equal(atomic_load(&p->async_out), 0);
    alarm(0);
    pyproc_pool_free(p);
}

/*
 * Synchronous calls from two threads on a pool of two, with gaps of every
 * length around the workers' spin (none, a few microseconds, a little
 * more than the spin, a millisecond), so that each call meets a worker
 * spinning, falling asleep or asleep.  Each wait is bounded.
 */
struct syncer {
    pyproc_pool *p;
    int errors;
};

static void *syncer_main(void *arg)
{
    static const long gaps_us[] = {0, 5, 60, 250, 1000};
    struct syncer *s = arg;

    for (int i = 0; i < 1500; i++) {
        pyproc_call *c = NULL;
        pyproc_msg *m = NULL;
        nap_us(gaps_us[i % 5]);
        if (pyproc_track_func(s->p, NULL, &c, "t.calls.ping", NULL) < 0 ||
            pyproc_wait(c, &m, 5000) < 0)
            s->errors++;
        pyproc_msg_free(m);
        pyproc_call_free(c);
    }
    return NULL;
}

static void sync_calls_across_idle_gaps(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool(2);
    struct syncer s[2] = {{.p = p}, {.p = p}};
    pthread_t th[2];

    alarm(120);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, syncer_main, &s[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    alarm(0);
    assert_int_equal(s[0].errors + s[1].errors, 0);
    pyproc_pool_free(p);
}

/*
 * A worker that shares a CPU with its host moves itself off it for a
 * moment: its affinity must come back as it was, be it every CPU or
 * the one CPU it was pinned to.  The host thread is pinned to one CPU
 * and the worker starts on it, so that the two take turns there.
 */
static void burst_of_calls(pyproc_pool *p)
{
    for (int i = 0; i < 20000; i++) {
        pyproc_msg *m = NULL;
        assert_int_equal(pyproc_func(p, "t.calls.ping", &m, NULL), 0);
        pyproc_msg_free(m);
    }
}

static void worker_affinity_is_left_as_it_was(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool(1);
    int pid = e2e_pid_of(p, 0);
    cpu_set_t mine, one, got;

    alarm(120);
    assert_true(pid > 0);
    assert_int_equal(sched_getaffinity(0, sizeof mine, &mine), 0);
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &mine)) {
            CPU_SET(cpu, &one);
            break;
        }
    /* Both on one CPU, then the worker free to go anywhere we may. */
    assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
    assert_int_equal(sched_setaffinity(pid, sizeof one, &one), 0);
    assert_int_equal(sched_setaffinity(pid, sizeof mine, &mine), 0);
    burst_of_calls(p);
    assert_int_equal(sched_getaffinity(pid, sizeof got, &got), 0);
    assert_true(CPU_EQUAL(&got, &mine));
    /* Pinned to the host's one CPU, it has nowhere to go and stays. */
    assert_int_equal(sched_setaffinity(pid, sizeof one, &one), 0);
    burst_of_calls(p);
    assert_int_equal(sched_getaffinity(pid, sizeof got, &got), 0);
    assert_true(CPU_EQUAL(&got, &one));
    assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof mine, &mine), 0);
    alarm(0);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answer_during_the_send_is_reported),
        cmocka_unit_test(quiet_leave_rearms_the_doorbell),
        cmocka_unit_test(inner_poller_leaves_the_ring_awake),
        cmocka_unit_test(sender_drains_and_rearms),
        cmocka_unit_test(event_loop_calls_one_at_a_time),
        cmocka_unit_test(async_burst_is_counted_out),
        cmocka_unit_test(sync_calls_across_idle_gaps),
        cmocka_unit_test(worker_affinity_is_left_as_it_was),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
