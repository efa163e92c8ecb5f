/*
 * Starting a call: pick a worker, encode the CALL, register the call in
 * the worker's table, send.  A call is registered before its frame is
 * sent, so the answer always finds it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fmt.h"
#include "freelist.h"
#include "msg.h"
#include "chan.h"
#include "mapq.h"
#include "drain.h"
#include "service.h"
#include "start.h"

/* One encoding buffer per thread, kept between calls and freed when the
 * thread exits (through call_buf_key's destructor). */
static _Thread_local struct shm_buf call_buf;
static pthread_key_t call_buf_key;
static pthread_once_t call_buf_once = PTHREAD_ONCE_INIT;
/*
 * Whether call_buf holds a call without arguments, of which kind, and
 * where its reference's bytes lie in it: the same call again is sent as
 * it is, without encoding it again (a caller mostly calls the same few
 * functions, and calls without arguments are the cheapest to spot).  The
 * reference is compared by its bytes, never by its pointer, which the
 * caller may have written anew.  This thread's, like call_buf.
 */
static _Thread_local struct {
    bool valid;
    int kind;
    size_t ref_off, ref_len;
} bare;

/*
 * A worker that should get no new call when another can take it: it is
 * being replaced (retiring), or it reached the pool's max_calls and waits
 * for its recycle.  Under pool->lock.
 */
static bool spent(pyproc_pool *p, struct pp_worker *w)
{
    /* retiring changes under pool->lock, which we hold; calls_started is
     * a hint (see core.h). */
    return atomic_load_explicit(&w->retiring, memory_order_relaxed) ||
           (p->max_calls &&
            atomic_load_explicit(&w->calls_started, memory_order_relaxed) >= p->max_calls);
}

/*
 * Round robin that prefers the least loaded: from the next worker in turn,
 * the first live one with no call in flight, else the live one with the
 * fewest (the first in turn among equals).  An idle pool, and one caller
 * at a time, go round robin exactly; a worker busy with a long call is
 * passed over while others have less to do.  Loads are hints read without
 * a lock: a pick that is one call off costs nothing but balance.  Spent
 * workers (spent()) are taken only when every live one is spent.  Under
 * pool->lock.
 */
static struct pp_worker *least_loaded(pyproc_pool *p)
{
    unsigned n = (unsigned)p->nworkers, start, at, best_load = UINT32_MAX;
    struct pp_worker *best = NULL, *w;
    bool best_spent = true;

    /* Kept below n (which only a resize changes), so that no division is
     * needed: this runs once per call. */
    start = p->next < n ? p->next : 0;
    p->next = start + 1 < n ? start + 1 : 0;
    if (p->dispatch_blind)
        return p->workers[start];
    at = start;
    for (unsigned i = 0; i < n; i++, at = at + 1 < n ? at + 1 : 0) {
        w = p->workers[at];
        /* A hint only (a dead pick fails its call the same way): relaxed;
         * the store is in pyproc__worker_reap(). */
        if (atomic_load_explicit(&w->dead, memory_order_relaxed))
            continue;
        uint32_t load = atomic_load_explicit(&w->in_flight, memory_order_relaxed);
        bool sp = spent(p, w);
        if ((best_spent && !sp) || (sp == best_spent && load < best_load)) {
            best = w;
            best_load = load;
            best_spent = sp;
            if (load == 0 && !sp)
                break;
        }
    }
    /* Every one dead: the next in turn fails its call as a dead one does. */
    return best ? best : p->workers[start];
}

struct pp_worker *pyproc__pick_worker(pyproc_pool *p, int ind)
{
    struct pp_worker *w = NULL;

    pthread_mutex_lock(&p->lock);
    if (ind < 0) {
        w = least_loaded(p);
    } else if (ind < p->nworkers) {
        w = p->workers[ind];
    }
    if (w)
        pyproc__worker_ref(w);
    pthread_mutex_unlock(&p->lock);
    return w;
}

/*
 * For a call pinned to ind: a worker being replaced takes none, so wait
 * until its replacement holds the slot (or it keeps it, the replacement
 * having failed, or it died).  Every change of either is broadcast on
 * pool->changed (recycle.c); the wait is bounded all the same, after
 * which the old worker, still serving, takes the call.
 */
static struct pp_worker *pick_pinned(pyproc_pool *p, int ind)
{
    struct timespec until = {0, 0};
    struct pp_worker *w;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        w = ind < p->nworkers ? p->workers[ind] : NULL;
        if (!w || !atomic_load_explicit(&w->retiring, memory_order_relaxed) ||
            atomic_load_explicit(&w->dead, memory_order_relaxed) || p->closing)
            break;
        if (!until.tv_sec) { /* the first wait: the clock only now */
            int64_t ns = (int64_t)(2 * p->start_timeout_ms + 1000) * 1000000;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += ns / 1000000000;
            until.tv_nsec += ns % 1000000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
        }
        if (pthread_cond_timedwait(&p->changed, &p->lock, &until) == ETIMEDOUT)
            break;
    }
    if (w)
        pyproc__worker_ref(w);
    pthread_mutex_unlock(&p->lock);
    return w;
}

/* A new call on w, which takes over the caller's reference to w. */
static pyproc_call *call_alloc(struct pp_worker *w, bool stream)
{
    pyproc_call *c = pyproc__fl_get(PYPROC__FL_CALL, sizeof *c);

    if (!c)
        return NULL;
    *c = (pyproc_call){0};
    c->pool = w->pool;
    c->worker = w;
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

/* A call that never reached the table, or left it again, and is not
 * returned: ours alone, never completed, and not counted.  The pool lives
 * here (no send failed because it went). */
static int call_not_started(pyproc_call *c, struct pp_slot_stats *st, int err)
{
    if (st)
        atomic_fetch_sub_explicit(&st->calls, 1, memory_order_relaxed);
    if (c->done) /* counted in call_send(), never pushed */
        atomic_fetch_sub_explicit(&c->pool->async_out, 1, memory_order_relaxed);
    c->done = NULL;
    atomic_store_explicit(&c->refs, 1, memory_order_relaxed);
    pyproc__call_unref(c);
    return err;
}

/* One more call on w; the one that reaches the pool's max_calls has the
 * service thread recycle w (recycle.c). */
static void count_toward_recycle(struct pp_worker *w)
{
    pyproc_pool *p = w->pool;

    if (atomic_fetch_add_explicit(&w->calls_started, 1, memory_order_relaxed) + 1 == p->max_calls) {
        /* Relaxed: the kick's eventfd write and read order it. */
        atomic_store_explicit(&p->recycle_check, true, memory_order_relaxed);
        pyproc__service_kick(p);
    }
}

/* Replies that came while we polled rang nothing, and the ring says
 * SHM_AWAKE until someone arms it: drain them and try again, or, when
 * another drainer holds the lock (it may have passed its mark already) or
 * the worker keeps writing, ring the doorbell ourselves, and the service
 * thread drains and arms. */
void pyproc__poll_leave_draining(struct pp_worker *w)
{
    for (int round = 0; pyproc__poll_leave_quiet(w); round++) {
        if (round == 2 || pthread_mutex_trylock(&w->rx_lock) != 0) {
            pyproc__chan_ring(w);
            return;
        }
        pyproc__drain(w);
        pthread_mutex_unlock(&w->rx_lock);
        pyproc__poll_enter(w);
    }
}

/*
 * Send, polling the worker's replies meanwhile when the send wakes it: a
 * worker woken on our CPU may run at once and answer before we are back
 * from the send, and
 * an answer written while nobody polls rings the doorbell, which costs a
 * wake-up of the service thread and a hand-over from it.  Polling, the
 * ring says SHM_AWAKE; an answer that came meanwhile is drained here.
 * Only around a send that cannot wait: while anyone polls, nobody else
 * drains, and a worker waiting for its replies to be taken would never
 * make the room a waiting send needs.
 */
static int send_polling(struct pp_worker *w, uint16_t type, uint64_t id, const struct shm_buf *b,
                        int64_t deadline, bool woke)
{
    int err;

    /* A worker awake already answers on its own CPU, after we are back;
     * polling then only costs a drain of whatever else it wrote. */
    if (!woke)
        return pyproc__send_until(w, type, id, b->data, b->len, deadline);
    pyproc__poll_enter(w);
    err = pyproc__send_nowait(w, type, id, b->data, b->len);
    pyproc__poll_leave_draining(w);
    if (err == 0) /* the slow path, which may wait */
        err = pyproc__send_until(w, type, id, b->data, b->len, deadline);
    return err < 0 ? err : 0;
}

/*
 * Spin for an asynchronous call's end in the caller (pyproc__call_spin())
 * only when it is the pool's one asynchronous call in flight: an event
 * loop that makes one call at a time then finds the pool's fd readable
 * when it polls, instead of sleeping until the service thread has taken
 * the answer and handed it over (two wake-ups in a row).  Calls started
 * in a burst do not wait for one another.
 */
static bool async_spin_pays(pyproc_pool *p)
{
    return atomic_load_explicit(&p->async_out, memory_order_relaxed) <= 1;
}

/*
 * A map's reader may hold w's polling (a lease, chan.h), and drains its
 * ring only as it reads: a call of anyone else's takes the lease back, so
 * that its answer rings the doorbell.  The fence orders our in_flight
 * store (pyproc__table_add()) before the look at the lease: see
 * ours_alone() in map.c.
 */
static void break_lease(struct pp_worker *w)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->lease_owner, memory_order_relaxed))
        pyproc__lease_break(w);
}

/*
 * Register a call on w and send its frame.  A call to a worker that is
 * dead (or dies while we send) still gets its handle, already ended with
 * PYPROC_EWORKER, so every call ends exactly once, the same way.  Takes
 * over the caller's reference to w, whatever it returns: the call keeps
 * it (one reference less to take and drop per call).
 */
static int call_send(struct pp_worker *w, uint16_t type, const struct shm_buf *b, bool stream,
                     pyproc_done_fn done, void *data, int64_t deadline, struct pp_chunk *chunk,
                     pyproc_call **ret)
{
    pyproc_call *c = call_alloc(w, stream);
    /* Only the application's calls count; the pool's requests do not. */
    struct pp_slot_stats *st = type == SHM_FRAME_CALL || type == SHM_FRAME_MAP_CHUNK ? w->stats
                                                                                     : NULL;
    bool sent = false;
    int err;

    if (!c) {
        pyproc__worker_unref(w);
        return -ENOMEM;
    }
    c->stats = st;
    if (chunk) {
        /* Before the table publishes the call: its end finds the chunk. */
        c->chunk = chunk;
        pyproc__chunk_ref(chunk);
    }
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
     * 2-CPU machine the waker's spinning keeps it off the one CPU that is
     * awake).  Sleep on the reply ring at once instead.
     */
    bool woke = pyproc__chan_peer_asleep(w);
    if (woke)
        c->spin_ns = 0;
    /* Counted before the frame goes: the pool may be freed while we wait
     * for ring space (the send then fails with -EPIPE), and its counters
     * with it, so nothing after a send that failed so touches them. */
    if (st)
        atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
    if (st && w->pool->max_calls)
        count_toward_recycle(w);
    if (done) /* see async_spin_pays() */
        atomic_fetch_add_explicit(&w->pool->async_out, 1, memory_order_relaxed);
    /* Relaxed: a worker that dies after this is caught by the send
     * (-EPIPE) or by the reaper's pyproc__fail_calls(). */
    if (atomic_load_explicit(&w->dead, memory_order_relaxed)) {
        fail_dead(w, c);
    } else if ((err = pyproc__table_add(w, c)) == -ESTALE) {
        /* Picked just before it left its slot, and it has finished its
         * last call since: the caller picks again (recycle.c). */
        return call_not_started(c, st, err);
    } else if (err == -EPIPE) {
        fail_dead(w, c); /* its calls were failed already */
    } else if (err < 0) {
        return call_not_started(c, st, err);
    } else {
        if (!chunk)
            break_lease(w);
        if (!(sent = (err = send_polling(w, type, c->id, b, deadline, woke)) == 0) &&
            pyproc__table_remove(w, c)) {
            if (err == -EPIPE)
                fail_dead(w, c);
            else /* out of the table again and not returned: ours alone */
                return call_not_started(c, st, err);
        }
    }
    /* Only after a send that went: one that failed because the pool was
     * freed meanwhile must not look at the pool again. */
    if (sent && done && !woke && async_spin_pays(w->pool))
        pyproc__call_spin(c);
    if (done)
        pyproc__call_unref(c); /* ours; the table's, or the queue's, remains */
    else if (ret)
        *ret = c;
    return 0;
}

int pyproc__call_send_raw(struct pp_worker *w, uint16_t type, const struct shm_buf *payload,
                          pyproc_call **ret)
{
    return pyproc__call_send_raw_until(w, type, payload, INT64_MAX, ret);
}

int pyproc__call_send_raw_until(struct pp_worker *w, uint16_t type, const struct shm_buf *payload,
                                int64_t deadline, pyproc_call **ret)
{
    if (!w)
        return -EINVAL;
    pyproc__worker_ref(w); /* the call's */
    return call_send(w, type, payload, false, NULL, NULL, deadline, NULL, ret);
}

int pyproc__chunk_send(struct pp_worker *w, const struct shm_buf *payload, struct pp_chunk *k,
                       pyproc_call **ret)
{
    pyproc__worker_ref(w); /* the call's */
    return call_send(w, SHM_FRAME_MAP_CHUNK, payload, false, NULL, NULL, INT64_MAX, k, ret);
}

static void call_buf_free(void *b)
{
    bare.valid = false;
    shm_buf_free(b);
}

/* Whether call_buf holds the call that kind, ref and no arguments make,
 * and it fits the pool's limit. */
static bool bare_again(pyproc_pool *p, int kind, const char *ref, const char *fmt)
{
    return bare.valid && (!fmt || !*fmt) && bare.kind == kind && call_buf.len <= p->max_msg &&
           strncmp(call_buf.data + bare.ref_off, ref, bare.ref_len) == 0 && !ref[bare.ref_len];
}

/* Note what call_buf holds after an encoding that returned err. */
static void bare_note(int kind, const char *ref, const char *fmt, int err)
{
    bare.valid = err == 0 && (!fmt || !*fmt) && kind >= 0;
    if (bare.valid) {
        /* [kind, ref, [], {}]: the reference's bytes end two bytes
         * before the end. */
        bare.kind = kind;
        bare.ref_len = strlen(ref);
        bare.ref_off = call_buf.len - 2 - bare.ref_len;
    }
}

static void call_buf_key_init(void)
{
    pthread_key_create(&call_buf_key, call_buf_free);
}

static _Thread_local struct pyproc__attach call_attach;

/* Encode into call_buf, which does not hold this call already. */
static int encode_anew(pyproc_pool *p, int kind, const char *ref, const char *fmt, va_list ap,
                       bool attach)
{
    struct pyproc__args args;
    struct pyproc__va va;
    int err;

    if (!call_buf.data) {
        /* This thread's first call: have its buffer freed when it exits. */
        pthread_once(&call_buf_once, call_buf_key_init);
        pthread_setspecific(call_buf_key, &call_buf);
    }
    shm_buf_reset(&call_buf);
    call_buf.limit = p->max_msg;
    va_copy(va.ap, ap);
    pyproc__args_va(&args, &va);
    if (attach)
        args.attach = &call_attach;
    err = pyproc__fmt_encode_call(&call_buf, kind, ref, fmt, &args);
    va_end(va.ap);
    bare_note(kind, ref, fmt, err);
    return err;
}

int pyproc__encode_call(pyproc_pool *p, int kind, const char *ref, const char *fmt, va_list ap,
                        struct shm_buf **ret, struct pyproc__attach **att)
{
    if (!ref)
        return -EINVAL;
    if (att) {
        call_attach.pool_id = p->id;
        call_attach.n = 0;
        *att = &call_attach;
    }
    *ret = &call_buf;
    return bare_again(p, kind, ref, fmt) ? 0 : encode_anew(p, kind, ref, fmt, ap, att != NULL);
}

static int call_start(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                      va_list ap, pyproc_done_fn done, void *data, pyproc_call **ret)
{
    struct pyproc__attach *att;
    struct shm_buf *b;
    struct pp_worker *w;
    int err;

    if (!ref || (!ret && !done) || ind < -1)
        return -EINVAL;
    err = pyproc__encode_call(p, kind, ref, fmt, ap, &b, &att);
    if (err < 0)
        return err;
    /* Again when the worker picked left its slot meanwhile (-ESTALE);
     * each pick reads the slots anew, so this ends once one holds. */
    do {
        w = ind < 0 ? pyproc__pick_worker(p, -1) : pick_pinned(p, ind);
        if (!w)
            return -EINVAL;
        /* The buffers' fds go first, so that they wait for the worker
         * when it reads the call.  A worker that is gone fails the call
         * below, as any call to it fails. */
        if (att->n && (err = pyproc__send_buffers(w, att)) < 0 && err != -EPIPE) {
            pyproc__worker_unref(w);
            return err;
        }
        /* Our reference to w goes to the call. */
        err = call_send(w, SHM_FRAME_CALL, b, kind == SHM_CALL_GEN, done, data, INT64_MAX, NULL,
                        ret);
    } while (err == -ESTALE);
    return err;
}

/*
 * A call is counted in pool->starting from before it checks that the pool
 * takes work until it is in its worker's table, so pyproc_drain() never
 * misses one that passed the check: seq_cst, pairing with the store of
 * draining and the load of starting there (one of the two sees the
 * other's).
 */
int pyproc__work_begin(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);

    if (err < 0)
        return err;
    atomic_fetch_add_explicit(&p->starting, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&p->draining, memory_order_seq_cst)) {
        pyproc__work_end(p);
        return -ESHUTDOWN;
    }
    return 0;
}

void pyproc__work_end(pyproc_pool *p)
{
    atomic_fetch_sub_explicit(&p->starting, 1, memory_order_release);
}

int pyproc__call_start_ex(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                          va_list ap, pyproc_done_fn done, void *data, pyproc_call **ret)
{
    int err = pyproc__work_begin(p);

    if (err < 0)
        return err;
    err = call_start(p, ind, kind, ref, fmt, ap, done, data, ret);
    pyproc__work_end(p);
    return err;
}

int pyproc__call_start(pyproc_pool *p, int ind, int kind, const char *ref, const char *fmt,
                       va_list ap, pyproc_call **ret)
{
    return pyproc__call_start_ex(p, ind, kind, ref, fmt, ap, NULL, NULL, ret);
}
