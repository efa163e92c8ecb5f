/*
 * Ending calls early: pyproc_cancel(), and the pool's call timeout.
 *
 * A call is asked to stop with a CANCEL frame, which cancels its asyncio
 * task in the worker, and, when it is a plain function running right now,
 * with a signal whose handler raises inside it (see shm/segment.h).  The
 * call timeout goes one step further: a call still running a second later
 * is stuck where Python cannot interrupt it, so its worker is killed (and
 * respawned).  The service thread checks deadlines every EXPIRE_TICK_MS.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pool.h"

#define EXPIRE_TICK_MS 20
#define KILL_GRACE_NS (1000 * 1000000LL)

void pyproc__call_interrupt(pyproc_call *c, uint32_t why)
{
    struct pp_worker *w = c->worker;
    struct shm_seg_header *h = w->seg.hdr;

    /* Never wait for ring space: a worker too busy to read gets the signal
     * or, for a timeout, the kill. */
    pyproc__send_try(w, SHM_FRAME_CANCEL, c->id, "\xc0", 1); /* msgpack nil */
    atomic_store(&h->interrupt_why, why);
    /* Pairs with the acquire in the worker's take_interrupt(). */
    atomic_store_explicit(&h->interrupt_call, c->id, memory_order_release);
    if (atomic_load(&h->running_call) == c->id)
        syscall(SYS_pidfd_send_signal, w->pidfd, SHM_INTERRUPT_SIGNAL, NULL, 0);
}

PYPROC_EXPORT int pyproc_cancel(pyproc_call *c)
{
    if (!c)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    if (c->ended)
        return -EALREADY;
    pyproc__call_interrupt(c, SHM_INTERRUPT_CANCEL);
    return 0;
}

/* Calls of w past their deadline, each with a reference. */
static int overdue(struct pp_worker *w, int64_t now, pyproc_call ***ret)
{
    pyproc_call **list = NULL;
    int n = 0, cap = 0;

    pthread_mutex_lock(&w->calls_lock);
    for (uint32_t i = 0; i < w->nslots; i++) {
        pyproc_call *c = w->slots[i].call;
        if (!c || !c->deadline_ns || now < c->deadline_ns)
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

    if (!p->call_timeout_ns)
        return -1;
    if (now < p->next_expire_ns)
        return (int)((p->next_expire_ns - now) / 1000000) + 1;
    p->next_expire_ns = now + EXPIRE_TICK_MS * 1000000LL;
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
