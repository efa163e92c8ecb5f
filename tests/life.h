/*
 * Load for the tests of long-running pools (test_recycle.c,
 * test_reload.c, test_resize.c): threads that call the pool until told to
 * stop and count every call's outcome, so a test can say that none was
 * lost and none failed while the pool replaced its workers.
 */
#ifndef PYPROC_TESTS_LIFE_H
#define PYPROC_TESTS_LIFE_H

#include <pthread.h>
#include <stdatomic.h>

#include "e2e.h"

#define LIFE_THREADS 4

struct life_load {
    pyproc_pool *pool;
    const char *ref; /* called with no arguments, or with fmt/arg */
    const char *fmt;
    double arg;
    int pinned_every; /* every n-th call is pinned to an index (0: none) */
    atomic_bool stop;
    atomic_long started, ok, failed;
    atomic_long refused; /* -ESHUTDOWN: the pool drains */
    /* When pyproc_drain() returned (e2e_now(), 0: not yet), and the calls
     * that started after it and yet ran: there should be none. */
    _Atomic double drained_at;
    atomic_long late;
    pthread_t threads[LIFE_THREADS];
};

static void *life_caller(void *arg)
{
    struct life_load *l = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();

    while (!atomic_load(&l->stop)) {
        pyproc_msg *m = NULL;
        long n = atomic_fetch_add(&l->started, 1);
        double t0 = e2e_now();
        int rc;
        if (l->pinned_every && n % l->pinned_every == 0) {
            int w = pyproc_workers(l->pool);
            rc = pyproc_ind_func(l->pool, (int)(rand_r(&seed) % (unsigned)(w > 0 ? w : 1)), l->ref,
                                 &m, l->fmt, l->arg);
            /* An index taken away by a resize between the two calls. */
            if (rc == -EINVAL && pyproc_workers(l->pool) < w) {
                atomic_fetch_sub(&l->started, 1);
                pyproc_msg_free(m);
                continue;
            }
        } else {
            rc = pyproc_func(l->pool, l->ref, &m, l->fmt, l->arg);
        }
        if (rc == 0) {
            double drained = atomic_load(&l->drained_at);
            if (drained > 0 && t0 > drained)
                atomic_fetch_add(&l->late, 1);
            atomic_fetch_add(&l->ok, 1);
        } else if (rc == -ESHUTDOWN) {
            atomic_fetch_add(&l->refused, 1);
        } else {
            fprintf(stderr, "call failed: %d %s\n", rc, m ? pyproc_msg_error(m) : "");
            atomic_fetch_add(&l->failed, 1);
        }
        pyproc_msg_free(m);
    }
    return NULL;
}

static inline void life_start(struct life_load *l)
{
    for (int i = 0; i < LIFE_THREADS; i++)
        assert_int_equal(pthread_create(&l->threads[i], NULL, life_caller, l), 0);
}

/* Stop the threads; every call started ended, and none failed (refused
 * ones count apart: only a draining pool refuses). */
static inline void life_stop(struct life_load *l)
{
    atomic_store(&l->stop, true);
    for (int i = 0; i < LIFE_THREADS; i++)
        pthread_join(l->threads[i], NULL);
    assert_int_equal(atomic_load(&l->failed), 0);
    assert_int_equal(atomic_load(&l->ok) + atomic_load(&l->refused), atomic_load(&l->started));
    assert_true(atomic_load(&l->ok) > 0);
}

static inline void life_sleep(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static inline pyproc_worker_stats life_stats(pyproc_pool *p, int ind)
{
    pyproc_worker_stats st;
    assert_int_equal(pyproc_stats(p, ind, &st), 0);
    return st;
}

#endif
