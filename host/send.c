/*
 * Writing to a worker's request ring.
 *
 * Writers serialise on a token (tx_busy, under tx_lock) rather than on the
 * mutex itself: the holder writes every fragment of its message, waiting
 * for ring space with the token but without the mutex, so no lock is held
 * across a wait on the worker, and a thread that must not wait can still
 * look at the ring and leave at once.  A message of one fragment that fits
 * now, while nobody holds the token, is written under tx_lock alone
 * (send_now()): the usual call costs one lock, not a token's two.
 *
 * The callback thread never waits for the token or for space: its
 * CALLBACK_REPLYs go to the worker's outbox (private memory, bounded by the
 * callback queue's bound), which whoever releases the token writes as far
 * as the ring has room, and which the callback thread retries on its own.
 * A reply written in part holds the ring for itself (fragments must stay
 * contiguous): writers then wait until the rest is written.  Small control
 * frames that must not wait (pyproc__send_try()) queue there too while the
 * token is held.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../shm/be64.h"
#include "../shm/fdpass.h"
#include "../shm/futex.h"
#include "chan.h"

/* A writer waiting for space sleeps at most this long before it looks
 * again (at the closed flag and its deadline). */
#define SPACE_NAP_MS 100
/* How often a writer waiting behind a part-written reply tries to move it. */
#define OUTBOX_RETRY_MS 10

/* Control frames (CANCEL, SHUTDOWN) kept at most in one outbox; past
 * that they are dropped, as when the ring is full. */
#define OUTBOX_CTL_MAX 64

struct pp_outbox {
    struct pp_outbox *next;
    uint16_t type;
    uint64_t id;
    size_t len, sent;
    bool started; /* a fragment is in the ring: the rest must follow */
    uint8_t data[];
};

void pyproc__tx_init(struct pp_worker *w)
{
    pthread_condattr_t a;

    pthread_mutex_init(&w->tx_lock, NULL);
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->tx_free, &a);
    pthread_condattr_destroy(&a);
}

void pyproc__tx_fini(struct pp_worker *w)
{
    while (w->outbox_head) {
        struct pp_outbox *e = w->outbox_head;
        w->outbox_head = e->next;
        free(e);
    }
    w->outbox_tail = NULL;
    pthread_cond_destroy(&w->tx_free);
    pthread_mutex_destroy(&w->tx_lock);
}

static uint64_t frame_bytes(uint64_t len)
{
    return SHM_FRAME_HEADER_BYTES +
           ((len + SHM_FRAME_ALIGN - 1) & ~(uint64_t)(SHM_FRAME_ALIGN - 1));
}

/* True when a frame with an n-byte payload fits now (as shm_ring_reserve()
 * would find); token holder only. */
static bool ring_has_room(const struct shm_ring *r, uint32_t n)
{
    /* Only the writer moves tail: the token holder, or a thread holding
     * tx_lock while nobody holds the token (send_now(), the outbox). */
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_relaxed);
    /* Pairs with the consumer's release store of head. */
    uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
    uint64_t to_end = r->size - (tail & r->mask), used = tail - head;
    uint64_t skip = frame_bytes(n) > to_end ? to_end : 0;

    return used <= r->size && skip + frame_bytes(n) <= r->size - used;
}

static uint32_t next_fragment(const struct shm_ring *r, size_t len, size_t done)
{
    return len - done > r->max_frag ? r->max_frag : (uint32_t)(len - done);
}

/*
 * Write the fragments of a message from *done on, as far as the ring has
 * room, without waiting.  Returns 1 when all of it is written, 0 when the
 * ring is full, -EPIPE when it is closed.  Token holder only.
 */
static int write_some(struct shm_ring *r, uint16_t type, uint64_t id, const uint8_t *p, size_t len,
                      size_t *done, bool *started)
{
    while (!*started || *done < len) {
        uint32_t n = next_fragment(r, len, *done);
        void *dst;

        if (shm_ring_is_closed(r))
            return -EPIPE;
        if (shm_ring_reserve(r, n, &dst) < 0)
            return 0; /* -EAGAIN; n <= max_frag rules out -EMSGSIZE */
        if (n)
            memcpy(dst, p + *done, n);
        shm_ring_commit(r, type, *done + n < len ? SHM_FRAME_MORE : 0, id, n);
        shm_ring_notify(r);
        *done += n;
        *started = true;
    }
    return 1;
}

static int ms_left(int64_t deadline, int cap)
{
    if (deadline == INT64_MAX)
        return cap;
    int64_t left = (deadline - shm_now_ns() + 999999) / 1000000;
    return left <= 0 ? 0 : left < cap ? (int)left : cap;
}

/*
 * Wait until an n-byte frame fits: spin for spin_ns, then sleep on the
 * ring's producer futex.  0, -EPIPE, or -ETIMEDOUT at the deadline.
 */
static int wait_space(struct shm_ring *r, uint32_t n, int64_t spin_ns, int64_t deadline)
{
    int64_t spin_until = shm_now_ns() + spin_ns;

    for (unsigned i = 1;; i++) {
        if (shm_ring_is_closed(r))
            return -EPIPE;
        if (ring_has_room(r, n))
            return 0;
        if ((i & 31) == 0 && shm_now_ns() >= spin_until)
            break;
        shm_cpu_relax();
    }
    for (;;) {
        int ms = ms_left(deadline, SPACE_NAP_MS);
        if (ms == 0)
            return -ETIMEDOUT;
        atomic_store_explicit(&r->ctl->producer_wait, 1, memory_order_relaxed);
        /*
         * Pairs with the fence after the consumer's release of head
         * (ring_release() in shm/ring.c): either it sees that we sleep and
         * wakes us, or the re-check below sees the head it released.
         */
        atomic_thread_fence(memory_order_seq_cst);
        bool room = ring_has_room(r, n) || shm_ring_is_closed(r);
        if (!room)
            shm_futex_wait(&r->ctl->producer_wait, 1, ms, true);
        atomic_store_explicit(&r->ctl->producer_wait, 0, memory_order_relaxed);
        if (shm_ring_is_closed(r))
            return -EPIPE;
        if (ring_has_room(r, n))
            return 0;
    }
}

/* A worker that stopped reading in the middle of a message we must not
 * leave half written: it gets no more frames. */
static void tx_abandon(struct pp_worker *w)
{
    fprintf(stderr, "pyproc %s: worker %d stopped reading its requests; stopping it\n",
            w->pool->name, w->index);
    shm_ring_close(&w->tx);
    shm_ring_close(&w->rx);
    pyproc__worker_kill(w); /* through the seam: a remote worker's pidfd is no pidfd */
}

/* Write a whole message, waiting for space until deadline; token holder. */
static int write_msg(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t len,
                     int64_t deadline)
{
    size_t done = 0;
    bool started = false;
    int rc;

    if (len > w->tx.max_msg)
        return -EMSGSIZE;
    while ((rc = write_some(&w->tx, type, id, p, len, &done, &started)) == 0) {
        rc = wait_space(&w->tx, next_fragment(&w->tx, len, done), w->pool->spin_ns, deadline);
        if (rc == -ETIMEDOUT && started)
            tx_abandon(w);
        if (rc < 0)
            return rc;
    }
    return rc < 0 ? rc : 0;
}

static bool outbox_blocks(const struct pp_worker *w)
{
    return w->outbox_head && w->outbox_head->started;
}

/* Write what the outbox holds, in order, as far as the ring has room.
 * Called with tx_lock held and the token free. */
static void outbox_pump(struct pp_worker *w)
{
    struct pp_outbox *e;

    while ((e = w->outbox_head)) {
        int rc = write_some(&w->tx, e->type, e->id, e->data, e->len, &e->sent, &e->started);
        if (rc == 0)
            return;
        /* Written, or the ring is closed and it never will be. */
        w->outbox_head = e->next;
        if (!w->outbox_head)
            w->outbox_tail = NULL;
        if (e->type == SHM_FRAME_CALLBACK_REPLY)
            /* Only a bound: no memory is handed over, so relaxed (the
             * partner is the increment in pyproc__callback_push()). */
            atomic_fetch_sub_explicit(&w->cb_queued, 1, memory_order_relaxed);
        else
            w->outbox_ctl--;
        free(e);
    }
}

static void deadline_ts(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}

static int token_take(struct pp_worker *w, int64_t deadline)
{
    struct timespec ts;

    pthread_mutex_lock(&w->tx_lock);
    for (;;) {
        if (!w->tx_busy) {
            outbox_pump(w);
            if (!outbox_blocks(w))
                break;
        }
        int64_t until = deadline;
        if (outbox_blocks(w) && until - shm_now_ns() > OUTBOX_RETRY_MS * 1000000LL)
            until = shm_now_ns() + OUTBOX_RETRY_MS * 1000000LL;
        if (until == INT64_MAX) {
            pthread_cond_wait(&w->tx_free, &w->tx_lock);
            continue;
        }
        deadline_ts(until, &ts);
        pthread_cond_timedwait(&w->tx_free, &w->tx_lock, &ts);
        if (shm_now_ns() >= deadline) {
            pthread_mutex_unlock(&w->tx_lock);
            return -ETIMEDOUT;
        }
    }
    w->tx_busy = true;
    pthread_mutex_unlock(&w->tx_lock);
    return 0;
}

static void token_give(struct pp_worker *w)
{
    pthread_mutex_lock(&w->tx_lock);
    w->tx_busy = false;
    outbox_pump(w);
    pthread_cond_broadcast(&w->tx_free);
    pthread_mutex_unlock(&w->tx_lock);
}

/*
 * The common case, a message of one fragment while nobody holds the token
 * and the ring has room: written under tx_lock alone, which is held for
 * the copy and nothing else (no wait).  Returns 1 when written, 0 when the
 * slow path must do it, -EPIPE when the ring is closed.
 */
static int send_now(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n)
{
    void *dst;
    int rc = 0;

    if (n > w->tx.max_frag)
        return 0;
    pthread_mutex_lock(&w->tx_lock);
    if (shm_ring_is_closed(&w->tx)) {
        rc = -EPIPE;
    } else if (!w->tx_busy && !w->outbox_head && shm_ring_reserve(&w->tx, (uint32_t)n, &dst) == 0) {
        if (n)
            memcpy(dst, p, n);
        shm_ring_commit(&w->tx, type, 0, id, (uint32_t)n);
        shm_ring_notify(&w->tx);
        rc = 1;
    }
    pthread_mutex_unlock(&w->tx_lock);
    return rc;
}

int pyproc__send_until(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n,
                       int64_t deadline)
{
    int err = send_now(w, type, id, p, n);

    if (err != 0)
        return err < 0 ? err : 0;
    err = token_take(w, deadline);

    if (err < 0)
        return err;
    err = write_msg(w, type, id, p, n, deadline);
    token_give(w);
    return err;
}

int pyproc__send_nowait(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n)
{
    return send_now(w, type, id, p, n);
}

int pyproc__send(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n)
{
    return pyproc__send_until(w, type, id, p, n, INT64_MAX);
}

/* Append a frame to w's outbox; with tx_lock held. */
static int outbox_add(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n)
{
    struct pp_outbox *e = malloc(sizeof *e + n);

    if (!e)
        return -ENOMEM;
    *e = (struct pp_outbox){.type = type, .id = id, .len = n};
    memcpy(e->data, p, n);
    if (w->outbox_tail)
        w->outbox_tail->next = e;
    else
        w->outbox_head = e;
    w->outbox_tail = e;
    return 0;
}

int pyproc__send_try(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n)
{
    size_t done = 0;
    bool started = false;
    int rc = -EAGAIN;

    if (n > w->tx.max_frag)
        return -EMSGSIZE;
    pthread_mutex_lock(&w->tx_lock);
    if (!w->tx_busy)
        outbox_pump(w);
    if (!w->tx_busy && !w->outbox_head) {
        rc = write_some(&w->tx, type, id, p, n, &done, &started);
        rc = rc == 1 ? 0 : rc == 0 ? -EAGAIN : rc;
    } else if (w->outbox_ctl < OUTBOX_CTL_MAX && !shm_ring_is_closed(&w->tx)) {
        /* Written when the token's holder lets it go. */
        rc = outbox_add(w, type, id, p, n);
        if (rc == 0)
            w->outbox_ctl++;
    }
    pthread_mutex_unlock(&w->tx_lock);
    return rc;
}

int pyproc__send_reply(struct pp_worker *w, uint64_t id, const void *p, size_t n)
{
    bool waiting;
    int rc;

    pthread_mutex_lock(&w->tx_lock);
    rc = outbox_add(w, SHM_FRAME_CALLBACK_REPLY, id, p, n);
    waiting = pyproc__outbox_pump_locked(w);
    pthread_mutex_unlock(&w->tx_lock);
    return rc < 0 ? rc : waiting ? -EAGAIN : 0;
}

bool pyproc__outbox_pump_locked(struct pp_worker *w)
{
    if (!w->tx_busy) {
        outbox_pump(w);
        /* A writer may wait for the part-written reply to go. */
        pthread_cond_broadcast(&w->tx_free);
    }
    return w->outbox_head != NULL;
}

bool pyproc__outbox_retry(struct pp_worker *w)
{
    pthread_mutex_lock(&w->tx_lock);
    bool waiting = pyproc__outbox_pump_locked(w);
    pthread_mutex_unlock(&w->tx_lock);
    return waiting;
}

/* ---- buffers' fds ---- */

/* One fd with the token that names it in the call and the buffer's
 * number, under which the worker keeps its mapping: a datagram of the
 * worker's socket. */
static int send_fd(int sock, uint64_t token, uint64_t buf_id, int fd)
{
    unsigned char body[16];

    shm_be64_put(body, token);
    shm_be64_put(body + 8, buf_id);
    return shm_fd_send(sock, body, sizeof body, fd, false);
}

int pyproc__send_buffers(struct pp_worker *w, const struct pyproc__attach *att)
{
    /* A remote worker (core.h, struct pp_remote) has no socket: fds do
     * not cross its transport. */
    if (att->n > 0 && w->fd_sock < 0)
        return -EOPNOTSUPP;
    for (int i = 0; i < att->n; i++) {
        int err = send_fd(w->fd_sock, att->token[i], att->buf[i]->id, att->buf[i]->fd);
        if (err < 0)
            return err;
    }
    return 0;
}

/* One datagram from w's socket into its table; 0, or -1 when none waits. */
static int recv_one(struct pp_worker *w)
{
    unsigned char tok[8];
    int fd, r = shm_fd_recv(w->fd_sock, tok, sizeof tok, &fd);

    if (r == -EBADMSG)
        return 0; /* not what a worker sends: dropped */
    if (r <= 0)
        return -1;
    if (w->nbuf_pending == (int)(sizeof w->buf_pending / sizeof w->buf_pending[0])) {
        close(w->buf_pending[0].fd); /* the oldest: a reply that never came */
        memmove(w->buf_pending, w->buf_pending + 1,
                (size_t)(w->nbuf_pending - 1) * sizeof w->buf_pending[0]);
        w->nbuf_pending--;
    }
    w->buf_pending[w->nbuf_pending].token = shm_be64_get(tok);
    w->buf_pending[w->nbuf_pending++].fd = fd;
    return 0;
}

int pyproc__recv_buffer(struct pp_worker *w, uint64_t token, int *fd)
{
    for (;;) {
        for (int i = 0; i < w->nbuf_pending; i++) {
            if (w->buf_pending[i].token == token) {
                *fd = w->buf_pending[i].fd;
                w->buf_pending[i] = w->buf_pending[--w->nbuf_pending];
                return 0;
            }
        }
        if (recv_one(w) < 0)
            return -ENOENT;
    }
}
