/*
 * Maps: one function run over a stream of inputs, spread over the pool.
 *
 * pyproc_push() encodes an item's arguments straight into the chunk being
 * packed (a MAP_CHUNK payload); a chunk is sealed once it holds as many
 * items as its worker should take at once, and sent to the live worker
 * with the fewest items in flight that has fewer than MAP_DEPTH chunks in
 * flight, so that each worker has the next chunk waiting while it runs
 * one, and no worker gets far more than its share.  How many items make a
 * chunk follows how long items take (the workers say how long they spent
 * on each batch of answers, see pyproc__chunk_measure()): no-op items
 * travel hundreds at a time, items of a millisecond one by one.  A chunk is a call in its worker's table, so its worker's
 * death, a cancel, the call timeout and the pool's end reach it as they
 * reach any call, and its end settles whatever it did not answer.
 *
 * The owner (one thread at a time) pushes and reads; nothing here waits
 * for the reader, so one thread can do both: a push into a full window
 * returns -EAGAIN, and a read with nothing answered sends the chunk being
 * packed before it waits.  While the map is busy its reader holds a lease
 * on its workers' polling (chan.h) and reads their rings itself: their
 * answers ring no doorbell, and the service thread sleeps.  When it has
 * to wait, it spins as a call's waiter does, then sleeps on their rings
 * and the map's word at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/futex.h"
#include "fmt.h"
#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "drain.h"
#include "mapq.h"
#include "feature.h"

/* Chunks in flight per worker: one running, the next ones waiting. */
#define MAP_DEPTH 4
/* A chunk should keep its worker busy about this long... */
#define MAP_TARGET_NS (500 * 1000LL)
/* ...within these bounds. */
#define MAP_MAX_ITEMS 1024
#define MAP_MAX_BYTES (256u << 10)
/* A chunk being packed goes to an idle worker once it is this old:
 * sooner, a pusher faster than one item per worker's item would send
 * items one by one to workers it keeps idle that way. */
#define MAP_IDLE_FLUSH_NS (50 * 1000LL)
/* The reader sleeps on the rings of at most this many workers at once;
 * the others' answers reach it through the service thread. */
#define MAP_RING_SLEEPS 32
/* The reader's naps while it waits: chunks wait for a worker to come back
 * (respawn) at the shorter one. */
#define MAP_NAP_MS 100
#define MAP_STALL_NAP_MS 5

/* ---- packing ---- */

/* Items per chunk for now: what takes MAP_TARGET_NS, one while nothing
 * was measured (a first item may take seconds). */
static uint32_t chunk_items(struct pp_map *m)
{
    uint32_t cap = m->window / (uint32_t)(m->nworkers * MAP_DEPTH);
    int64_t per;

    pthread_mutex_lock(&m->lock);
    per = m->item_ns;
    pthread_mutex_unlock(&m->lock);
    if (cap > MAP_MAX_ITEMS)
        cap = MAP_MAX_ITEMS;
    if (cap < 1 || per <= 0)
        return 1;
    int64_t n = MAP_TARGET_NS / per;
    return n >= cap ? cap : n < 1 ? 1 : (uint32_t)n;
}

static struct pp_batch *batch_new(struct pp_map *m)
{
    struct pp_batch *b = m->spare;

    if (b)
        m->spare = NULL;
    else if (!(b = calloc(1, sizeof *b)))
        return NULL;
    shm_buf_reset(&b->b);
    b->b.limit = m->pool->max_msg;
    b->next = NULL;
    b->first = m->pushed;
    b->count = 0;
    b->max_items = chunk_items(m);
    if (pyproc__wire_chunk_begin(&b->b, m->ref) < 0) {
        pyproc__batch_free(b);
        return NULL;
    }
    b->head_len = b->b.len;
    return b;
}

static void batch_recycle(struct pp_map *m, struct pp_batch *b)
{
    if (!m->spare && b->b.cap <= 2 * MAP_MAX_BYTES) {
        m->spare = b;
        return;
    }
    pyproc__batch_free(b);
}

/* The chunk being packed joins the queue of chunks to send. */
static void seal(struct pp_map *m)
{
    struct pp_batch *b = m->partial;

    if (!b || !b->count)
        return;
    m->partial = NULL;
    pyproc__wire_chunk_seal(&b->b, b->head_len, b->first, b->count);
    pyproc__map_batch_wait(m, b);
    if (m->queue_tail)
        m->queue_tail->next = b;
    else
        m->queue_head = b;
    m->queue_tail = b;
}

/*
 * Whether the reader waits for an item of the chunk being packed: in an
 * ordered map, the next one to read is in it; in an unordered one,
 * nothing else is on its way.  Otherwise waiting for the answers on their
 * way is better than sending a small chunk.
 */
static bool partial_needed(struct pp_map *m)
{
    bool idle;

    if (!m->partial || !m->partial->count || m->queue_head)
        return false;
    if (m->ordered)
        return m->read >= m->partial->first;
    pthread_mutex_lock(&m->lock);
    idle = !m->inflight;
    pthread_mutex_unlock(&m->lock);
    return idle;
}

/* ---- polling our workers ---- */

/*
 * How the reader polls the worker it sent to at each index: not at all,
 * for one wait (another map's reader holds the lease), or under a lease
 * that outlasts its calls (chan.h): while the map is busy its workers
 * ring no doorbell, the reader drains their rings itself, and the
 * service thread sleeps.
 */
enum { MAP_POLL_NONE, MAP_POLL_WAIT, MAP_POLL_LEASE };

/* Let go of index i's lease, if we still hold it. */
static void lease_let_go(struct pp_map *m, int i)
{
    struct pp_worker *w = m->wref[i];

    if (m->polling[i] != MAP_POLL_LEASE)
        return;
    m->polling[i] = MAP_POLL_NONE;
    if (pyproc__lease_drop(w, m))
        pyproc__poll_leave_draining(w);
}

/*
 * Whether w runs our chunks alone.  Anything else's answers (an event
 * loop's call, a stream's items) must ring the doorbell, or they would
 * wait until we drain.  A call started on a leased worker breaks the
 * lease (start.c); this look, after our take and a fence, catches a call
 * that looked before the take (in_flight and lease_owner, Dekker-wise).
 * A dead worker's pool may be gone (the map outlives it): no lease.
 */
static bool ours_alone(struct pp_map *m, int i, struct pp_worker *w)
{
    atomic_thread_fence(memory_order_seq_cst);
    return !atomic_load_explicit(&w->dead, memory_order_acquire) &&
           atomic_load_explicit(&w->in_flight, memory_order_relaxed) <=
               atomic_load_explicit(&m->chunks_in[i], memory_order_relaxed);
}

/* Lease the workers we sent to where we can, and say we still read. */
static void lease_all(struct pp_map *m)
{
    for (int i = 0; i < m->nworkers; i++) {
        struct pp_worker *w = m->wref[i];
        if (!w)
            continue;
        if (m->polling[i] == MAP_POLL_LEASE && pyproc__lease_held(w, m)) {
            if (ours_alone(m, i, w))
                pyproc__lease_beat(w);
            else
                lease_let_go(m, i);
        } else if (!atomic_load_explicit(&w->dead, memory_order_acquire) &&
                   pyproc__lease_take(w, m)) {
            m->polling[i] = MAP_POLL_LEASE;
            if (!ours_alone(m, i, w))
                lease_let_go(m, i);
        } else {
            m->polling[i] = MAP_POLL_NONE; /* another's, taken back, or dead */
        }
    }
}

/* The map has nothing in flight, or goes: the doorbells ring again. */
static void lease_let_go_all(struct pp_map *m)
{
    for (int i = 0; i < m->nworkers; i++)
        if (m->wref[i])
            lease_let_go(m, i);
}

/* ---- sending ---- */

/*
 * The live worker index with the fewest items in flight and room for one
 * more chunk (none in flight at all when idle_only), with a reference to
 * its worker; -1 when there is none.  *dead says whether a dead worker
 * was passed over.
 */
static int pick(struct pp_map *m, bool idle_only, struct pp_worker **ret, bool *dead)
{
    uint64_t skip = 0; /* indexes found dead, for the first 64 */

    *dead = false;
    for (int tries = 0; tries < m->nworkers; tries++) {
        int best = -1;
        pthread_mutex_lock(&m->lock);
        for (int i = 0; i < m->nworkers; i++) {
            uint32_t in = atomic_load_explicit(&m->chunks_in[i], memory_order_relaxed);
            if ((i < 64 && (skip >> i & 1)) || in >= MAP_DEPTH || (idle_only && in))
                continue;
            if (best < 0 || m->load[i] < m->load[best])
                best = i;
        }
        pthread_mutex_unlock(&m->lock);
        if (best < 0)
            return -1;
        struct pp_worker *w = pyproc__pick_worker(m->pool, best);
        /* A hint: one that dies after this fails its chunk's items; one
         * being replaced is passed over as a dead one is, for a while. */
        if (w && !atomic_load_explicit(&w->dead, memory_order_relaxed) &&
            !atomic_load_explicit(&w->retiring, memory_order_relaxed)) {
            *ret = w;
            return best;
        }
        pyproc__worker_unref(w);
        *dead = true;
        if (best >= 64)
            return -1;
        skip |= 1ull << best;
    }
    return -1;
}

/* Send batch b to worker w at index i as a chunk. */
static void send_batch(struct pp_map *m, struct pp_batch *b, int i, struct pp_worker *w)
{
    struct pp_chunk *k = pyproc__chunk_alloc(m, b, i);
    pyproc_call *c;
    int err;

    if (!k) {
        pyproc__map_batch_fail(m, b, -ENOMEM, "no memory to send this item");
        pyproc__worker_unref(w);
        return;
    }
    /* A worker that left its slot as we picked it (-ESTALE): the one
     * in the slot now, or at index 0 when the index went too. */
    while ((err = pyproc__chunk_send(w, &b->b, k, &c)) == -ESTALE) {
        pyproc__worker_unref(w);
        if (!(w = pyproc__pick_worker(m->pool, i)))
            w = pyproc__pick_worker(m->pool, 0);
    }
    if (err < 0) {
        pyproc_msg *why = NULL;
        pyproc__msg_error(&why, "the item could not be sent: %s", pyproc_strerror(err));
        pyproc__chunk_end(k, err, why);
    } else {
        /* Ours, so that c outlives a bind that hands the map's reference
         * to a chunk ending meanwhile; taken from the one we hold. */
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        /* A cancel that came while it was sent did not see it: seq_cst,
         * with the store in cancel() (see stop_all()). */
        if (pyproc__chunk_bind(k, c) && atomic_load_explicit(&m->cancelled, memory_order_seq_cst))
            pyproc__call_interrupt(c, SHM_INTERRUPT_CANCEL);
        pyproc__call_unref(c);
    }
    /* Keep a reference to the worker we send to, to drain its replies. */
    if (m->wref[i] != w) {
        lease_let_go(m, i);
        pyproc__worker_unref(m->wref[i]);
        m->wref[i] = w;
    } else {
        pyproc__worker_unref(w);
    }
}

/* Room for n more slots in b's list (unordered maps). */
static int slots_reserve(struct pp_batch *b, uint32_t n)
{
    if (b->count + n <= b->cap_slots)
        return 0;
    uint32_t cap = b->cap_slots ? b->cap_slots : 64;
    while (cap < b->count + n)
        cap *= 2;
    uint32_t *l = realloc(b->slots, cap * sizeof *l);
    if (!l)
        return -ENOMEM;
    b->slots = l;
    b->cap_slots = cap;
    return 0;
}

/*
 * Chunks sealed small (before any item was measured, or for a worker
 * that had nothing to do) join the ones queued behind them, up to the
 * size chunks have now: a queued chunk holds consecutive items, so the
 * next one's items' bytes simply follow its own.
 */
static void merge_queued(struct pp_map *m)
{
    struct pp_batch *b = m->queue_head, *n;
    uint32_t want;

    if (!b || !(n = b->next) || b->count + n->count > (want = chunk_items(m)))
        return;
    while ((n = b->next) && b->count + n->count <= want &&
           b->b.len + (n->b.len - n->head_len) <= MAP_MAX_BYTES) {
        size_t len0 = b->b.len;
        if (shm_buf_append(&b->b, n->b.data + n->head_len, n->b.len - n->head_len) < 0)
            break;
        if (!m->ordered) {
            if (slots_reserve(b, n->count) < 0) {
                b->b.len = len0;
                break;
            }
            memcpy(b->slots + b->count, n->slots, n->count * sizeof *n->slots);
        }
        b->count += n->count;
        b->next = n->next;
        if (m->queue_tail == n)
            m->queue_tail = b;
        batch_recycle(m, n);
    }
    pyproc__wire_chunk_seal(&b->b, b->head_len, b->first, b->count);
}

/* Whether some worker has fewer than max chunks of ours: a hint, read
 * without the lock. */
static bool some_below(struct pp_map *m, uint32_t max)
{
    for (int i = 0; i < m->nworkers; i++)
        if (atomic_load_explicit(&m->chunks_in[i], memory_order_relaxed) < max)
            return true;
    return false;
}

static bool some_idle(struct pp_map *m)
{
    return some_below(m, 1);
}

/*
 * Send queued chunks while a worker has room; when the queue is empty
 * and a worker has nothing to do, send the chunk being packed too.  A
 * chunk whose worker is dead waits for its respawn, until the pool's
 * start timeout says it is not coming: then it goes anyway, and its items
 * fail with the worker's death.
 */
static void pump(struct pp_map *m)
{
    for (;;) {
        bool idle_only = !m->queue_head, dead;
        struct pp_worker *w = NULL;
        if (idle_only && (!m->partial || !m->partial->count || !some_idle(m) ||
                          shm_now_ns() - m->partial->born_ns < MAP_IDLE_FLUSH_NS))
            return;
        int i = pick(m, idle_only, &w, &dead);
        if (i < 0 && dead && m->queue_head) {
            int64_t now = shm_now_ns();
            if (!m->stalled_since)
                m->stalled_since = now;
            if (now - m->stalled_since < (int64_t)m->pool->start_timeout_ms * 1000000)
                return;
            i = 0;
            w = pyproc__pick_worker(m->pool, 0);
        }
        if (i < 0 || !w)
            return;
        m->stalled_since = 0;
        if (idle_only)
            seal(m);
        merge_queued(m);
        struct pp_batch *b = m->queue_head;
        m->queue_head = b->next;
        if (!m->queue_head)
            m->queue_tail = NULL;
        send_batch(m, b, i, w);
        batch_recycle(m, b);
    }
}

/*
 * pump() after a push, when it may have something to do: a queued chunk
 * and a worker with room for it, or a worker with nothing to do, whose
 * chunk being packed pump() sends once it is old enough (the clock is
 * read every eighth item: a push costs less than reading it).  A chunk
 * that stays is sent by the next push or by pyproc_next(), which pumps
 * before it waits and whenever the map changed.
 */
static void pump_soon(struct pp_map *m)
{
    if (m->queue_head ? some_below(m, MAP_DEPTH)
                      : m->partial && (m->partial->count & 7) == 1 && some_idle(m))
        pump(m);
}

/* ---- stopping ---- */

/* Ask every chunk in flight to stop (stop table, never the ring). */
static void stop_all(struct pp_map *m)
{
    pyproc_call **calls = NULL;
    int n = 0, cap = 0;

    pthread_mutex_lock(&m->lock);
    for (struct pp_chunk *k = m->inflight; k; k = k->next) {
        if (!k->call)
            continue; /* not bound yet: send_batch() stops it */
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            pyproc_call **l = realloc(calls, (size_t)cap * sizeof *l);
            if (!l)
                break;
            calls = l;
        }
        /* From the map's reference, which the chunk holds until it ends
         * under this lock: relaxed. */
        atomic_fetch_add_explicit(&k->call->refs, 1, memory_order_relaxed);
        calls[n++] = k->call;
    }
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; i < n; i++) {
        pyproc__call_interrupt(calls[i], SHM_INTERRUPT_CANCEL);
        pyproc__call_unref(calls[i]);
    }
    free(calls);
}

/* After a cancel, the items not sent yet end here. */
static void fail_unsent(struct pp_map *m)
{
    seal(m);
    while (m->queue_head) {
        struct pp_batch *b = m->queue_head;
        m->queue_head = b->next;
        pyproc__map_batch_fail(m, b, -ECANCELED, "the map was cancelled before the item was sent");
        batch_recycle(m, b);
    }
    m->queue_tail = NULL;
}

/* The owner's batches, at the handle's free. */
static void batch_free_all(struct pp_map *m)
{
    if (m->partial)
        batch_recycle(m, m->partial);
    m->partial = NULL;
    pyproc__batch_free(m->spare);
    m->spare = NULL;
}

/* ---- waiting ---- */

static void drain_if_free(struct pp_worker *w)
{
    if (pyproc__chan_has_replies(w) && pthread_mutex_trylock(&w->rx_lock) == 0) {
        pyproc__drain(w);
        pthread_mutex_unlock(&w->rx_lock);
    }
}

/* Take the answers that came to the workers we sent to, unless someone
 * else is taking them: the reader reads its own answers first, rather
 * than wait for the service thread to hand them over. */
static void drain_mine(struct pp_map *m)
{
    for (int i = 0; i < m->nworkers; i++)
        if (m->wref[i])
            drain_if_free(m->wref[i]);
}

/*
 * Spin for a change of the map since seq was loaded, draining the
 * workers we sent to, for the pool's spin budget, as a call's waiter
 * does: polling, the rings ring no doorbell, and the service thread
 * sleeps.  A spin that finds nothing yields its CPU now and then
 * (shm_spin_yield()): on a machine whose CPUs the workers keep busy, the
 * one whose answer we wait for may be queued behind us.  True when the
 * map changed.
 */
static bool map_spin(struct pp_map *m, uint32_t seq)
{
    int64_t start = shm_now_ns(), until = start + m->pool->spin_ns;

    for (unsigned n = 1;; n++) {
        drain_mine(m);
        if (atomic_load_explicit(&m->seq, memory_order_acquire) != seq)
            return true;
        shm_cpu_relax();
        if ((n & 31) == 0) {
            int64_t now = shm_now_ns();
            if (now >= until)
                return false;
            shm_spin_yield(now - start);
        }
    }
}

/* Set once the kernel refused futex_waitv(): readers sleep on the map's
 * word alone from then on, and the service thread drains for them. */
static _Atomic bool no_waitv;

/* Stop polling index i for this wait (a lease stays). */
static void poll_end(struct pp_map *m, int i)
{
    if (m->polling[i] == MAP_POLL_WAIT) {
        m->polling[i] = MAP_POLL_NONE;
        pyproc__poll_leave_draining(m->wref[i]);
    }
}

/*
 * Sleep until the map changes: on the reply rings of the workers whose
 * sleeper's role is free (see wait.c), so that their answers wake us
 * directly, and on the map's word for every other change (another
 * drainer's answers, a chunk's end).  The others' doorbells are armed as
 * we stop polling them (a lease too), for the service thread.  The rings
 * we sleep on we still poll, as a call's ring sleeper does.
 */
static void map_sleep(struct pp_map *m, uint32_t seq, int nap)
{
    struct pp_worker *ring[MAP_RING_SLEEPS];
    int at[MAP_RING_SLEEPS], nr = 0, began = 0;
    bool waitv = !atomic_load_explicit(&no_waitv, memory_order_relaxed);

    for (int i = 0; i < m->nworkers; i++) {
        struct pp_worker *w = m->wref[i];
        if (!w)
            continue;
        /* The role guards no data: relaxed, as in wait.c. */
        if (waitv && nr < MAP_RING_SLEEPS && !pyproc__chan_closed(w) &&
            !atomic_exchange_explicit(&w->ring_sleeper, true, memory_order_relaxed)) {
            at[nr] = i;
            ring[nr++] = w;
        } else {
            lease_let_go(m, i);
            poll_end(m, i);
        }
    }
    /* seq_cst, paired with pyproc__map_wake(): it sees sleeping, or we see
     * its bump. */
    atomic_store_explicit(&m->sleeping, true, memory_order_seq_cst);
    /* After each announcement a reply that came meanwhile is seen (see
     * shm_ring_sleep_begin()), and then we do not sleep. */
    while (began < nr && pyproc__chan_sleep_begin(ring[began]))
        began++;
    if (began == nr && atomic_load_explicit(&m->seq, memory_order_seq_cst) == seq) {
        int err = nr ? pyproc__chan_sleep_many(ring, nr, &m->seq, seq, nap)
                     : shm_futex_wait(&m->seq, seq, nap, false);
        /* Any refusal, not only -ENOSYS (a seccomp filter may say
         * -EPERM): a reader that cannot sleep so would spin instead. */
        if (nr && err < 0 && err != -EINTR && err != -ETIMEDOUT && err != -EAGAIN)
            atomic_store_explicit(&no_waitv, true, memory_order_relaxed);
    }
    for (int j = 0; j < began; j++)
        pyproc__chan_sleep_end(ring[j]);
    atomic_store_explicit(&m->sleeping, false, memory_order_relaxed);
    for (int j = 0; j < nr; j++) {
        int i = at[j];
        atomic_store_explicit(&ring[j]->ring_sleeper, false, memory_order_relaxed);
        if (m->polling[i] == MAP_POLL_LEASE && !pyproc__lease_held(ring[j], m)) {
            /* Taken back while we slept, when the ring's word said we
             * sleep, so nothing armed the doorbell: arm it. */
            m->polling[i] = MAP_POLL_NONE;
            pyproc__poll_enter(ring[j]);
            pyproc__poll_leave_draining(ring[j]);
        }
        poll_end(m, i);
    }
}

/*
 * Wait for a change of the map since seq was loaded: spin, then sleep,
 * polling the workers we sent to (under our leases, or for this wait).
 * Chunks waiting for a worker to come back (respawn) make the naps short.
 */
static void map_wait(struct pp_map *m, uint32_t seq)
{
    int nap = m->queue_head ? MAP_STALL_NAP_MS : MAP_NAP_MS;

    lease_all(m);
    for (int i = 0; i < m->nworkers; i++)
        if (m->wref[i] && m->polling[i] == MAP_POLL_NONE) {
            pyproc__poll_enter(m->wref[i]);
            m->polling[i] = MAP_POLL_WAIT;
        }
    if (!map_spin(m, seq)) {
        map_sleep(m, seq, nap);
        return;
    }
    for (int i = 0; i < m->nworkers; i++)
        if (m->wref[i])
            poll_end(m, i);
}

/* ---- the API ---- */

/* The map behind a handle, or NULL with *err set. */
static struct pp_map *map_of(pyproc_call *c, int *err)
{
    *err = !c || !c->map ? -EINVAL : c->fork_gen != pyproc__fork_gen() ? -ECHILD : 0;
    return *err ? NULL : c->map;
}

PYPROC_EXPORT int pyproc_map(pyproc_pool *p, const char *ref, unsigned flags, pyproc_call **stream)
{
    int err = pyproc__pool_accepting(p);
    pyproc_call *c;
    struct pp_map *m;

    if (err < 0)
        return err;
    if (!ref || !stream || (flags & ~PYPROC_MAP_UNORDERED))
        return -EINVAL;
    if (!(c = calloc(1, sizeof *c)))
        return -ENOMEM;
    if (!(m = pyproc__map_alloc(p, ref, !(flags & PYPROC_MAP_UNORDERED)))) {
        free(c);
        return -ENOMEM;
    }
    c->pool = p;
    c->index = -1;
    c->fork_gen = p->fork_gen;
    c->is_stream = true;
    c->map = m;
    pthread_mutex_init(&c->qlock, NULL);
    atomic_init(&c->refs, 1);
    m->handle = c; /* nobody else has m yet */
    *stream = c;
    return 0;
}

PYPROC_EXPORT int pyproc_pushv(pyproc_call *c, const char *fmt, va_list ap)
{
    struct pp_map *m;
    struct pyproc__args args;
    struct pyproc__va va;
    int err;

    if (!(m = map_of(c, &err)))
        return err;
    if (atomic_load_explicit(&m->cancelled, memory_order_seq_cst))
        return -ECANCELED;
    if (m->input_ended)
        return -EPIPE;
    /* Draining: no new work.  (map_of() checked the fork generation,
     * which the map has from its pool.) */
    if (atomic_load_explicit(&m->pool->draining, memory_order_acquire))
        return -ESHUTDOWN;
    /* Answers in the reader's cache are not read yet. */
    if (m->pushed - (m->read - (m->cache_len - m->cache_head)) >= m->window) {
        /* The chunk being packed stays: pyproc_next() sends it when it
         * has to wait for it, and sealing it here, one item after each
         * read, would send items one by one. */
        pump_soon(m);
        return -EAGAIN;
    }
    /* The format is read once per map, not once per item, while it stays
     * the same text. */
    if (!pyproc__fmt_plan_is(&m->plan, fmt) && (err = pyproc__fmt_plan_set(&m->plan, fmt)) < 0)
        return err;
    for (int tries = 0;; tries++) {
        if (!m->partial && !(m->partial = batch_new(m)))
            return -ENOMEM;
        va_copy(va.ap, ap);
        pyproc__args_va(&args, &va);
        size_t len0 = m->partial->b.len;
        err = pyproc__fmt_encode_plan(&m->partial->b, &m->plan, &args);
        va_end(va.ap);
        if (err == 0 && (err = pyproc__map_slot_take(m, m->partial)) < 0)
            m->partial->b.len = len0;
        /* Too large for this chunk, but maybe not for one of its own. */
        if (err != -EMSGSIZE || tries || !m->partial->count)
            break;
        seal(m);
    }
    if (err < 0)
        return err;
    if (!m->partial->count)
        m->partial->born_ns = shm_now_ns();
    m->partial->count++;
    m->pushed++;
    /* A reader by callback never waits in pyproc_next(), which would
     * send what its next item needs: send it now. */
    if (m->partial->count >= m->partial->max_items || m->partial->b.len >= MAP_MAX_BYTES ||
        (atomic_load_explicit(&m->deliver, memory_order_relaxed) && partial_needed(m)))
        seal(m);
    pump_soon(m);
    return 0;
}

PYPROC_EXPORT int pyproc_push(pyproc_call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_pushv(c, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_push_end(pyproc_call *c)
{
    struct pp_map *m;
    int err;

    if (!(m = map_of(c, &err)))
        return err;
    m->input_ended = true;
    seal(m);
    pump(m);
    return 0;
}

int pyproc__map_next(pyproc_call *c, pyproc_msg **item, uint64_t *index)
{
    struct pp_map *m;
    int err;

    if (!(m = map_of(c, &err)))
        return err;
    if (!item)
        return -EINVAL;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&m->seq, memory_order_acquire);
        pyproc_msg *msg;
        uint64_t at;
        int result;

        if (atomic_load_explicit(&m->cancelled, memory_order_seq_cst))
            fail_unsent(m);
        /* Each look for new answers says we still read (see lease_all()). */
        if (m->cache_head == m->cache_len)
            lease_all(m);
        if (pyproc__map_take(m, &msg, &result, &at)) {
            if (m->queue_head)
                pump(m);
            *item = msg;
            if (index)
                *index = at;
            return result < 0 ? result : 1;
        }
        if (m->read == m->pushed) {
            lease_let_go_all(m);
            return m->input_ended || atomic_load_explicit(&m->cancelled, memory_order_seq_cst)
                       ? 0
                       : -EAGAIN;
        }
        if (partial_needed(m))
            seal(m);
        pump(m);
        if (atomic_load_explicit(&m->seq, memory_order_acquire) != seq)
            continue;
        drain_mine(m);
        if (atomic_load_explicit(&m->seq, memory_order_acquire) == seq)
            map_wait(m, seq);
    }
}

int pyproc__map_poll(pyproc_call *c, pyproc_msg **item)
{
    struct pp_map *m;
    pyproc_msg *msg;
    uint64_t at;
    int err, result;

    if (!(m = map_of(c, &err)))
        return err;
    if (atomic_load_explicit(&m->cancelled, memory_order_seq_cst))
        fail_unsent(m);
    if (pyproc__map_take(m, &msg, &result, &at)) {
        if (m->queue_head)
            pump(m);
        *item = msg;
        return result < 0 ? result : 1;
    }
    if (m->read == m->pushed)
        return m->input_ended || atomic_load_explicit(&m->cancelled, memory_order_seq_cst)
                   ? 0
                   : PYPROC__STREAM_EMPTY;
    if (partial_needed(m))
        seal(m);
    pump(m);
    return PYPROC__STREAM_EMPTY;
}

void pyproc__map_deliver(pyproc_call *c)
{
    /* Release: pairs with the acquire load in pyproc__map_wake(). */
    atomic_store_explicit(&c->map->deliver, true, memory_order_release);
}

int pyproc__map_cancel(pyproc_call *c)
{
    struct pp_map *m;
    int err;

    if (!(m = map_of(c, &err)))
        return err;
    /* seq_cst: see send_batch(). */
    if (atomic_exchange_explicit(&m->cancelled, true, memory_order_seq_cst))
        return -EALREADY;
    stop_all(m);
    pyproc__map_wake(m); /* the reader fails what was not sent */
    return 0;
}

void pyproc__map_free(pyproc_call *c)
{
    struct pp_map *m = c->map;

    if (c->fork_gen != pyproc__fork_gen()) {
        /* A forked child's copy: its chunks are the parent's calls. */
        free(c);
        return;
    }
    atomic_store_explicit(&m->cancelled, true, memory_order_seq_cst);
    pthread_mutex_lock(&m->lock);
    m->closed = true;
    m->handle = NULL;
    for (uint32_t i = 0; i < m->window; i++) {
        pyproc_msg_free(m->slots[i].msg);
        m->slots[i].msg = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    stop_all(m);
    fail_unsent(m);
    batch_free_all(m);
    /* Here, not with the map, which a drainer may free while it holds a
     * worker's rx_lock. */
    lease_let_go_all(m);
    for (int i = 0; i < m->nworkers; i++) {
        pyproc__worker_unref(m->wref[i]);
        m->wref[i] = NULL;
    }
    pyproc__map_unref(m);
    /* The handle may still be queued for a callback (events.c), which
     * holds a reference of its own. */
    pyproc__call_unref(c);
}

PYPROC_EXPORT int pyproc_next_at(pyproc_call *c, pyproc_msg **item, size_t *index)
{
    uint64_t at = UINT64_MAX;
    int rc;

    if (!c || !item)
        return -EINVAL;
    if (c->map) {
        if (atomic_load_explicit(&c->cb, memory_order_relaxed) != CB_NONE)
            return -EBUSY; /* its items go to a callback */
        rc = pyproc__map_next(c, item, &at);
        if (index && at != UINT64_MAX)
            *index = (size_t)at;
        return rc;
    }
    rc = pyproc_next(c, item);
    /* A stream's items are numbered as its reader takes them; an error
     * stands where the next item would have. */
    if (rc == 1 || (rc < 0 && rc != -EINVAL && rc != -ECHILD)) {
        if (index)
            *index = (size_t)c->items_taken;
        if (rc == 1)
            c->items_taken++;
    }
    return rc;
}
