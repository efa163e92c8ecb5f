/*
 * End to end: waiting for answers, sending, and the callback thread, under
 * the interleavings that once lost a wake-up, blocked the callback thread
 * behind a full request ring, or used a freed worker.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "host/start.h"

/*
 * The library's futex calls, defined here so that the archive's own
 * (shm/futex.c) are not linked in: the same system calls, plus a hook that
 * runs just before one chosen FUTEX_WAIT, to put another thread's action
 * exactly between a waiter's last check and its sleep.
 */
static _Atomic uint32_t *hook_word; /* the word whose next wait is hooked */
static void (*hook_fn)(void);

int shm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms, bool shared)
{
    int op = shared ? FUTEX_WAIT : FUTEX_WAIT | FUTEX_PRIVATE_FLAG;
    struct timespec ts, *tsp = NULL;

    if (word == hook_word && hook_fn) {
        void (*fn)(void) = hook_fn;
        hook_fn = NULL;
        fn();
    }
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (syscall(SYS_futex, (void *)word, op, expected, tsp, NULL, 0) == 0 || errno == EAGAIN)
        return 0;
    return -errno;
}

void shm_futex_wake(_Atomic uint32_t *word, int n, bool shared)
{
    int op = shared ? FUTEX_WAKE : FUTEX_WAKE | FUTEX_PRIVATE_FLAG;

    syscall(SYS_futex, (void *)word, op, n, NULL, NULL, 0);
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- every waiter is woken by its own answer ---- */

/*
 * The interleaving itself, without a worker: a caller sleeping on the
 * reply ring has checked that its call is not done and is about to
 * FUTEX_WAIT, when another thread (which drained its answer) completes
 * the call.  The caller must not sleep on.
 */
static struct {
    _Alignas(64) struct shm_ring_ctl ctl;
    _Alignas(64) uint8_t data[4096];
    pyproc_pool pool;
    struct pp_worker w;
    pyproc_call c;
} fake;

static void *drainer_main(void *arg)
{
    (void)arg;
    pyproc__call_signal(&fake.c);
    return NULL;
}

/* Run on the sleeper's thread just before its FUTEX_WAIT. */
static void drain_elsewhere(void)
{
    pthread_t t;

    pthread_create(&t, NULL, drainer_main, NULL);
    pthread_join(t, NULL);
}

static void ring_sleeper_sees_an_answer_drained_elsewhere(void **state)
{
    (void)state;
    memset(&fake, 0, sizeof fake);
    fake.pool.name = "fake";
    fake.w.pool = &fake.pool;
    assert_int_equal(shm_ring_attach(&fake.w.rx, &fake.ctl, fake.data, sizeof fake.data, 1024, -1,
                                     NULL),
                     0);
    pthread_mutex_init(&fake.w.rx_lock, NULL);
    fake.c.pool = &fake.pool;
    fake.c.worker = &fake.w;
    atomic_init(&fake.c.refs, 2);
    hook_word = &fake.ctl.consumer_wait;
    hook_fn = drain_elsewhere;

    double t0 = e2e_now();
    assert_true(pyproc__call_wait_state(&fake.c, shm_now_ns() + 3000 * 1000000LL));
    double took = e2e_now() - t0;
    hook_word = NULL;
    assert_null(hook_fn); /* the caller did reach its sleep */
    pthread_mutex_destroy(&fake.w.rx_lock);
    if (took > 0.05)
        fail_msg("the caller slept %.3f s past its answer", took);
}

#define WAKE_THREADS 8
#define WAKE_ROUNDS 300

struct waker {
    pyproc_pool *p;
    pthread_barrier_t *start;
    int k;
    double worst; /* seconds past its answer, at most */
    int errors;
};

static _Atomic bool wake_done;
static _Atomic int callers_left; /* the stretcher stops at 0 */

/*
 * Stretch the callers' time: a signal whose handler spins for a while
 * lands at a random instruction of a waiting caller, so the short windows
 * of its wait (between saying it will sleep and sleeping) last long enough
 * for other threads to drain its answer meanwhile.
 */
static void stretch(int sig)
{
    (void)sig;
    double until = e2e_now() + 0.0003;
    while (e2e_now() < until)
        ;
}

struct stretcher {
    pthread_t *th;
    int n;
};

static void *stretch_main(void *arg)
{
    struct stretcher *s = arg;
    unsigned seed = 7;

    while (atomic_load(&callers_left) > 0) {
        pthread_kill(s->th[rand_r(&seed) % (unsigned)s->n], SIGURG);
        nanosleep(&(struct timespec){0, 300 * 1000}, NULL);
    }
    return NULL;
}

static void *wake_caller(void *arg)
{
    struct waker *t = arg;
    unsigned seed = (unsigned)t->k + 1;

    for (int round = 0; round < WAKE_ROUNDS; round++) {
        /* Answers a few ms apart, so that spinning callers drain the
         * answers of callers that are about to sleep on the ring. */
        double delay = 0.0005 * (rand_r(&seed) % 8);
        pyproc_msg *m = NULL;

        double answered = 0;
        pthread_barrier_wait(t->start);
        int rc = pyproc_ind_func(t->p, 0, "t.calls.nap_stamp", &m, "d", delay);
        double late = e2e_now();
        if (rc < 0 || pyproc_msg_read(m, "d", &answered) < 0)
            t->errors++;
        late -= answered;
        pyproc_msg_free(m);
        if (late > t->worst)
            t->worst = late;
    }
    atomic_fetch_sub(&callers_left, 1);
    return NULL;
}

/* Unrelated answers now and then, so that a lost wake-up shows up as a
 * late answer rather than a hang. */
static void *wake_ticker(void *arg)
{
    pyproc_pool *p = arg;

    while (!atomic_load(&wake_done)) {
        nap_ms(3000);
        pyproc_msg *m = NULL;
        pyproc_ind_func(p, 0, "t.calls.ping", &m, NULL);
        pyproc_msg_free(m);
    }
    return NULL;
}

static void callers_are_woken_by_their_answers(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .spin_us = 3000});
    pthread_barrier_t start;
    pthread_t th[WAKE_THREADS], ticker, stretcher;
    struct stretcher st = {th, WAKE_THREADS};
    struct sigaction sa = {.sa_handler = stretch, .sa_flags = SA_RESTART};
    struct waker t[WAKE_THREADS];
    pyproc_call *busy;
    pyproc_msg *m = NULL;
    double worst = 0;

    alarm(120);
    assert_int_equal(pyproc_ind_call(p, 0, &busy, "t.calls.keep_busy", "d", 600.0), 0);
    atomic_store(&wake_done, false);
    pthread_barrier_init(&start, NULL, WAKE_THREADS);
    sigaction(SIGURG, &sa, NULL);
    atomic_store(&callers_left, WAKE_THREADS);
    assert_int_equal(pthread_create(&ticker, NULL, wake_ticker, p), 0);
    for (int k = 0; k < WAKE_THREADS; k++) {
        t[k] = (struct waker){.p = p, .start = &start, .k = k};
        assert_int_equal(pthread_create(&th[k], NULL, wake_caller, &t[k]), 0);
    }
    assert_int_equal(pthread_create(&stretcher, NULL, stretch_main, &st), 0);
    pthread_join(stretcher, NULL); /* before the callers' ids go */
    for (int k = 0; k < WAKE_THREADS; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(t[k].errors, 0);
        if (t[k].worst > worst)
            worst = t[k].worst;
    }
    atomic_store(&wake_done, true);
    pthread_join(ticker, NULL);
    pyproc_cancel(busy);
    pyproc_wait(busy, &m, 5000);
    pyproc_msg_free(m);
    pyproc_call_free(busy);
    pthread_barrier_destroy(&start);
    pyproc_pool_free(p);
    alarm(0);
    /* Far above what a loaded machine (or ASan) costs, far below what
     * waiting for the ticker's answer costs. */
    if (worst > 1.0)
        fail_msg("a call returned %.3f s after its answer", worst);
}

/* ---- a forked child's free touches nothing shared ---- */

static void forked_child_frees_without_touching_the_stream(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *s = NULL;
    pyproc_msg *item = NULL;
    int64_t v, expect = 0;
    int rc, status;

    alarm(60);
    assert_int_equal(pyproc_gen(p, "t.calls.acount", &s, "id", 60, 0.005), 0);
    assert_int_equal(pyproc_next(s, &item), 1);
    assert_int_equal(pyproc_msg_read(item, "I", &v), 0);
    assert_int_equal(v, expect++);
    pyproc_msg_free(item);

    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        pyproc_call_free(s);
        _exit(0);
    }
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    while ((rc = pyproc_next(s, &item)) == 1) {
        assert_int_equal(pyproc_msg_read(item, "I", &v), 0);
        assert_int_equal(v, expect++);
        pyproc_msg_free(item);
    }
    if (rc < 0 && item)
        fprintf(stderr, "%s\n", pyproc_msg_error(item));
    assert_int_equal(rc, 0);
    assert_int_equal(expect, 60);
    pyproc_call_free(s);
    pyproc_pool_free(p);
    alarm(0);
}

/* Wait until worker 0 (respawned) answers again. */
static void wait_answers(pyproc_pool *p)
{
    for (int i = 0; i < 500; i++) {
        pyproc_msg *m = NULL;
        int rc = pyproc_ind_func(p, 0, "t.calls.ping", &m, NULL);
        pyproc_msg_free(m);
        if (rc == 0)
            return;
        nap_ms(10);
    }
    fail_msg("worker 0 did not come back");
}

/* ---- a worker that dies while the host answers its callback ---- */

static int kill_caller(pyproc_pool *p, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    int pid = 0;
    pyproc_worker_stats st;

    (void)data;
    assert_int_equal(pyproc_msg_read(payload, "i", &pid), 0);
    kill(pid, SIGKILL);
    /* Let the respawn replace it, so that the old worker is let go. */
    for (int i = 0; i < 500; i++) {
        if (pyproc_stats(p, ind, &st) == 0 && st.pid > 0 && st.pid != pid)
            break;
        nap_ms(10);
    }
    nap_ms(200);
    return pyproc_msg_new(reply, "i", 1);
}

static void worker_dies_during_its_callback(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .callback = kill_caller});
    pyproc_msg *m = NULL;

    alarm(60);
    assert_int_equal(pyproc_ind_func(p, 0, "t.calls.call_home_pid", &m, NULL), PYPROC_EWORKER);
    pyproc_msg_free(m);
    /* The pool goes on: the new worker answers, its callbacks too. */
    wait_answers(p);
    pyproc_pool_free(p);
    alarm(0);
}

/* ---- a worker flooding the callback queue is stopped ---- */

static _Atomic int flood_seen;

static int slow_answer(pyproc_pool *p, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    (void)p, (void)ind, (void)payload, (void)data;
    /* The first answer takes long enough for the queue to fill. */
    if (atomic_fetch_add(&flood_seen, 1) == 0)
        nap_ms(1500);
    return pyproc_msg_new(reply, "i", 0);
}

static void callback_flood_stops_the_worker(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .callback = slow_answer});
    pyproc_msg *m = NULL;

    alarm(120);
    atomic_store(&flood_seen, 0);
    int rc = pyproc_ind_func(p, 0, "t.calls.flood", &m, "i", 20000);
    if (rc < 0 && m)
        fprintf(stderr, "flood: %s\n", pyproc_msg_error(m));
    pyproc_msg_free(m);
    assert_int_equal(rc, PYPROC_EWORKER);
    /* Far fewer callbacks ran than were sent: the rest were dropped. */
    assert_true(atomic_load(&flood_seen) < 20000);
    wait_answers(p);
    pyproc_pool_free(p);
    alarm(0);
}

/* ---- the callback thread never waits behind a blocked writer ---- */

static _Atomic int cb_entered;
static _Atomic bool cb_go;
static _Atomic int64_t cb_second_ns; /* when the second callback ran */

static int64_t mono_ns(void)
{
    return (int64_t)(e2e_now() * 1e9);
}

static int held_answer(pyproc_pool *p, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    int n = 0;

    (void)p, (void)ind, (void)data;
    pyproc_msg_read(payload, "i", &n);
    if (atomic_fetch_add(&cb_entered, 1) == 0) {
        for (int i = 0; i < 1000 && !atomic_load(&cb_go); i++)
            nap_ms(5);
    } else {
        atomic_store(&cb_second_ns, mono_ns());
    }
    return pyproc_msg_new(reply, "i", n * 10);
}

static int64_t big_len; /* what the worker counted, -1 on failure */

static void *big_writer(void *arg)
{
    pyproc_pool *p = arg;
    static char big[64 * 1024];
    pyproc_msg *m = NULL;
    int64_t n = -1;

    if (pyproc_ind_func(p, 0, "t.calls.length", &m, "y", big, sizeof big) < 0 ||
        pyproc_msg_read(m, "I", &n) < 0)
        n = -1;
    big_len = n;
    pyproc_msg_free(m);
    return NULL;
}

static int64_t wait_int(pyproc_call *c)
{
    pyproc_msg *m = NULL;
    int64_t v = -1;
    int rc = pyproc_wait(c, &m, 20000);

    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    return v;
}

static void callback_reply_waits_without_blocking(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool_opts(
        (pyproc_opts){.workers = 2, .ring_bytes = 4096, .callback = held_answer});
    pyproc_call *home, *busy, *other;
    pthread_t writer;

    alarm(60);
    atomic_store(&cb_entered, 0);
    atomic_store(&cb_go, false);
    atomic_store(&cb_second_ns, 0);
    /* Worker 0 awaits the first callback, which holds on until told. */
    assert_int_equal(pyproc_ind_call(p, 0, &home, "t.calls.call_home", "i", 1), 0);
    for (int i = 0; i < 1000 && !atomic_load(&cb_entered); i++)
        nap_ms(5);
    assert_int_equal(atomic_load(&cb_entered), 1);
    /* Then it blocks in a plain call, and a 64 KiB argument fills its ring. */
    assert_int_equal(pyproc_ind_call(p, 0, &busy, "t.calls.block", "d", 1.5), 0);
    nap_ms(100);
    assert_int_equal(pthread_create(&writer, NULL, big_writer, p), 0);
    nap_ms(200);
    /* The first callback returns: its reply cannot be written yet. */
    atomic_store(&cb_go, true);
    int64_t returned = mono_ns();
    /* Worker 1's callback must not wait for worker 0's ring. */
    assert_int_equal(pyproc_ind_call(p, 1, &other, "t.calls.call_home", "i", 2), 0);
    assert_int_equal(wait_int(other), 21);
    int64_t second = atomic_load(&cb_second_ns);
    assert_true(second > 0);
    if (second - returned > 700 * 1000000LL)
        fail_msg("the second callback ran %.3f s after the first returned",
                 (double)(second - returned) / 1e9);
    /* Worker 0's reply arrives once its ring has room. */
    assert_int_equal(wait_int(home), 11);
    pyproc_msg *m = NULL;
    assert_int_equal(pyproc_wait(busy, &m, 20000), 0);
    pyproc_msg_free(m);
    pyproc_call_free(busy);
    pthread_join(writer, NULL);
    assert_int_equal(big_len, 64 * 1024);
    pyproc_pool_free(p);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ring_sleeper_sees_an_answer_drained_elsewhere),
        cmocka_unit_test(callers_are_woken_by_their_answers),
        cmocka_unit_test(forked_child_frees_without_touching_the_stream),
        cmocka_unit_test(worker_dies_during_its_callback),
        cmocka_unit_test(callback_flood_stops_the_worker),
        cmocka_unit_test(callback_reply_waits_without_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
