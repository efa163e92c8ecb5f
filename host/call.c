/*
 * Calls: encode, register, send, wait, complete.
 *
 * A call is registered in its worker's call table before its frame is
 * sent, so the answer always finds it.  Waiting spins on the reply ring
 * (draining it when no one else does) for the pool's spin budget, then
 * sleeps on the call's own futex while the service thread drains.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/futex.h"
#include "fmt.h"
#include "msg.h"
#include "pool.h"

static void call_unref(pyproc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (!c->taken)
        pyproc_msg_free(c->ret);
    free(c);
}

/* Give c a slot and an id in w's table.  Returns 0 or -ENOMEM. */
static int call_register(struct pp_worker *w, pyproc_call *c)
{
    uint32_t slot;

    pthread_mutex_lock(&w->calls_lock);
    if (w->free_head == UINT32_MAX) {
        uint32_t n = w->nslots ? w->nslots * 2 : 64;
        struct call_slot *s = realloc(w->slots, n * sizeof *s);
        if (!s) {
            pthread_mutex_unlock(&w->calls_lock);
            return -ENOMEM;
        }
        for (uint32_t i = w->nslots; i < n; i++)
            s[i] = (struct call_slot){NULL, 1, i + 1 < n ? i + 1 : UINT32_MAX};
        w->free_head = w->nslots;
        w->slots = s;
        w->nslots = n;
    }
    slot = w->free_head;
    w->free_head = w->slots[slot].next_free;
    w->slots[slot].call = c;
    c->id = ((uint64_t)w->slots[slot].gen << 32) | slot;
    w->in_flight++;
    pthread_mutex_unlock(&w->calls_lock);
    return 0;
}

/* Take c back out of the table if no answer has claimed it yet. */
static bool call_unregister(struct pp_worker *w, pyproc_call *c)
{
    uint32_t slot = (uint32_t)c->id;
    bool found = false;

    pthread_mutex_lock(&w->calls_lock);
    if (slot < w->nslots && w->slots[slot].call == c) {
        w->slots[slot].call = NULL;
        w->slots[slot].gen++;
        w->slots[slot].next_free = w->free_head;
        w->free_head = slot;
        w->in_flight--;
        found = true;
    }
    pthread_mutex_unlock(&w->calls_lock);
    return found;
}

void pyproc__call_complete(pyproc_call *c, int result, pyproc_msg *ret)
{
    c->result = result;
    c->ret = ret;
    /* Pairs with the acquire loads in pyproc__call_wait(). */
    if (atomic_exchange_explicit(&c->state, CALL_DONE, memory_order_acq_rel) ==
        CALL_SLEEPING)
        shm_futex_wake(&c->state, 1, false);
    call_unref(c); /* the table's reference */
}

void pyproc__fail_calls(struct pp_worker *w, int result, const char *why)
{
    pyproc_call **failed = NULL;
    uint32_t n = 0;

    /* Empty the table first, then complete outside the lock. */
    pthread_mutex_lock(&w->calls_lock);
    if (w->in_flight)
        failed = malloc(w->in_flight * sizeof *failed);
    for (uint32_t i = 0; failed && i < w->nslots; i++) {
        struct call_slot *s = &w->slots[i];
        if (!s->call)
            continue;
        failed[n++] = s->call;
        s->call = NULL;
        s->gen++;
        s->next_free = w->free_head;
        w->free_head = i;
    }
    w->in_flight -= n;
    pthread_mutex_unlock(&w->calls_lock);
    for (uint32_t i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        pyproc__msg_error(&m, "%s", why);
        pyproc__call_complete(failed[i], result, m);
    }
    free(failed);
}

static struct pp_worker *pick_worker(pyproc_pool *p, int ind)
{
    struct pp_worker *w = NULL;

    pthread_mutex_lock(&p->lock);
    if (ind < 0)
        ind = (int)(atomic_fetch_add(&p->next, 1) % (unsigned)p->nworkers);
    if (ind < p->nworkers)
        w = p->workers[ind];
    pthread_mutex_unlock(&p->lock);
    return w;
}

/* Register a call on w and send its frame. */
static int call_send(struct pp_worker *w, uint16_t type, const struct shm_buf *b,
                     pyproc_call **ret)
{
    pyproc_call *c = calloc(1, sizeof *c);
    int err;

    if (!c)
        return -ENOMEM;
    c->pool = w->pool;
    c->worker = w;
    c->index = w->index;
    c->fork_gen = w->pool->fork_gen;
    c->spin_ns = w->pool->spin_ns;
    atomic_init(&c->refs, 2);
    err = call_register(w, c);
    if (err < 0) {
        free(c);
        return err;
    }
    pthread_mutex_lock(&w->tx_lock);
    err = shm_ring_write(&w->tx, type, c->id, b->data, b->len, w->pool->spin_ns);
    pthread_mutex_unlock(&w->tx_lock);
    if (err < 0) {
        if (call_unregister(w, c)) {
            free(c);
            return err == -EPIPE ? PYPROC_EWORKER : err;
        }
        /* Failed by a dying worker meanwhile: the caller sees that. */
    }
    *ret = c;
    return 0;
}

int pyproc__call_send_raw(struct pp_worker *w, uint16_t type,
                          const struct shm_buf *payload, pyproc_call **ret)
{
    if (atomic_load(&w->dead))
        return PYPROC_EWORKER;
    return call_send(w, type, payload, ret);
}

/* One encoding buffer per thread, kept between calls. */
static _Thread_local struct shm_buf call_buf;

int pyproc__call_start(pyproc_pool *p, int ind, int kind, const char *ref,
                       const char *fmt, va_list ap, pyproc_call **ret)
{
    struct pyproc__args args;
    struct pyproc__va va;
    struct pp_worker *w;
    int err;

    err = pyproc__pool_check(p);
    if (err < 0)
        return err;
    if (!ref || !ret || ind < -1)
        return -EINVAL;
    w = pick_worker(p, ind);
    if (!w)
        return -EINVAL;
    if (atomic_load(&w->dead))
        return PYPROC_EWORKER;
    shm_buf_reset(&call_buf);
    call_buf.limit = p->max_msg;
    va_copy(va.ap, ap);
    pyproc__args_va(&args, &va);
    err = pyproc__fmt_encode_call(&call_buf, kind, ref, fmt, &args);
    va_end(va.ap);
    if (err < 0)
        return err;
    return call_send(w, SHM_FRAME_CALL, &call_buf, ret);
}

static bool is_done(pyproc_call *c)
{
    return atomic_load_explicit(&c->state, memory_order_acquire) == CALL_DONE;
}

/* Spin for the answer, draining the reply ring when nobody else does. */
static bool spin_for(pyproc_call *c, int64_t budget_ns)
{
    struct pp_worker *w = c->worker;
    int64_t until = shm_now_ns() + budget_ns;
    bool done = false;

    pyproc__poll_enter(w);
    for (unsigned i = 1;; i++) {
        if (!shm_ring_empty(&w->rx) && pthread_mutex_trylock(&w->rx_lock) == 0) {
            pyproc__drain(w);
            pthread_mutex_unlock(&w->rx_lock);
        }
        if ((done = is_done(c)))
            break;
        shm_cpu_relax();
        if ((i & 31) == 0 && shm_now_ns() >= until)
            break;
    }
    pyproc__poll_leave(w);
    return done;
}

/* Sleep until the call is done or the deadline (INT64_MAX: none) passes. */
static bool sleep_for(pyproc_call *c, int64_t deadline)
{
    for (;;) {
        uint32_t s = CALL_PENDING;
        if (!atomic_compare_exchange_strong(&c->state, &s, CALL_SLEEPING) &&
            s == CALL_DONE)
            return true;
        int ms = -1;
        if (deadline != INT64_MAX) {
            int64_t left = deadline - shm_now_ns();
            if (left <= 0)
                return is_done(c);
            ms = (int)((left + 999999) / 1000000);
        }
        shm_futex_wait(&c->state, CALL_SLEEPING, ms, false);
        if (is_done(c))
            return true;
    }
}

int pyproc__call_wait(pyproc_call *c, pyproc_msg **ret, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX
                                      : shm_now_ns() + (int64_t)timeout_ms * 1000000;
    int64_t spin = c->spin_ns;

    if (!is_done(c)) {
        if (timeout_ms >= 0 && spin > (int64_t)timeout_ms * 1000000)
            spin = (int64_t)timeout_ms * 1000000;
        if ((spin <= 0 || !spin_for(c, spin)) && !sleep_for(c, deadline))
            return -ETIMEDOUT;
    }
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
    err = pyproc__call_start(p, -1, 0, ref, fmt, ap, &c);
    if (err < 0)
        return err;
    if (ind)
        *ind = c->worker->index;
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
    return pyproc__call_start(p, ind, 0, ref, fmt, ap, call);
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
    int err = pyproc__call_start(p, ind, 0, ref, fmt, ap, &c);

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
    if (!c)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    return pyproc__call_wait(c, ret, timeout_ms);
}

PYPROC_EXPORT int pyproc_call_worker(pyproc_call *c)
{
    return c ? c->index : -EINVAL;
}

PYPROC_EXPORT void pyproc_call_free(pyproc_call *c)
{
    if (!c)
        return;
    if (!is_done(c) && call_unregister(c->worker, c))
        call_unref(c); /* the table's reference: no answer will come for it */
    call_unref(c);
}
