/*
 * Counters per worker index, for pyproc_stats().
 *
 * They cost a caller one relaxed atomic add per call (and one more when
 * it fails), on a cache line of the index's own.  They live in the pool,
 * not in the worker, so that a respawn, which replaces the worker, keeps
 * them; a worker points at its index's counters from its spawn on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

struct pp_slot_stats *pyproc__slot_stats(pyproc_pool *p, int ind)
{
    struct pp_slot_stats *s = NULL;

    pthread_mutex_lock(&p->lock);
    if (ind >= p->nslot_stats) {
        int n = ind + 1 > 2 * p->nslot_stats ? ind + 1 : 2 * p->nslot_stats;
        struct pp_slot_stats **a = realloc(p->slot_stats, (size_t)n * sizeof *a);
        if (!a)
            goto out;
        memset(a + p->nslot_stats, 0, (size_t)(n - p->nslot_stats) * sizeof *a);
        p->slot_stats = a;
        p->nslot_stats = n;
    }
    if (!p->slot_stats[ind]) {
        s = aligned_alloc(_Alignof(struct pp_slot_stats), sizeof *s);
        if (!s)
            goto out;
        atomic_init(&s->calls, 0);
        atomic_init(&s->errors, 0);
        atomic_init(&s->restarts, 0);
        atomic_init(&s->recycles, 0);
        p->slot_stats[ind] = s;
    }
    s = p->slot_stats[ind];
out:
    pthread_mutex_unlock(&p->lock);
    return s;
}

void pyproc__slot_stats_free(pyproc_pool *p)
{
    for (int i = 0; i < p->nslot_stats; i++)
        free(p->slot_stats[i]);
    free(p->slot_stats);
    p->slot_stats = NULL;
    p->nslot_stats = 0;
}

static uint64_t relaxed(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

PYPROC_EXPORT int pyproc_stats(pyproc_pool *p, int ind, pyproc_worker_stats *ret)
{
    pyproc_worker_stats st = {.pid = -1, .rank = -1};
    struct pp_worker *w;
    int err = pyproc__pool_check(p);

    if (err < 0)
        return err;
    if (!ret || ind < 0)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    if (ind >= p->nworkers) {
        pthread_mutex_unlock(&p->lock);
        return -EINVAL;
    }
    w = p->workers[ind];
    if (w->stats) {
        st.calls = relaxed(&w->stats->calls);
        st.errors = relaxed(&w->stats->errors);
        st.restarts = relaxed(&w->stats->restarts);
        st.recycles = relaxed(&w->stats->recycles);
    }
    if (!atomic_load_explicit(&w->dead, memory_order_acquire)) { /* see spawn.c */
        st.pid = (int)w->pid;
        st.rank = w->rank;
    }
    pyproc__lock(&w->calls_lock);
    st.in_flight = atomic_load_explicit(&w->in_flight, memory_order_relaxed);
    pyproc__unlock(&w->calls_lock);
    pthread_mutex_unlock(&p->lock);
    *ret = st;
    return 0;
}
