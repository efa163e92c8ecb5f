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

#include "pool.h"

#define EXPIRE_TICK_MS 20
#define KILL_GRACE_NS (1000 * 1000000LL)

/*
 * A slot for id: the one that holds it already, a free one, or one whose
 * entry the worker has seen and whose call has ended (no answer can be
 * pending for it).  Returns the slot and whether it holds id already, or
 * -EBUSY.  Under stop_lock.
 */
static int stop_slot(struct pp_worker *w, uint64_t id, bool *ret_dup)
{
    struct shm_seg_header *h = w->seg.hdr;
    uint64_t seen = shm_seg_stop_seen(h);
    int spare = -1;

    for (int i = 0; i < SHM_STOP_SLOTS; i++) {
        /* Only we write the table, under the lock we hold. */
        uint64_t cur = atomic_load_explicit(&h->stops[i].call, memory_order_relaxed);
        if (cur == id) {
            *ret_dup = true;
            return i;
        }
        if (spare < 0 && cur == 0)
            spare = i;
    }
    *ret_dup = false;
    for (int i = 0; spare < 0 && i < SHM_STOP_SLOTS; i++) {
        uint64_t cur = atomic_load_explicit(&h->stops[i].call, memory_order_relaxed);
        if (w->stop_posted[i] > seen)
            continue; /* the worker may not have acted on it yet */
        pyproc_call *c = pyproc__call_find(w, cur);
        if (c) {
            pyproc__call_unref(c);
            continue;
        }
        shm_seg_stop_clear(h, (unsigned)i);
        spare = i;
    }
    return spare < 0 ? -EBUSY : spare;
}

int pyproc__worker_stop_call(struct pp_worker *w, uint64_t id, uint32_t why)
{
    struct shm_seg_header *h = w->seg.hdr;
    bool dup;
    int slot;

    if (atomic_load(&w->dead))
        return 0; /* its calls end with the worker */
    pthread_mutex_lock(&w->stop_lock);
    slot = stop_slot(w, id, &dup);
    if (slot >= 0 && !dup)
        w->stop_posted[slot] = shm_seg_stop_post(h, (unsigned)slot, id, why);
    pthread_mutex_unlock(&w->stop_lock);
    if (slot < 0)
        return slot;
    /* Wakes a worker asleep on its request ring without writing to it; it
     * looks at stop_seq before it sleeps again.  Takes no lock, so it
     * cannot wait behind a caller that holds tx_lock. */
    shm_ring_notify(&w->tx);
    /* After the seq_cst fence in shm_seg_stop_post(): pairs with the one
     * after the worker's store of running_call. */
    if (atomic_load_explicit(&h->running_call, memory_order_relaxed) == id)
        syscall(SYS_pidfd_send_signal, w->pidfd, SHM_INTERRUPT_SIGNAL, NULL, 0);
    return 0;
}

/* Poke the service thread so it ticks again (its epoll timeout comes from
 * pyproc__expire_calls()). */
static void kick_service(pyproc_pool *p)
{
    uint64_t one = 1;

    if (write(p->control_fd, &one, sizeof one) < 0) {
        /* A full counter: the service thread is due to wake anyway. */
    }
}

void pyproc__call_interrupt(pyproc_call *c, uint32_t why)
{
    if (pyproc__worker_stop_call(c->worker, c->id, why) == 0)
        return;
    /* No room: keep it for the service thread, which retries each tick. */
    uint32_t none = 0;
    if (atomic_compare_exchange_strong(&c->stop_want, &none, why)) {
        /* After the stop_want: pairs with the exchange in
         * pyproc__expire_calls(), whose scan then finds it. */
        atomic_store(&c->pool->stops_waiting, true);
        kick_service(c->pool);
    }
}

/* The service thread's retry of a stop that found no room. */
static void retry_stop(pyproc_call *c)
{
    uint32_t why = atomic_load(&c->stop_want);

    if (!why)
        return;
    if (pyproc__worker_stop_call(c->worker, c->id, why) < 0)
        atomic_store(&c->pool->stops_waiting, true); /* next tick */
    else
        atomic_compare_exchange_strong(&c->stop_want, &why, 0);
}

PYPROC_EXPORT int pyproc_cancel(pyproc_call *c)
{
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

    pthread_mutex_lock(&w->calls_lock);
    for (uint32_t i = 0; i < w->nslots; i++) {
        pyproc_call *c = w->slots[i].call;
        if (!c || ((!c->deadline_ns || now < c->deadline_ns) && !atomic_load(&c->stop_want)))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            pyproc_call **l = realloc(list, (size_t)cap * sizeof *l);
            if (!l)
                break;
            list = l;
        }
        atomic_fetch_add(&c->refs, 1);
        list[n++] = c;
    }
    pthread_mutex_unlock(&w->calls_lock);
    *ret = list;
    return n;
}

static void expire(pyproc_call *c, int64_t now)
{
    int stage = EXPIRY_NONE;

    retry_stop(c);
    if (!c->deadline_ns || now < c->deadline_ns)
        return;
    if (atomic_compare_exchange_strong(&c->expiry, &stage, EXPIRY_ASKED)) {
        c->kill_at_ns = now + KILL_GRACE_NS;
        pyproc__call_interrupt(c, SHM_INTERRUPT_TIMEOUT);
    } else if (stage == EXPIRY_ASKED && now >= c->kill_at_ns &&
               atomic_compare_exchange_strong(&c->expiry, &stage, EXPIRY_KILLED)) {
        syscall(SYS_pidfd_send_signal, c->worker->pidfd, SIGKILL, NULL, 0);
    }
}

int pyproc__expire_calls(pyproc_pool *p)
{
    struct pp_worker **ws;
    int64_t now = shm_now_ns();
    int n;

    if (!p->call_timeout_ns && !atomic_load(&p->stops_waiting))
        return -1;
    if (now < p->next_expire_ns)
        return (int)((p->next_expire_ns - now) / 1000000) + 1;
    p->next_expire_ns = now + EXPIRE_TICK_MS * 1000000LL;
    /* Cleared before the scan: a stop_want stored after the scan looked
     * sets it again (pyproc__call_interrupt()). */
    atomic_store(&p->stops_waiting, false);
    pthread_mutex_lock(&p->lock);
    n = p->nworkers;
    ws = malloc((size_t)n * sizeof *ws);
    for (int i = 0; ws && i < n; i++) {
        ws[i] = p->workers[i]; /* NULL while the pool starts */
        if (ws[i])
            pyproc__worker_ref(ws[i]);
    }
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; ws && i < n; i++) {
        pyproc_call **calls;
        if (!ws[i])
            continue;
        int k = overdue(ws[i], now, &calls);
        for (int j = 0; j < k; j++) {
            expire(calls[j], now);
            pyproc__call_unref(calls[j]);
        }
        free(calls);
        pyproc__worker_unref(ws[i]);
    }
    free(ws);
    return EXPIRE_TICK_MS;
}
