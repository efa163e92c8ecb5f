/*
 * Calls: encode, register, send, wait, complete.
 *
 * A call is registered in its worker's call table before its frame is
 * sent, so the answer always finds it.  Waiting spins on the reply ring
 * (draining it when no one else does) for the pool's spin budget, then
 * sleeps on the call's own futex while the service thread drains.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/futex.h"
#include "fmt.h"
#include "msg.h"
#include "wire.h"
#include "pool.h"

void pyproc__call_unref(pyproc_call *c)
{
    /* acq_rel: see refs in pool.h. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (!c->taken)
        pyproc_msg_free(c->ret);
    if (c->is_stream) {
        pyproc__stream_free_items(c);
        pthread_mutex_destroy(&c->qlock);
    }
    pyproc__worker_unref(c->worker);
    free(c);
}

/*
 * Wake the caller that sleeps on w's reply ring for its call.  The word it
 * sleeps on must change, or a wake-up sent before it is in FUTEX_WAIT is
 * lost: take it back to SHM_AWAKE, as a producer's shm_ring_notify() does.
 * Only SHM_SLEEP_FUTEX is taken back; SHM_SLEEP_DOORBELL belongs to the
 * service thread's epoll.  Not on the fast path: a sleeper woken by the
 * worker drains its own answer after taking its state back to pending.
 */
static void ring_sleeper_wake(struct pp_worker *w)
{
    _Atomic uint32_t *word = &w->rx.ctl->consumer_wait;
    uint32_t s = SHM_SLEEP_FUTEX;

    /*
     * Pairs with the fence in shm_ring_sleep_begin(), which sleep_on_ring()
     * follows with a load of its call's state: either the sleeper sees
     * CALL_DONE (stored before this fence) and does not sleep, or this
     * exchange sees its SHM_SLEEP_FUTEX.
     */
    atomic_thread_fence(memory_order_seq_cst);
    atomic_compare_exchange_strong_explicit(word, &s, SHM_AWAKE, memory_order_relaxed,
                                            memory_order_relaxed);
    /* Even when the word was not ours any more: a doorbell store may have
     * landed over it after the sleeper went to sleep (see RING_NAP_MS). */
    shm_futex_wake(word, INT32_MAX, true);
}

void pyproc__call_signal(pyproc_call *c)
{
    /* Release pairs with the acquire loads in is_done(); see
     * ring_sleeper_wake() for the fence that follows. */
    uint32_t was = atomic_exchange_explicit(&c->state, CALL_DONE, memory_order_acq_rel);

    if (was == CALL_SLEEPING)
        shm_futex_wake(&c->state, 1, false);
    else if (was == CALL_RING_SLEEPING)
        ring_sleeper_wake(c->worker);
}

/* Store the end of a call (or stream) and drop the table's reference. */
void pyproc__call_complete(pyproc_call *c, int result, pyproc_msg *ret)
{
    /* Relaxed: a stage seen late only changes which error is reported;
     * the partner is the compare-exchange in expire.c. */
    if (atomic_load_explicit(&c->expiry, memory_order_relaxed) != EXPIRY_NONE && result < 0 &&
        result != -ETIMEDOUT) {
        /* Ended because it ran too long, whatever the worker said. */
        pyproc_msg *why = NULL;
        pyproc__msg_error(&why, "the call ran past the pool's call timeout%s%s",
                          ret && pyproc_msg_error(ret) ? ": " : "",
                          ret && pyproc_msg_error(ret) ? pyproc_msg_error(ret) : "");
        pyproc_msg_free(ret);
        ret = why;
        result = -ETIMEDOUT;
    }
    if (result < 0 && c->stats)
        atomic_fetch_add_explicit(&c->stats->errors, 1, memory_order_relaxed);
    if (c->is_stream)
        pthread_mutex_lock(&c->qlock);
    c->result = result;
    c->ret = ret;
    atomic_store_explicit(&c->ended, true, memory_order_release);
    if (c->is_stream)
        pthread_mutex_unlock(&c->qlock);
    if (c->done) {
        pyproc__async_push(c); /* takes over the table's reference */
        return;
    }
    pyproc__call_signal(c);
    pyproc__call_unref(c);
}

void pyproc__fail_calls(struct pp_worker *w, int result, const char *why)
{
    pyproc_call **failed;
    int n = pyproc__table_take_all(w, &failed);

    for (int i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        pyproc__msg_error(&m, "%s", why);
        pyproc__call_complete(failed[i], result, m);
    }
    free(failed);
}

struct pp_worker *pyproc__pick_worker(pyproc_pool *p, int ind)
{
    struct pp_worker *w = NULL;

    pthread_mutex_lock(&p->lock);
    if (ind < 0) {
        /* Round robin, passing over dead workers while others live. */
        for (int tries = 0; tries < p->nworkers; tries++) {
            unsigned next = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
            w = p->workers[next % (unsigned)p->nworkers];
            /* A hint only (a dead pick fails its call the same way):
             * relaxed; the store is in pyproc__worker_reap(). */
            if (!atomic_load_explicit(&w->dead, memory_order_relaxed))
                break;
        }
    } else if (ind < p->nworkers) {
        w = p->workers[ind];
    }
    if (w)
        pyproc__worker_ref(w);
    pthread_mutex_unlock(&p->lock);
    return w;
}

/* A worker that answered within this long is busy, not idle. */
#define IDLE_NS (1000 * 1000LL)

static pyproc_call *call_alloc(struct pp_worker *w, bool stream)
{
    pyproc_call *c = calloc(1, sizeof *c);

    if (!c)
        return NULL;
    c->pool = w->pool;
    c->worker = w;
    pyproc__worker_ref(w);
    c->index = w->index;
    c->fork_gen = w->pool->fork_gen;
    c->spin_ns = w->pool->spin_ns;
    c->is_stream = stream;
    if (w->pool->call_timeout_ns)
        c->deadline_ns = shm_now_ns() + w->pool->call_timeout_ns;
    if (stream)
        pthread_mutex_init(&c->qlock, NULL);
    atomic_init(&c->refs, 2); /* the caller's handle and the table */
    return c;
}

/* End c at once with the error of a worker that is not running. */
static void fail_dead(struct pp_worker *w, pyproc_call *c)
{
    pyproc_msg *m = NULL;

    pthread_mutex_lock(&w->pool->lock);
    if (w->death)
        pyproc__msg_error(&m, "%s", w->death);
    else
        pyproc__msg_error(&m, "worker %d is not running", w->index);
    pthread_mutex_unlock(&w->pool->lock);
    pyproc__call_complete(c, PYPROC_EWORKER, m);
}

/*
 * Register a call on w and send its frame.  A call to a worker that is
 * dead (or dies while we send) still gets its handle, already ended with
 * PYPROC_EWORKER, so every call ends exactly once, the same way.
 */
static int call_send(struct pp_worker *w, uint16_t type, const struct shm_buf *b, bool stream,
                     pyproc_done_fn done, void *data, int64_t deadline, pyproc_call **ret)
{
    pyproc_call *c = call_alloc(w, stream);
    /* Only the application's calls count; the pool's requests do not. */
    struct pp_slot_stats *st = type == SHM_FRAME_CALL ? w->stats : NULL;
    int err;

    if (!c)
        return -ENOMEM;
    c->stats = st;
    c->done = done;
    c->done_data = data;
    /*
     * An asynchronous call has no handle: the table's reference and, until
     * the end of this function, ours, since an answer or the worker's death
     * may complete and free it as soon as it is in the table.  Not yet
     * shared with anyone: relaxed.
     */
    if (done)
        atomic_store_explicit(&c->refs, 2, memory_order_relaxed);
    /*
     * A worker asleep when we send takes a wake-up to answer: spinning
     * meanwhile only burns the CPU it could have been woken on (on a
     * 2-CPU machine the waker's spinning pushes it to an idle, halted
     * one).  Sleep on the reply ring at once instead, unless the worker
     * answered a moment ago: then calls come back to back, and spinning
     * brings both sides back to answering without sleeping.
     */
    if (atomic_load_explicit(&w->tx.ctl->consumer_wait, memory_order_relaxed) != SHM_AWAKE &&
        shm_now_ns() - atomic_load_explicit(&w->last_answer_ns, memory_order_relaxed) > IDLE_NS)
        c->spin_ns = 0;
    /* Relaxed: a worker that dies after this is caught by the send
     * (-EPIPE) or by the reaper's pyproc__fail_calls(). */
    if (atomic_load_explicit(&w->dead, memory_order_relaxed)) {
        fail_dead(w, c);
    } else if ((err = pyproc__table_add(w, c)) == -EPIPE) {
        fail_dead(w, c); /* its calls were failed already */
    } else if (err < 0) {
        c->done = NULL;
        atomic_store_explicit(&c->refs, 1, memory_order_relaxed); /* never shared */
        pyproc__call_unref(c);
        return err;
    } else if ((err = pyproc__send_until(w, type, c->id, b->data, b->len, deadline)) < 0 &&
               pyproc__table_remove(w, c)) {
        if (err == -EPIPE) {
            fail_dead(w, c);
        } else {
            c->done = NULL;
            /* Out of the table again and not returned: ours alone. */
            atomic_store_explicit(&c->refs, 1, memory_order_relaxed);
            pyproc__call_unref(c);
            return err;
        }
    }
    if (st)
        atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
    if (done)
        pyproc__call_unref(c); /* ours; the table's, or the queue's, remains */
    else if (ret)
        *ret = c;
    return 0;
}

int pyproc__call_send_raw(struct pp_worker *w, uint16_t type,
                          const struct shm_buf *payload, pyproc_call **ret)
{
    return pyproc__call_send_raw_until(w, type, payload, INT64_MAX, ret);
}

int pyproc__call_send_raw_until(struct pp_worker *w, uint16_t type,
                                const struct shm_buf *payload, int64_t deadline,
                                pyproc_call **ret)
{
    if (!w)
        return -EINVAL;
    return call_send(w, type, payload, false, NULL, NULL, deadline, ret);
}

/* One encoding buffer per thread, kept between calls and freed when the
 * thread exits (through call_buf_key's destructor). */
static _Thread_local struct shm_buf call_buf;
static pthread_key_t call_buf_key;
static pthread_once_t call_buf_once = PTHREAD_ONCE_INIT;

static void call_buf_free(void *b)
{
    shm_buf_free(b);
}

static void call_buf_key_init(void)
{
    pthread_key_create(&call_buf_key, call_buf_free);
}

int pyproc__encode_call(pyproc_pool *p, int kind, const char *ref, const char *fmt,
                        va_list ap, struct shm_buf **ret)
{
    struct pyproc__args args;
    struct pyproc__va va;
    int err;

    if (!ref)
        return -EINVAL;
    if (!call_buf.data) {
        /* This thread's first call: have its buffer freed when it exits. */
        pthread_once(&call_buf_once, call_buf_key_init);
        pthread_setspecific(call_buf_key, &call_buf);
    }
    shm_buf_reset(&call_buf);
    call_buf.limit = p->max_msg;
    va_copy(va.ap, ap);
    pyproc__args_va(&args, &va);
    err = pyproc__fmt_encode_call(&call_buf, kind, ref, fmt, &args);
    va_end(va.ap);
    *ret = &call_buf;
    return err;
}

int pyproc__call_start_ex(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                          va_list ap, pyproc_done_fn done, void *data, pyproc_call **ret)
{
    struct shm_buf *b;
    struct pp_worker *w;
    int err;

    err = pyproc__pool_check(p);
    if (err < 0)
        return err;
    if (!ref || (!ret && !done) || ind < -1)
        return -EINVAL;
    err = pyproc__encode_call(p, kind, ref, fmt, ap, &b);
    if (err < 0)
        return err;
    w = pyproc__pick_worker(p, ind);
    if (!w)
        return -EINVAL;
    err = call_send(w, SHM_FRAME_CALL, b, kind == SHM_CALL_GEN, done, data, INT64_MAX, ret);
    pyproc__worker_unref(w);
    return err;
}

int pyproc__call_start(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                       va_list ap, pyproc_call **ret)
{
    return pyproc__call_start_ex(p, ind, kind, ref, fmt, ap, NULL, NULL, ret);
}

static bool is_done(pyproc_call *c)
{
    return atomic_load_explicit(&c->state, memory_order_acquire) == CALL_DONE;
}

static void drain_if_free(struct pp_worker *w)
{
    if (!shm_ring_empty(&w->rx) && pthread_mutex_trylock(&w->rx_lock) == 0) {
        pyproc__drain(w);
        pthread_mutex_unlock(&w->rx_lock);
    }
}

/* Spin for the answer, draining the reply ring when nobody else does. */
static bool spin_for(pyproc_call *c, int64_t budget_ns)
{
    int64_t until = shm_now_ns() + budget_ns;

    for (unsigned i = 1;; i++) {
        drain_if_free(c->worker);
        if (is_done(c))
            return true;
        shm_cpu_relax();
        if ((i & 31) == 0 && shm_now_ns() >= until)
            return false;
    }
}

static int ms_until(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t left = deadline - shm_now_ns();
    return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

/*
 * A ring sleeper looks again at least this often: the ring's word is also
 * armed for the doorbell by the last poller to leave and by the service
 * thread (drain.c, service.c), and such a store can land over ours after
 * we checked, leaving our answer to a doorbell nobody acts on while we
 * poll.  This bounds what such a race costs.
 */
#define RING_NAP_MS 100

/*
 * Sleep on the reply ring's own futex, so the worker's answer wakes us
 * directly rather than the service thread, which would then wake us: one
 * wake-up instead of two on an idle pool.  One caller per worker at a time
 * takes this role; a completion by another drainer takes the ring's word
 * back to SHM_AWAKE and wakes it (ring_sleeper_wake()), so the wake-up is
 * not lost when it comes before our FUTEX_WAIT.  Returns false when the
 * role was taken.
 */
static bool sleep_on_ring(pyproc_call *c, int64_t deadline)
{
    struct pp_worker *w = c->worker;

    /* The role guards no data: relaxed, here and at the store below. */
    if (atomic_exchange_explicit(&w->ring_sleeper, true, memory_order_relaxed))
        return false;
    while (!is_done(c)) {
        uint32_t s = CALL_PENDING;
        /* Acquire on failure: it read CALL_DONE, stored with release by
         * pyproc__call_signal() (C11 wants success at least as strong). */
        if (!atomic_compare_exchange_strong_explicit(&c->state, &s, CALL_RING_SLEEPING,
                                                     memory_order_acquire, memory_order_acquire))
            break; /* done */
        int ms = ms_until(deadline);
        int nap = ms < 0 || ms > RING_NAP_MS ? RING_NAP_MS : ms;
        /* After the fence in shm_ring_sleep_begin(), is_done() pairs with
         * the one in ring_sleeper_wake(): an answer another thread drained
         * meanwhile is seen here, or its drainer wakes us. */
        if (ms != 0 && !shm_ring_sleep_begin(&w->rx, SHM_SLEEP_FUTEX) && !is_done(c))
            shm_futex_wait(&w->rx.ctl->consumer_wait, SHM_SLEEP_FUTEX, nap, true);
        shm_ring_sleep_end(&w->rx); /* we poll again */
        s = CALL_RING_SLEEPING;
        /* Fails only when the call is done; is_done() reads that again. */
        atomic_compare_exchange_strong_explicit(&c->state, &s, CALL_PENDING,
                                                memory_order_relaxed, memory_order_relaxed);
        pthread_mutex_lock(&w->rx_lock);
        unsigned got = pyproc__drain(w);
        pthread_mutex_unlock(&w->rx_lock);
        if (ms == 0 || shm_ring_is_closed(&w->rx))
            break;
        /* Woken with nothing to read: a stale wake-up, or a worker that
         * wakes us over and over to keep us busy.  Sleep on the call's own
         * futex instead, which the worker cannot reach. */
        if (got == 0 && !is_done(c))
            break;
    }
    atomic_store_explicit(&w->ring_sleeper, false, memory_order_relaxed);
    return true;
}

/* Sleep on the call's futex while others drain. */
static bool sleep_for(pyproc_call *c, int64_t deadline)
{
    for (;;) {
        uint32_t s = CALL_PENDING;
        /* Acquire on failure pairs with the release exchange in
         * pyproc__call_signal(); the futex syscall orders the rest. */
        if (!atomic_compare_exchange_strong_explicit(&c->state, &s, CALL_SLEEPING,
                                                     memory_order_acquire, memory_order_acquire) &&
            s == CALL_DONE)
            return true;
        int ms = ms_until(deadline);
        if (ms == 0)
            return is_done(c);
        shm_futex_wait(&c->state, CALL_SLEEPING, ms, false);
        if (is_done(c))
            return true;
    }
}

bool pyproc__call_wait_state(pyproc_call *c, int64_t deadline)
{
    struct pp_worker *w = c->worker;
    int64_t spin = c->spin_ns;
    bool done;

    if (is_done(c))
        return true;
    if (deadline != INT64_MAX && spin > deadline - shm_now_ns())
        spin = deadline - shm_now_ns();
    pyproc__poll_enter(w);
    done = spin > 0 && spin_for(c, spin);
    if (!done && !shm_ring_is_closed(&w->rx) && sleep_on_ring(c, deadline))
        done = is_done(c);
    pyproc__poll_leave(w);
    return done || sleep_for(c, deadline);
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : shm_now_ns() + (int64_t)timeout_ms * 1000000;
}

int pyproc__call_wait(pyproc_call *c, pyproc_msg **ret, int timeout_ms)
{
    if (!pyproc__call_wait_state(c, deadline_of(timeout_ms)))
        return -ETIMEDOUT;
    if (c->taken)
        return -EALREADY;
    c->taken = true;
    if (ret)
        *ret = c->ret;
    else
        pyproc_msg_free(c->ret);
    return c->result;
}

/* ---- public ---- */

PYPROC_EXPORT int pyproc_track_funcv(pyproc_pool *p, int *ind, pyproc_call **call,
                                     const char *ref, const char *fmt, va_list ap)
{
    pyproc_call *c;
    int err;

    if (!call)
        return -EINVAL;
    err = pyproc__call_start(p, -1, SHM_CALL_FUNC, ref, fmt, ap, &c);
    if (err < 0)
        return err;
    if (ind)
        *ind = c->index;
    *call = c;
    return 0;
}

PYPROC_EXPORT int pyproc_track_func(pyproc_pool *p, int *ind, pyproc_call **call,
                                    const char *ref, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_track_funcv(p, ind, call, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_ind_callv(pyproc_pool *p, int ind, pyproc_call **call,
                                   const char *ref, const char *fmt, va_list ap)
{
    if (ind < 0 || !call)
        return -EINVAL;
    return pyproc__call_start(p, ind, SHM_CALL_FUNC, ref, fmt, ap, call);
}

PYPROC_EXPORT int pyproc_ind_call(pyproc_pool *p, int ind, pyproc_call **call,
                                  const char *ref, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_ind_callv(p, ind, call, ref, fmt, ap);
    va_end(ap);
    return err;
}

/* Start on worker ind (-1: next) and wait. */
static int call_and_wait(pyproc_pool *p, int ind, const char *ref, pyproc_msg **ret,
                         const char *fmt, va_list ap)
{
    pyproc_call *c;
    int err = pyproc__call_start(p, ind, SHM_CALL_FUNC, ref, fmt, ap, &c);

    if (err < 0)
        return err;
    err = pyproc__call_wait(c, ret, -1);
    pyproc_call_free(c);
    return err;
}

PYPROC_EXPORT int pyproc_funcv(pyproc_pool *p, const char *ref, pyproc_msg **ret,
                               const char *fmt, va_list ap)
{
    return call_and_wait(p, -1, ref, ret, fmt, ap);
}

PYPROC_EXPORT int pyproc_func(pyproc_pool *p, const char *ref, pyproc_msg **ret,
                              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = call_and_wait(p, -1, ref, ret, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_ind_funcv(pyproc_pool *p, int ind, const char *ref,
                                   pyproc_msg **ret, const char *fmt, va_list ap)
{
    if (ind < 0)
        return -EINVAL;
    return call_and_wait(p, ind, ref, ret, fmt, ap);
}

PYPROC_EXPORT int pyproc_ind_func(pyproc_pool *p, int ind, const char *ref,
                                  pyproc_msg **ret, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_ind_funcv(p, ind, ref, ret, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_wait(pyproc_call *c, pyproc_msg **ret, int timeout_ms)
{
    if (!c || c->is_stream)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    return pyproc__call_wait(c, ret, timeout_ms);
}

PYPROC_EXPORT int pyproc_call_worker(pyproc_call *c)
{
    return c ? c->index : -EINVAL;
}

/*
 * A forked child's copy of a call: its worker, table and rings are the
 * parent's, live, so only the child's private memory is released.
 */
static void call_forget(pyproc_call *c)
{
    if (!c->taken)
        pyproc_msg_free(c->ret);
    if (c->is_stream)
        pyproc__stream_free_items(c);
    free(c);
}

PYPROC_EXPORT void pyproc_call_free(pyproc_call *c)
{
    if (!c)
        return;
    if (c->fork_gen != pyproc__fork_gen()) {
        call_forget(c);
        return;
    }
    if (!is_done(c) || (c->is_stream && !atomic_load_explicit(&c->ended, memory_order_acquire))) {
        if (pyproc__table_remove(c->worker, c)) {
            /* No answer will reach it now; a stream's generator is closed,
             * through the stop table, or, when that is full, a CANCEL
             * frame (this is an application thread: it may wait). */
            if (c->is_stream &&
                pyproc__worker_stop_call(c->worker, c->id, SHM_INTERRUPT_CANCEL) < 0) {
                char nil[PYPROC__WIRE_SMALL];
                pyproc__send(c->worker, SHM_FRAME_CANCEL, c->id, nil, pyproc__wire_nil(nil));
            }
            pyproc__call_unref(c);
        }
    }
    pyproc__call_unref(c);
}
