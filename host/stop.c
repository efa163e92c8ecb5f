/*
 * Asking a worker to stop a call, or itself, without ever waiting for it:
 * the stop table and shutdown word in the segment header (shm/segment.h),
 * a wake-up that writes no frame, and a signal for a plain function that
 * runs now.  No ring lock is taken, so a caller blocked writing to a full
 * request ring cannot hold a stop back.
 */
#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "wire.h"
#include "chan.h"
#include "table.h"

/*
 * Ask the worker to stop: the shutdown word, and a wake-up that writes no
 * frame, so this never waits behind a caller holding tx_lock for ring
 * space.  A SHUTDOWN frame follows only when the ring is free and has
 * room, for workers that read only their ring.  A worker too stuck to
 * look is killed by pyproc__worker_stop().
 */
void pyproc__worker_ask_stop(struct pp_worker *w)
{
    if (w->pid <= 0 || atomic_load_explicit(&w->dead, memory_order_acquire))
        return;
    /* Pairs with the worker's acquire load; the fence in shm_ring_notify()
     * pairs with the one after its sleep announcement. */
    atomic_store_explicit(&w->seg.hdr->shutdown, 1, memory_order_release);
    shm_ring_notify(&w->tx);
    /* For a worker that reads only its ring: never waits for the token. */
    char nil[PYPROC__WIRE_SMALL];
    pyproc__send_try(w, SHM_FRAME_SHUTDOWN, 0, nil, pyproc__wire_nil(nil));
}

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
        if (pyproc__table_has(w, cur))
            continue; /* its call may still be answered */
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

    if (atomic_load_explicit(&w->dead, memory_order_acquire))
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
