/*
 * A worker's channel, the local kind: its segment, rings, doorbells and
 * pidfd, and the references that keep them alive.  The only code besides
 * send.c and stop.c that touches a worker's rings.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../shm/futex.h"
#include "chan.h"
#include "output.h"
#include "service.h"

/* A remote worker's transport signals it (core.h, struct pp_remote). */
static void worker_signal(struct pp_worker *w, int sig)
{
    if (w->pool->remote)
        w->pool->remote->signal(w, sig);
    else
        syscall(SYS_pidfd_send_signal, w->pidfd, sig, NULL, 0);
}

/* A worker that breaks the protocol cannot be trusted with more work:
 * close its rings, which fails its calls when it is reaped, and kill it. */
void pyproc__worker_condemn(struct pp_worker *w, const char *why)
{
    if (shm_ring_is_closed(&w->rx))
        return;
    fprintf(stderr, "pyproc %s: worker %d %s; stopping it\n", w->pool->name, w->index, why);
    shm_ring_close(&w->rx);
    shm_ring_close(&w->tx);
    worker_signal(w, SIGKILL);
}

void pyproc__poll_enter(struct pp_worker *w)
{
    uint32_t bell = SHM_SLEEP_DOORBELL;

    /* pollers orders nothing else; relaxed.  Disarming the doorbell only
     * saves the worker doorbells while we poll.  Only from the doorbell:
     * a plain store, late (this thread preempted between the two steps),
     * could land over the SHM_SLEEP_FUTEX of a ring sleeper that came
     * meanwhile, and the worker would not wake it (until its nap ends). */
    if (atomic_fetch_add_explicit(&w->pollers, 1, memory_order_relaxed) == 0)
        atomic_compare_exchange_strong_explicit(&w->rx.ctl->consumer_wait, &bell, SHM_AWAKE,
                                                memory_order_relaxed, memory_order_relaxed);
}

/*
 * The last poller to leave asks for the doorbell again.  If an answer
 * slipped in before that, nobody would ring for it: ring our own doorbell
 * so the service thread takes it.
 */
void pyproc__poll_leave(struct pp_worker *w)
{
    if (pyproc__poll_leave_quiet(w))
        pyproc__chan_ring(w);
}

bool pyproc__poll_leave_quiet(struct pp_worker *w)
{
    if (atomic_fetch_sub_explicit(&w->pollers, 1, memory_order_relaxed) != 1)
        return false;
    return shm_ring_doorbell_begin(&w->rx) && !shm_ring_is_closed(&w->rx);
}

bool pyproc__lease_take(struct pp_worker *w, const void *owner)
{
    uintptr_t none = 0;

    /* Polling before the lease is seen, so that the service thread never
     * leaves a poll that is not there yet; a beat it has not seen. */
    if (atomic_load_explicit(&w->lease_owner, memory_order_relaxed))
        return false;
    pyproc__lease_beat(w);
    pyproc__poll_enter(w);
    if (!atomic_compare_exchange_strong_explicit(&w->lease_owner, &none, (uintptr_t)owner,
                                                 memory_order_seq_cst, memory_order_relaxed)) {
        pyproc__poll_leave(w);
        return false;
    }
    /* seq_cst, with the service thread's clear before it looks (see
     * pyproc__lease_check()): it sees this lease, or we start it looking. */
    if (!atomic_exchange_explicit(&w->pool->leases, true, memory_order_seq_cst))
        pyproc__service_kick(w->pool);
    return true;
}

bool pyproc__lease_held(struct pp_worker *w, const void *owner)
{
    return atomic_load_explicit(&w->lease_owner, memory_order_relaxed) == (uintptr_t)owner;
}

void pyproc__lease_beat(struct pp_worker *w)
{
    /* Its owner's alone. */
    atomic_store_explicit(&w->lease_beat,
                          atomic_load_explicit(&w->lease_beat, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

bool pyproc__lease_drop(struct pp_worker *w, const void *owner)
{
    uintptr_t mine = (uintptr_t)owner;

    return atomic_compare_exchange_strong_explicit(&w->lease_owner, &mine, 0, memory_order_relaxed,
                                                   memory_order_relaxed);
}

void pyproc__lease_break(struct pp_worker *w)
{
    /* seq_cst, after the caller's in_flight store and a fence: see
     * ours_alone() in map.c. */
    uintptr_t owner = atomic_load_explicit(&w->lease_owner, memory_order_seq_cst);

    if (owner && pyproc__lease_drop(w, (const void *)owner))
        pyproc__poll_leave(w); /* rings for what came meanwhile */
}

/* Take w's lease back if its beat stood still since the last look; true
 * while a lease is held. */
static bool lease_expire(struct pp_worker *w)
{
    uintptr_t owner = atomic_load_explicit(&w->lease_owner, memory_order_seq_cst);
    uint64_t beat = atomic_load_explicit(&w->lease_beat, memory_order_relaxed);

    if (!owner || beat != w->lease_seen) {
        w->lease_seen = beat;
        return owner != 0;
    }
    if (pyproc__lease_drop(w, (const void *)owner))
        pyproc__poll_leave(w); /* rings for what came meanwhile */
    return false;
}

int pyproc__lease_check(pyproc_pool *p)
{
    bool held = false;
    int64_t now;

    if (!atomic_load_explicit(&p->leases, memory_order_relaxed))
        return -1;
    now = shm_now_ns();
    if (now < p->next_lease_ns)
        return (int)((p->next_lease_ns - now) / 1000000) + 1;
    p->next_lease_ns = now + PYPROC__LEASE_MS * 1000000LL;
    atomic_store_explicit(&p->leases, false, memory_order_seq_cst);
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        if (p->workers[i] && lease_expire(p->workers[i]))
            held = true;
    for (struct pp_worker *r = p->retired; r; r = r->retired_next)
        if (lease_expire(r))
            held = true;
    pthread_mutex_unlock(&p->lock);
    if (held)
        atomic_store_explicit(&p->leases, true, memory_order_relaxed);
    return held ? PYPROC__LEASE_MS : -1;
}

bool pyproc__chan_rearm(struct pp_worker *w)
{
    /* A poller re-arms the doorbell itself when it leaves. */
    if (atomic_load_explicit(&w->pollers, memory_order_relaxed) > 0 || shm_ring_is_closed(&w->rx))
        return false;
    return shm_ring_doorbell_begin(&w->rx);
}

void pyproc__chan_ring(struct pp_worker *w)
{
    uint64_t one = 1;

    if (write(w->rx.doorbell_fd, &one, sizeof one) < 0) {
        /* Full counter: the service thread is due to wake anyway. */
    }
}

struct pp_worker *pyproc__worker_alloc(pyproc_pool *p, int index)
{
    struct pp_worker *w = calloc(1, sizeof *w);

    if (!w)
        return NULL;
    w->pool = p;
    atomic_init(&w->refs, 1);
    w->index = index;
    w->serial = atomic_fetch_add_explicit(&p->next_serial, 1, memory_order_relaxed);
    w->pid = -1;
    w->rank = -1;
    w->pidfd = w->death_w = w->fd_sock = -1;
    w->seg.fd = -1;
    w->tx.doorbell_fd = w->rx.doorbell_fd = -1;
    w->out[0].fd = w->out[1].fd = -1;
    w->free_head = UINT32_MAX;
    pyproc__tx_init(w);
    pthread_mutex_init(&w->rx_lock, NULL);
    pthread_mutex_init(&w->stop_lock, NULL);
    pyproc__lock_init(&w->calls_lock);
    return w;
}

void pyproc__worker_ref(struct pp_worker *w)
{
    atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
}

void pyproc__worker_unref(struct pp_worker *w)
{
    if (w && atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
        pyproc__worker_free(w);
}

int pyproc__workers_ref(pyproc_pool *p, struct pp_worker ***ret)
{
    struct pp_worker **ws;
    int n = 0;

    pthread_mutex_lock(&p->lock);
    int cap = p->nworkers;
    for (struct pp_worker *r = p->retired; r; r = r->retired_next)
        cap++;
    ws = malloc((size_t)(cap ? cap : 1) * sizeof *ws);
    for (int i = 0; ws && i < p->nworkers; i++)
        if (p->workers[i]) /* NULL while the pool starts */
            ws[n++] = p->workers[i];
    for (struct pp_worker *r = p->retired; ws && r; r = r->retired_next)
        ws[n++] = r;
    for (int i = 0; i < n; i++)
        pyproc__worker_ref(ws[i]);
    pthread_mutex_unlock(&p->lock);
    *ret = ws;
    return ws ? n : -ENOMEM;
}

void pyproc__workers_unref(struct pp_worker **ws, int n)
{
    for (int i = 0; i < n; i++)
        pyproc__worker_unref(ws[i]);
    free(ws);
}

void pyproc__worker_free(struct pp_worker *w)
{
    if (!w)
        return;
    if (w->pid > 0) {
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
        waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &(siginfo_t){0}, WEXITED);
    }
    if (w->pidfd >= 0)
        close(w->pidfd);
    if (w->death_w >= 0)
        close(w->death_w);
    if (w->fd_sock >= 0)
        close(w->fd_sock);
    for (int i = 0; i < w->nbuf_pending; i++)
        close(w->buf_pending[i].fd);
    if (w->tx.doorbell_fd >= 0)
        close(w->tx.doorbell_fd);
    if (w->rx.doorbell_fd >= 0)
        close(w->rx.doorbell_fd);
    pyproc__output_close(w);
    shm_ring_detach(&w->tx);
    shm_ring_detach(&w->rx);
    shm_seg_release(&w->seg);
    pyproc__tx_fini(w);
    pthread_mutex_destroy(&w->rx_lock);
    pthread_mutex_destroy(&w->stop_lock);
    pyproc__lock_fini(&w->calls_lock);
    free(w->slots);
    free(w->death);
    free(w);
}

/* ---- the reply side, for the floors above ---- */

int pyproc__chan_read(struct pp_worker *w, struct shm_msg *m)
{
    return shm_ring_read(&w->rx, m);
}

void pyproc__chan_done(struct pp_worker *w, struct shm_msg *m)
{
    shm_ring_done(&w->rx, m);
}

int pyproc__chan_copy_out(struct pp_worker *w, struct shm_msg *m)
{
    return shm_ring_copy_out(&w->rx, m);
}

uint64_t pyproc__chan_mark(struct pp_worker *w)
{
    return shm_ring_published(&w->rx);
}

bool pyproc__chan_before(struct pp_worker *w, uint64_t mark)
{
    return (int64_t)(mark - shm_ring_consumed(&w->rx)) > 0;
}

bool pyproc__chan_has_replies(struct pp_worker *w)
{
    return !shm_ring_empty(&w->rx);
}

bool pyproc__chan_closed(struct pp_worker *w)
{
    return shm_ring_is_closed(&w->rx);
}

bool pyproc__chan_peer_asleep(struct pp_worker *w)
{
    return atomic_load_explicit(&w->tx.ctl->consumer_wait, memory_order_relaxed) != SHM_AWAKE;
}

bool pyproc__chan_sleep_begin(struct pp_worker *w)
{
    return !shm_ring_sleep_begin(&w->rx, SHM_SLEEP_FUTEX);
}

void pyproc__chan_sleep(struct pp_worker *w, int ms)
{
    shm_futex_wait(&w->rx.ctl->consumer_wait, SHM_SLEEP_FUTEX, ms, true);
}

int pyproc__chan_sleep_many(struct pp_worker *const *ws, int n, _Atomic uint32_t *word,
                            uint32_t val, int ms)
{
    struct shm_futex_wait v[SHM_FUTEX_WAITV_MAX];

    if (n < 0 || n >= SHM_FUTEX_WAITV_MAX)
        return -ENOSYS;
    for (int i = 0; i < n; i++)
        v[i] = (struct shm_futex_wait){&ws[i]->rx.ctl->consumer_wait, SHM_SLEEP_FUTEX, true};
    v[n] = (struct shm_futex_wait){word, val, false};
    return shm_futex_waitv(v, n + 1, ms);
}

void pyproc__chan_sleep_end(struct pp_worker *w)
{
    shm_ring_sleep_end(&w->rx);
}

/*
 * The word a ring sleeper sleeps on must change, or a wake-up sent before
 * it is in FUTEX_WAIT is lost: take it back to SHM_AWAKE, as a producer's
 * shm_ring_notify() does.  Only SHM_SLEEP_FUTEX is taken back;
 * SHM_SLEEP_DOORBELL belongs to the service thread's epoll.
 */
void pyproc__chan_wake_sleeper(struct pp_worker *w)
{
    _Atomic uint32_t *word = &w->rx.ctl->consumer_wait;
    uint32_t s = SHM_SLEEP_FUTEX;

    /*
     * Pairs with the fence in shm_ring_sleep_begin(), which the sleeper
     * follows with a load of its call's state: either the sleeper sees
     * the end its waker stored before this fence and does not sleep, or
     * this exchange sees its SHM_SLEEP_FUTEX.
     */
    atomic_thread_fence(memory_order_seq_cst);
    atomic_compare_exchange_strong_explicit(word, &s, SHM_AWAKE, memory_order_relaxed,
                                            memory_order_relaxed);
    shm_futex_wake(word, INT32_MAX, true);
}

void pyproc__worker_kill(struct pp_worker *w)
{
    worker_signal(w, SIGKILL);
}
