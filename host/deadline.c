/*
 * Calls' own deadlines (pyproc_call_deadline()): a binary min-heap of
 * (time, call) in the pool, so the service thread learns the next one in
 * O(1) and sleeps exactly until it; each call knows its place, so a call
 * that ends takes its entry out in O(log n) and a server's finished calls
 * are not kept until their deadlines pass.
 */
#include <errno.h>
#include <stdlib.h>

#include "call.h"

static void place(pyproc_pool *p, size_t i, struct pp_deadline d)
{
    p->deadlines[i] = d;
    d.call->deadline_slot = i + 1;
}

static void sift_up(pyproc_pool *p, size_t i)
{
    struct pp_deadline d = p->deadlines[i];

    while (i > 0 && p->deadlines[(i - 1) / 2].at > d.at) {
        place(p, i, p->deadlines[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(p, i, d);
}

static void sift_down(pyproc_pool *p, size_t i)
{
    struct pp_deadline d = p->deadlines[i];
    size_t n = p->ndeadlines;

    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && p->deadlines[child + 1].at < p->deadlines[child].at)
            child++;
        if (p->deadlines[child].at >= d.at)
            break;
        place(p, i, p->deadlines[child]);
        i = child;
    }
    place(p, i, d);
}

/* Take entry i out; its reference moves to the caller.  Under the lock. */
static pyproc_call *take_at(pyproc_pool *p, size_t i)
{
    pyproc_call *c = p->deadlines[i].call;
    struct pp_deadline last = p->deadlines[--p->ndeadlines];

    c->deadline_slot = 0;
    if (i < p->ndeadlines) {
        place(p, i, last);
        sift_down(p, i);
        sift_up(p, last.call->deadline_slot - 1);
    }
    return c;
}

/* Room for one more entry; under the lock. */
static int grow(pyproc_pool *p)
{
    size_t cap = p->deadlines_cap ? 2 * p->deadlines_cap : 64;
    struct pp_deadline *d;

    if (p->ndeadlines < p->deadlines_cap)
        return 0;
    d = realloc(p->deadlines, cap * sizeof *d);
    if (!d)
        return -ENOMEM;
    p->deadlines = d;
    p->deadlines_cap = cap;
    return 0;
}

int pyproc__deadline_set(pyproc_call *c, int64_t at)
{
    pyproc_pool *p = c->pool;
    int err = 0;

    pthread_mutex_lock(&p->deadline_lock);
    if (c->deadline_slot) { /* moved: up or down, whichever it goes */
        p->deadlines[c->deadline_slot - 1].at = at;
        sift_up(p, c->deadline_slot - 1);
        sift_down(p, c->deadline_slot - 1);
    } else if ((err = grow(p)) == 0) {
        /* The heap's reference, from the caller's: relaxed (see refs). */
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        p->deadlines[p->ndeadlines++] = (struct pp_deadline){at, c};
        sift_up(p, p->ndeadlines - 1);
        /* Release: pairs with the acquire load in pyproc__call_complete(). */
        atomic_store_explicit(&c->has_deadline, true, memory_order_release);
    }
    pthread_mutex_unlock(&p->deadline_lock);
    return err;
}

void pyproc__deadline_remove(pyproc_call *c)
{
    pyproc_pool *p = c->pool;
    pyproc_call *taken = NULL;

    pthread_mutex_lock(&p->deadline_lock);
    if (c->deadline_slot)
        taken = take_at(p, c->deadline_slot - 1);
    pthread_mutex_unlock(&p->deadline_lock);
    if (taken)
        pyproc__call_unref(taken); /* never the last: the caller holds one */
}

pyproc_call *pyproc__deadline_pop(pyproc_pool *p, int64_t now, int *next_ms)
{
    pyproc_call *c = NULL;

    pthread_mutex_lock(&p->deadline_lock);
    if (p->ndeadlines && p->deadlines[0].at <= now)
        c = take_at(p, 0);
    if (!p->ndeadlines)
        *next_ms = -1;
    else if (p->deadlines[0].at <= now)
        *next_ms = 0;
    else /* rounded up: waking early would find nothing due */
        *next_ms = (int)((p->deadlines[0].at - now + 999999) / 1000000);
    pthread_mutex_unlock(&p->deadline_lock);
    return c;
}

void pyproc__deadlines_clear(pyproc_pool *p)
{
    pthread_mutex_lock(&p->deadline_lock);
    while (p->ndeadlines) {
        pyproc_call *c = take_at(p, p->ndeadlines - 1);
        pthread_mutex_unlock(&p->deadline_lock);
        pyproc__call_unref(c);
        pthread_mutex_lock(&p->deadline_lock);
    }
    free(p->deadlines);
    p->deadlines = NULL;
    p->deadlines_cap = 0;
    pthread_mutex_unlock(&p->deadline_lock);
}
