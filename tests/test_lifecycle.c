/*
 * End to end: the pool's supervision and lifetime.  What add_sub and
 * set_attr promise reaches every worker, however workers come and go
 * meanwhile (pool growth, respawns); a pool freed while workers are being
 * respawned, with calls in flight.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "e2e.h"

#define MIN_SECONDS 2.0
#define MAX_ROUNDS 3000
#define GROWTH 5

struct race {
    pyproc_pool *p;
    bool growing, killing; /* which threads race the history writer */
    _Atomic bool grown;    /* the grower is done (or there is none) */
    _Atomic bool stop;     /* the history writer is done */
    _Atomic int kills;
    int rounds;
    bool sub_ok[MAX_ROUNDS], attr_ok[MAX_ROUNDS];
};

/*
 * add_sub and set_attr, one of each a round, each with its own name, until
 * the pool has grown and, while workers are killed, for MIN_SECONDS.
 */
static void *write_history(void *arg)
{
    struct race *r = arg;
    double until = e2e_now() + (r->killing ? MIN_SECONDS : 0);
    char name[32];
    int i;

    for (i = 0; i < MAX_ROUNDS; i++) {
        if (atomic_load(&r->grown) && e2e_now() >= until)
            break;
        snprintf(name, sizeof name, "s%d", i);
        /* Each load runs e2e's __init__, which counts itself in
         * t.inits: a request applied twice would show. */
        r->sub_ok[i] = pyproc_add_sub(r->p, name, "e2e", PYPROC_SUB_INIT) == 0;
        snprintf(name, sizeof name, "t.A%d", i);
        r->attr_ok[i] = pyproc_set_attr(r->p, name, "i", i) == 0;
        /* A pause between rounds, or a joining worker could wait long for
         * its turn; longer while workers are killed, so that many deaths
         * fall in the rounds.  A worker that died meanwhile gets time to
         * come back. */
        usleep(r->killing ? 2000 : 200);
        if (!r->sub_ok[i] || !r->attr_ok[i])
            usleep(5000);
    }
    r->rounds = i;
    atomic_store(&r->stop, true);
    return NULL;
}

static void *grow(void *arg)
{
    struct race *r = arg;

    for (int n = 0; n < GROWTH;)
        n += pyproc_add_proc(r->p, NULL) == 0;
    atomic_store(&r->grown, true);
    return NULL;
}

/*
 * Kill a worker every 100 ms.  Each has answered a call first, so its
 * death is not taken for a failure to start (which would back off).
 */
static void *kill_workers(void *arg)
{
    struct race *r = arg;
    unsigned seed = 1;

    while (!atomic_load(&r->stop)) {
        int pid = e2e_pid_of(r->p, (int)(rand_r(&seed) % (unsigned)pyproc_workers(r->p)));
        if (pid > 0 && kill(pid, SIGKILL) == 0)
            atomic_fetch_add(&r->kills, 1);
        usleep(100000);
    }
    return NULL;
}

static void expect_sub(pyproc_pool *p, int ind, int i)
{
    pyproc_msg *m = NULL;
    char ref[32];

    snprintf(ref, sizeof ref, "s%d.basic.pid", i);
    int rc = pyproc_ind_func(p, ind, ref, &m, NULL);
    if (rc < 0)
        fail_msg("worker %d lacks sub s%d: %s", ind, i, m ? pyproc_msg_error(m) : "?");
    pyproc_msg_free(m);
}

static void expect_attr(pyproc_pool *p, int ind, int i)
{
    pyproc_msg *m = NULL;
    char ref[32];
    int v = -1;

    snprintf(ref, sizeof ref, "t.A%d", i);
    int rc = pyproc_ind_func(p, ind, "t.proc.get_attr", &m, "s", ref);
    if (rc < 0)
        fail_msg("worker %d lacks attribute %s: %s", ind, ref, m ? pyproc_msg_error(m) : "?");
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    assert_int_equal(v, i);
    pyproc_msg_free(m);
}

/*
 * Sub t's __init__ ran at least once for each add_sub that succeeded (and
 * t's own), and at most once for each that was tried: never twice for one.
 */
static void expect_inits(pyproc_pool *p, int ind, int ok, int tried)
{
    pyproc_msg *m = NULL;
    int n = -1;

    assert_int_equal(pyproc_ind_func(p, ind, "t.basic.inits", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &n), 0);
    pyproc_msg_free(m);
    if (n < 1 + ok || n > 1 + tried)
        fail_msg("worker %d loaded e2e %d times: %d add_subs of %d succeeded", ind, n, ok, tried);
}

static void check_every_worker(struct race *r)
{
    int n = pyproc_workers(r->p), ok = 0, subs = 0;

    /* A replacement replays thousands of requests: give it time. */
    for (int ind = 0; ind < n; ind++)
        for (int i = 0; e2e_pid_of(r->p, ind) <= 0; i++) {
            if (i == 6000)
                fail_msg("worker %d did not come back", ind);
            usleep(10000);
        }
    for (int i = 0; i < r->rounds; i++) {
        ok += r->sub_ok[i] + r->attr_ok[i];
        subs += r->sub_ok[i];
    }
    printf("%d workers, %d killed; %d of %d requests succeeded\n", n, atomic_load(&r->kills), ok,
           2 * r->rounds);
    assert_true(ok > 0);
    for (int ind = 0; ind < n; ind++) {
        expect_inits(r->p, ind, subs, r->rounds);
        for (int i = 0; i < r->rounds; i++) {
            if (r->sub_ok[i])
                expect_sub(r->p, ind, i);
            if (r->attr_ok[i])
                expect_attr(r->p, ind, i);
        }
    }
}

/*
 * add_sub and set_attr racing pool growth, respawns or both: every one
 * that returned 0 is on every worker afterwards, whether it came by the
 * broadcast or by the replay of the pool's history, and none twice.  Each
 * race runs on its own as well, because a respawn replays the whole
 * history and so would mend what a race with growth lost.
 */
static void race(int workers, bool growing, bool killing)
{
    struct race r = {.p = e2e_pool(workers), .growing = growing, .killing = killing};
    pthread_t writer, grower, killer;

    atomic_store(&r.grown, !growing);
    assert_int_equal(pthread_create(&writer, NULL, write_history, &r), 0);
    if (growing)
        assert_int_equal(pthread_create(&grower, NULL, grow, &r), 0);
    if (killing)
        assert_int_equal(pthread_create(&killer, NULL, kill_workers, &r), 0);
    pthread_join(writer, NULL);
    if (growing)
        pthread_join(grower, NULL);
    if (killing)
        pthread_join(killer, NULL);
    assert_int_equal(pyproc_workers(r.p), workers + (growing ? GROWTH : 0));
    check_every_worker(&r);
    pyproc_pool_free(r.p);
}

static void history_reaches_workers_added_meanwhile(void **state)
{
    (void)state;
    race(2, true, false);
}

static void history_reaches_workers_respawned_meanwhile(void **state)
{
    (void)state;
    race(3, false, true);
}

static void history_reaches_every_worker(void **state)
{
    (void)state;
    race(2, true, true);
}

/*
 * Free pools while their workers are being respawned (slowly: each
 * replacement imports a module that sleeps), at varying moments of the
 * respawn.  Under AddressSanitizer this catches the pool reading a slot
 * that a respawn replaces and frees meanwhile.
 */
static void free_while_respawning(void **state)
{
    (void)state;
    for (int it = 0; it < 12; it++) {
        pyproc_pool *p = e2e_pool(3);
        int pids[3];

        assert_int_equal(pyproc_add_sub(p, "slow", "slowstart", 0), 0);
        for (int i = 0; i < 3; i++)
            pids[i] = e2e_pid_of(p, i);
        for (int i = 0; i < 3; i++)
            assert_int_equal(kill(pids[i], SIGKILL), 0);
        usleep((useconds_t)(it % 6) * 40000);
        double t0 = e2e_now();
        pyproc_pool_free(p);
        /* Not a speed check: a stuck free is what the alarm catches. */
        if (e2e_now() - t0 > 5)
            printf("pyproc_pool_free took %.1f s\n", e2e_now() - t0);
    }
}

struct free_waiter {
    pyproc_call *c;
    int rc;
};

/* Blocks on its call until pyproc_pool_free() ends it. */
static void *wait_across_free(void *arg)
{
    struct free_waiter *fw = arg;
    pyproc_msg *m = NULL;

    fw->rc = pyproc_wait(fw->c, &m, -1);
    pyproc_msg_free(m);
    return NULL;
}

/* A call in flight when its pool was freed: ended once, by the free or,
 * on a worker that was killed, perhaps by its death. */
static bool free_ending(int rc, bool killed)
{
    return rc == -ECANCELED || (killed && rc == PYPROC_EWORKER);
}

static void expect_ended_by_free(pyproc_call *c, bool killed)
{
    pyproc_msg *m = NULL;
    int rc = pyproc_wait(c, &m, 0);

    if (!free_ending(rc, killed))
        fail_msg("a call on worker %d ended with %d after pyproc_pool_free", pyproc_call_worker(c),
                 rc);
    assert_non_null(m);
    pyproc_msg_free(m);
    m = NULL;
    assert_int_equal(pyproc_wait(c, &m, 0), -EALREADY);
    assert_null(m);
    pyproc_call_free(c);
}

#define FREE_WORKERS 3
#define FREE_CALLS 3 /* a worker */

/*
 * Calls in flight on every worker, one of them waited on another thread,
 * and a worker killed at varying moments before the free: once
 * pyproc_pool_free() returns, every one of them has ended, and only once,
 * with -ECANCELED: not by the stopping of its worker, which comes after.
 */
static void free_ends_every_call_in_flight(void **state)
{
    (void)state;
    for (int it = 0; it < 6; it++) {
        pyproc_pool *p = e2e_pool(FREE_WORKERS);
        pyproc_call *calls[FREE_WORKERS * FREE_CALLS];
        struct free_waiter fw;
        pthread_t waiter;
        int killed = it % FREE_WORKERS, victim = e2e_pid_of(p, killed);

        assert_true(victim > 0);
        for (int i = 0; i < FREE_WORKERS * FREE_CALLS; i++)
            assert_int_equal(pyproc_ind_call(p, i % FREE_WORKERS, &calls[i], "t.calls.nap", "d",
                                             30.0),
                             0);
        fw.c = calls[0];
        assert_int_equal(pthread_create(&waiter, NULL, wait_across_free, &fw), 0);
        assert_int_equal(kill(victim, SIGKILL), 0);
        usleep((useconds_t)(it % 3) * 20000);
        pyproc_pool_free(p);
        pthread_join(waiter, NULL);
        assert_true(free_ending(fw.rc, killed == 0));
        for (int i = 1; i < FREE_WORKERS * FREE_CALLS; i++)
            expect_ended_by_free(calls[i], i % FREE_WORKERS == killed);
        pyproc_call_free(calls[0]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(history_reaches_workers_added_meanwhile),
        cmocka_unit_test(history_reaches_workers_respawned_meanwhile),
        cmocka_unit_test(history_reaches_every_worker),
        cmocka_unit_test(free_while_respawning),
        cmocka_unit_test(free_ends_every_call_in_flight),
    };
    /* A hang is a failure, whatever runs the test. */
    alarm(240);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
