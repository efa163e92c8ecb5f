/*
 * Ending calls early: pyproc_cancel(), and the pool's call timeout.
 *
 * A call is asked to stop through its worker's stop table (see
 * shm/segment.h), never through the request ring, which a caller waiting
 * for space may hold as long as the worker does not read.  The worker
 * answers a stopped call that has not started without running it,
 * cancels its asyncio task, or, for a plain function running right now,
 * raises inside it from the handler of the signal sent here.  The call
 * timeout goes one step further: a call still running a second later is
 * stuck where Python cannot interrupt it, so its worker is killed (and
 * respawned).  The service thread checks deadlines every EXPIRE_TICK_MS.
 *
 * The table has SHM_STOP_SLOTS entries per worker; a slot frees once the
 * worker has seen its entry and the call has ended.  A stop that finds no
 * free slot (more stops in flight on one worker than that) waits on its
 * call, and the service thread posts it on a later tick: pyproc_cancel()
 * still returns 0 at once, but a queued call may then start before its
 * stop is posted, and is interrupted or cancelled as a running one is.  A
 * timeout still kills the worker KILL_GRACE_NS after it was first asked.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "chan.h"
#include "service.h"
#include "feature.h"

#define EXPIRE_TICK_MS 20
#define KILL_GRACE_NS (1000 * 1000000LL)

void pyproc__call_interrupt(pyproc_call *c, uint32_t why)
{
    if (pyproc__worker_stop_call(c->worker, c->id, why) == 0)
        return;
    /* No room: keep it for the service thread, which retries each tick. */
    uint32_t none = 0;
    /*
     * seq_cst, like the clear of stops_waiting in pyproc__expire_calls()
     * and the load of stop_want in its scan: either that scan sees this
     * stop_want, or its clear comes before our store of stops_waiting and
     * the next tick scans again.
     */
    if (atomic_compare_exchange_strong_explicit(&c->stop_want, &none, why, memory_order_seq_cst,
                                                memory_order_seq_cst)) {
        atomic_store_explicit(&c->pool->stops_waiting, true, memory_order_seq_cst);
        pyproc__service_kick(c->pool);
    }
}

/* The service thread's retry of a stop that found no room. */
static void retry_stop(pyproc_call *c)
{
    /* The orders of pyproc__call_interrupt(), whose partner this is. */
    uint32_t why = atomic_load_explicit(&c->stop_want, memory_order_seq_cst);

    if (!why)
        return;
    if (pyproc__worker_stop_call(c->worker, c->id, why) < 0)
        atomic_store_explicit(&c->pool->stops_waiting, true, memory_order_seq_cst); /* next tick */
    else
        atomic_compare_exchange_strong_explicit(&c->stop_want, &why, 0, memory_order_seq_cst,
                                                memory_order_seq_cst);
}

PYPROC_EXPORT int pyproc_cancel(pyproc_call *c)
{
    if (c && c->map)
        return pyproc__map_cancel(c);
    if (!c)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    /* Pairs with the release store in pyproc__call_complete(). */
    if (atomic_load_explicit(&c->ended, memory_order_acquire))
        return -EALREADY;
    pyproc__call_interrupt(c, SHM_INTERRUPT_CANCEL);
    return 0;
}

/* Calls of w past their deadline or with a stop to retry, each with a
 * reference. */
static int overdue(struct pp_worker *w, int64_t now, pyproc_call ***ret)
{
    pyproc_call **list = NULL;
    int n = 0, cap = 0;

    pyproc__lock(&w->calls_lock);
    for (uint32_t i = 0; i < w->nslots; i++) {
        pyproc_call *c = w->slots[i].call;
        if (!c || ((!c->deadline_ns || now < c->deadline_ns) &&
                   !atomic_load_explicit(&c->stop_want, memory_order_seq_cst)))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            pyproc_call **l = realloc(list, (size_t)cap * sizeof *l);
            if (!l)
                break;
            list = l;
        }
        /* From the table's own reference: relaxed (see struct pyproc_call). */
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        list[n++] = c;
    }
    pyproc__unlock(&w->calls_lock);
    *ret = list;
    return n;
}

static void expire(pyproc_call *c, int64_t now)
{
    int stage = EXPIRY_NONE;

    retry_stop(c);
    if (!c->deadline_ns || now < c->deadline_ns)
        return;
    /* expiry is written by this thread only; the release publishes
     * kill_at_ns's first store and pairs with the acquire load in
     * pyproc__call_complete(). */
    if (atomic_compare_exchange_strong_explicit(&c->expiry, &stage, EXPIRY_ASKED,
                                                memory_order_release, memory_order_relaxed)) {
        c->kill_at_ns = now + KILL_GRACE_NS;
        pyproc__call_interrupt(c, SHM_INTERRUPT_TIMEOUT);
    } else if (stage == EXPIRY_ASKED && now >= c->kill_at_ns &&
               atomic_compare_exchange_strong_explicit(&c->expiry, &stage, EXPIRY_KILLED,
                                                       memory_order_release,
                                                       memory_order_relaxed)) {
        pyproc__worker_kill(c->worker);
    }
}

int pyproc__expire_calls(pyproc_pool *p)
{
    struct pp_worker **ws;
    int64_t now = shm_now_ns();
    int n;

    if (!p->call_timeout_ns && !atomic_load_explicit(&p->stops_waiting, memory_order_seq_cst))
        return -1;
    if (now < p->next_expire_ns)
        return (int)((p->next_expire_ns - now) / 1000000) + 1;
    p->next_expire_ns = now + EXPIRE_TICK_MS * 1000000LL;
    /* Cleared before the scan: a stop_want stored after the scan looked
     * sets it again (pyproc__call_interrupt()). */
    atomic_store_explicit(&p->stops_waiting, false, memory_order_seq_cst);
    /* Retired workers too: their calls run on under the same timeout. */
    n = pyproc__workers_ref(p, &ws);
    for (int i = 0; i < n; i++) {
        pyproc_call **calls;
        int k = overdue(ws[i], now, &calls);
        for (int j = 0; j < k; j++) {
            expire(calls[j], now);
            pyproc__call_unref(calls[j]);
        }
        free(calls);
    }
    if (n >= 0)
        pyproc__workers_unref(ws, n);
    return EXPIRE_TICK_MS;
}
