/*
 * The per-thread free lists of call objects and small messages
 * (host/freelist.c), and what the call path keeps between calls: blocks
 * come back last in, first out and are bounded; a block put on another
 * thread is freed when that thread exits; calls made on one thread and
 * freed on another, calls failed by a worker's death, and the encoding of
 * a call without arguments kept for the next call never hand a later call
 * anything of an earlier one.
 */
#include <malloc.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "host/freelist.h"

#define BLOCK 296

static void *get(enum pyproc__fl_kind k)
{
    void *b = pyproc__fl_get(k, BLOCK);
    assert_non_null(b);
    memset(b, 0x5a, BLOCK); /* all of it is ours */
    return b;
}

/* Last in, first out, one list per kind. */
static void lists_reuse(void **state)
{
    (void)state;
    void *a = get(PYPROC__FL_CALL), *b = get(PYPROC__FL_CALL), *m = get(PYPROC__FL_MSG);

    pyproc__fl_put(PYPROC__FL_CALL, a, BLOCK);
    pyproc__fl_put(PYPROC__FL_CALL, b, BLOCK);
    pyproc__fl_put(PYPROC__FL_MSG, m, BLOCK);
    pyproc__fl_put(PYPROC__FL_MSG, NULL, BLOCK);
    assert_ptr_equal(get(PYPROC__FL_CALL), b);
    assert_ptr_equal(get(PYPROC__FL_CALL), a);
    assert_ptr_equal(get(PYPROC__FL_MSG), m);
    free(a); /* plain malloc memory: free() is as good as a put */
    free(b);
    free(m);
}

/* At most PYPROC__FL_MAX kept: the ones put past it are freed. */
static void lists_bounded(void **state)
{
    (void)state;
    enum { N = PYPROC__FL_MAX + 20 };
    void **b = calloc(N, sizeof *b);
    int kept = 0;

    assert_non_null(b);
    for (int i = 0; i < N; i++)
        b[i] = get(PYPROC__FL_CALL);
    for (int i = 0; i < N; i++)
        pyproc__fl_put(PYPROC__FL_CALL, b[i], BLOCK);
    /* The first PYPROC__FL_MAX put come back, newest first. */
    for (int i = PYPROC__FL_MAX - 1; i >= 0; i--) {
        void *g = get(PYPROC__FL_CALL);
        kept += g == b[i];
        b[i] = g;
    }
    assert_int_equal(kept, PYPROC__FL_MAX);
    for (int i = 0; i < PYPROC__FL_MAX; i++)
        free(b[i]);
    free(b);
}

struct putter {
    void **blocks;
    int n;
};

static void *put_all(void *arg)
{
    struct putter *t = arg;
    for (int i = 0; i < t->n; i++)
        pyproc__fl_put(PYPROC__FL_MSG, t->blocks[i], BLOCK);
    return NULL;
}

/*
 * Blocks got here and put on another thread join that thread's list,
 * which is freed when it exits (a leak otherwise: LeakSanitizer reports
 * it under ASan; without it, malloc's count of bytes in use shows it).
 */
static void lists_freed_at_thread_exit(void **state)
{
    (void)state;
    enum { N = 100 };
    void *blocks[N];
    struct putter t = {blocks, N};
    pthread_t tid;

    for (int i = 0; i < N; i++)
        blocks[i] = get(PYPROC__FL_MSG);
    size_t before = mallinfo2().uordblks;
    assert_int_equal(pthread_create(&tid, NULL, put_all, &t), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    size_t after = mallinfo2().uordblks;
    /* glibc counts what is in use (the thread's start and end leave a
     * little behind, hence the half); a sanitizer's malloc says 0 both
     * times and its leak check does the work. */
    if (before)
        assert_true(after + N * BLOCK / 2 <= before);
}

struct holder {
    pthread_barrier_t kept, done;
    int status;
};

/* Keep a block on this thread's list until told to go. */
static void *keep_one(void *arg)
{
    struct holder *h = arg;
    pyproc__fl_put(PYPROC__FL_CALL, get(PYPROC__FL_CALL), BLOCK);
    pthread_barrier_wait(&h->kept);
    pthread_barrier_wait(&h->done);
    return NULL;
}

/* Fork from a thread that keeps no blocks yet: the child's one thread,
 * its copy, starts keeping blocks there, which takes the registry's
 * lock.  (No thread is started in the child: ThreadSanitizer refuses
 * that after a fork.) */
static void *fork_and_put(void *arg)
{
    struct holder *h = arg;
    pid_t pid = fork();

    if (pid == 0) {
        alarm(20);
        pyproc__fl_put(PYPROC__FL_MSG, get(PYPROC__FL_MSG), BLOCK);
        pyproc__fl_put(PYPROC__FL_CALL, get(PYPROC__FL_CALL), BLOCK);
        /* _exit: Valgrind still checks for leaks then, LeakSanitizer
         * (which would find cmocka's, of the parent's threads) not. */
        _exit(0);
    }
    h->status = -1;
    if (pid > 0 && waitpid(pid, &h->status, 0) != pid)
        h->status = -1;
    return NULL;
}

/*
 * A forked child, whose parent has threads keeping blocks (the registry
 * lists them), starts keeping blocks of its own: the registry's lock is
 * free in the child.  Under Valgrind the parent's threads' blocks stay
 * reachable there (make check-valgrind runs this test).
 */
static void lists_in_a_forked_child(void **state)
{
    (void)state;
    static struct holder h; /* outlives a failed test's threads */
    pthread_t keeper, forker;

    alarm(60);
    pthread_barrier_init(&h.kept, NULL, 2);
    pthread_barrier_init(&h.done, NULL, 2);
    assert_int_equal(pthread_create(&keeper, NULL, keep_one, &h), 0);
    pthread_barrier_wait(&h.kept);
    assert_int_equal(pthread_create(&forker, NULL, fork_and_put, &h), 0);
    assert_int_equal(pthread_join(forker, NULL), 0);
    pthread_barrier_wait(&h.done);
    assert_int_equal(pthread_join(keeper, NULL), 0);
    assert_true(WIFEXITED(h.status));
    assert_int_equal(WEXITSTATUS(h.status), 0);
    pthread_barrier_destroy(&h.kept);
    pthread_barrier_destroy(&h.done);
    alarm(0);
}

/* ---- calls ---- */

struct waiter {
    pyproc_call **calls;
    int n, bad;
};

/* Wait for and free calls made on another thread. */
static void *wait_all(void *arg)
{
    struct waiter *t = arg;
    for (int i = 0; i < t->n; i++) {
        pyproc_msg *m = NULL;
        int64_t v = -1;
        if (pyproc_wait(t->calls[i], &m, 10000) != 0 || pyproc_msg_read(m, "I", &v) != 0 || v != i)
            t->bad++;
        pyproc_msg_free(m);
        pyproc_call_free(t->calls[i]);
    }
    return NULL;
}

/* Track n calls of echo_one(base + i). */
static void track_echoes(pyproc_pool *p, pyproc_call **calls, int n, int base)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(pyproc_track_func(p, NULL, &calls[i], "t.basic.echo_one", "i", base + i),
                         0);
}

static void expect_echoes(pyproc_call **calls, int n, int base)
{
    for (int i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        int64_t v = -1;
        assert_int_equal(pyproc_wait(calls[i], &m, 10000), 0);
        assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
        assert_int_equal(v, base + i);
        pyproc_msg_free(m);
        pyproc_call_free(calls[i]);
    }
}

/* Calls made here and freed on another thread, then calls made here
 * again, round after round: each answer is its own call's. */
static void calls_freed_on_another_thread(void **state)
{
    (void)state;
    enum { N = 300 };
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *calls[N];

    alarm(120);
    for (int round = 0; round < 4; round++) {
        struct waiter t = {calls, N, 0};
        pthread_t tid;
        track_echoes(p, calls, N, 0);
        assert_int_equal(pthread_create(&tid, NULL, wait_all, &t), 0);
        assert_int_equal(pthread_join(tid, NULL), 0);
        assert_int_equal(t.bad, 0);
        track_echoes(p, calls, N, 1000);
        expect_echoes(calls, N, 1000);
    }
    pyproc_pool_free(p);
    alarm(0);
}

/*
 * A worker dies with calls in flight: they fail with PYPROC_EWORKER and
 * their objects go back to the lists; the calls made next take them up
 * again and end with their own answers, not the dead worker's error.
 */
static void calls_after_a_death_mid_call(void **state)
{
    (void)state;
    enum { N = 8 };
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *slow[N], *killer, *calls[N];

    alarm(120);
    for (int i = 0; i < N; i++)
        assert_int_equal(pyproc_ind_call(p, 0, &slow[i], "t.calls.block", "d", 0.05), 0);
    assert_int_equal(pyproc_ind_call(p, 0, &killer, "t.crash.exit_now", "i", 3), 0);
    for (int i = 0; i < N; i++) {
        pyproc_msg *m = NULL;
        int rc = pyproc_wait(slow[i], &m, 10000);
        /* The ones the worker finished before it died answered. */
        assert_true(rc == 0 || rc == PYPROC_EWORKER);
        if (rc == PYPROC_EWORKER)
            assert_non_null(pyproc_msg_error(m));
        pyproc_msg_free(m);
        pyproc_call_free(slow[i]);
    }
    pyproc_msg *m = NULL;
    assert_int_equal(pyproc_wait(killer, &m, 10000), PYPROC_EWORKER);
    pyproc_msg_free(m);
    pyproc_call_free(killer);
    /* The respawned worker answers the calls made from the lists. */
    e2e_wait_respawned(p, 0, -1);
    track_echoes(p, calls, N, 7);
    expect_echoes(calls, N, 7);
    pyproc_pool_free(p);
    alarm(0);
}

/*
 * A call without arguments is sent again as encoded last time only when
 * it is the same: the reference is compared by its bytes (the caller may
 * write new ones where the old were), and the kind and the pool's limit
 * count too.
 */
static void bare_call_sent_again_only_when_same(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool(1), *small;
    pyproc_msg *m = NULL;
    char ref[64];
    int64_t a, b;

    alarm(120);
    snprintf(ref, sizeof ref, "t.basic.count");
    assert_int_equal(pyproc_func(p, ref, &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &a), 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(p, ref, &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &b), 0);
    pyproc_msg_free(m);
    assert_int_equal(b, a + 1);
    /* New bytes at the same address: another function. */
    snprintf(ref, sizeof ref, "t.calls.ping");
    assert_int_equal(pyproc_func(p, ref, &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &a), 0);
    assert_int_equal(a, 0);
    pyproc_msg_free(m);
    /* A prefix of the last reference, and one longer than it. */
    snprintf(ref, sizeof ref, "t.calls.pin");
    assert_int_equal(pyproc_func(p, ref, &m, NULL), -ENOENT);
    pyproc_msg_free(m);
    snprintf(ref, sizeof ref, "t.calls.pingx");
    assert_int_equal(pyproc_func(p, ref, &m, NULL), -ENOENT);
    pyproc_msg_free(m);
    /* A generator called as a function (its answer cannot be sent), as a
     * generator, and as a function again: the kind is not kept. */
    snprintf(ref, sizeof ref, "t.cancel.stream_forever");
    assert_true(pyproc_func(p, ref, &m, NULL) < 0);
    pyproc_msg_free(m);
    pyproc_call *g = NULL;
    assert_int_equal(pyproc_gen(p, ref, &g, NULL), 0);
    m = NULL;
    assert_int_equal(pyproc_next(g, &m), 1);
    assert_int_equal(pyproc_msg_read(m, "I", &a), 0);
    assert_int_equal(a, 0);
    pyproc_msg_free(m);
    pyproc_call_free(g);
    m = NULL;
    assert_true(pyproc_func(p, ref, &m, NULL) < 0);
    pyproc_msg_free(m);
    /* A pool whose limit the call passes refuses it, though it was just
     * sent as it is to another. */
    small = e2e_pool_opts((pyproc_opts){.workers = 1, .max_msg_bytes = 4096});
    char *big = malloc(6000);
    assert_non_null(big);
    snprintf(big, 6000, "t.basic.count%5000s", "");
    m = NULL;
    assert_int_equal(pyproc_func(p, big, &m, NULL), -ENOENT);
    pyproc_msg_free(m);
    m = NULL;
    assert_int_equal(pyproc_func(small, big, &m, NULL), -EMSGSIZE);
    pyproc_msg_free(m);
    free(big);
    pyproc_pool_free(small);
    pyproc_pool_free(p);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lists_reuse),
        cmocka_unit_test(lists_bounded),
        cmocka_unit_test(lists_freed_at_thread_exit),
        cmocka_unit_test(lists_in_a_forked_child),
        cmocka_unit_test(calls_freed_on_another_thread),
        cmocka_unit_test(calls_after_a_death_mid_call),
        cmocka_unit_test(bare_call_sent_again_only_when_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
