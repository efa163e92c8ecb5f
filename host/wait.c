/*
 * Waiting for a call: spin on the reply ring (draining it when no one else
 * does) for the pool's spin budget, then sleep, on the reply ring's own
 * futex when no other caller does (so the worker's answer wakes us
 * directly), else on the call's own futex while others drain.
 */
#include <errno.h>
#include <stdlib.h>

#include "../shm/futex.h"
#include "chan.h"
#include "drain.h"
#include "start.h"

/*
 * A ring sleeper looks again at least this often.  The doorbell is armed
 * only from SHM_AWAKE (shm_ring_doorbell_begin()), so no store lands over
 * a sleeper's word; the nap bounds what a wake-up lost some other way
 * would cost.
 */
#define RING_NAP_MS 100

static void drain_if_free(struct pp_worker *w)
{
    if (pyproc__chan_has_replies(w) && pthread_mutex_trylock(&w->rx_lock) == 0) {
        pyproc__drain(w);
        pthread_mutex_unlock(&w->rx_lock);
    }
}

/* The call's end is stored: an asynchronous call ends on the completion
 * queue, without CALL_DONE (pyproc__call_complete()). */
static bool call_ended(pyproc_call *c)
{
    /* Acquire pairs with the release stores in pyproc__call_signal() and
     * pyproc__call_complete(). */
    return pyproc__call_done(c) ||
           (c->done && atomic_load_explicit(&c->ended, memory_order_acquire));
}

/* Spin for the answer, draining the reply ring when nobody else does. */
static bool spin_for(pyproc_call *c, int64_t budget_ns)
{
    int64_t start = shm_now_ns(), until = start + budget_ns;

    for (unsigned i = 1;; i++) {
        drain_if_free(c->worker);
        if (call_ended(c))
            return true;
        shm_cpu_relax();
        if ((i & 31) == 0) {
            int64_t now = shm_now_ns();
            if (now >= until)
                return false;
            shm_spin_yield(now - start);
        }
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
    while (!pyproc__call_done(c)) {
        uint32_t s = CALL_PENDING;
        /* Acquire on failure: it read CALL_DONE, stored with release by
         * pyproc__call_signal() (C11 wants success at least as strong). */
        if (!atomic_compare_exchange_strong_explicit(&c->state, &s, CALL_RING_SLEEPING,
                                                     memory_order_acquire, memory_order_acquire))
            break; /* done */
        int ms = ms_until(deadline);
        int nap = ms < 0 || ms > RING_NAP_MS ? RING_NAP_MS : ms;
        /* After the fence in pyproc__chan_sleep_begin(), pyproc__call_done()
         * pairs with the one in pyproc__chan_wake_sleeper(): an answer another thread drained
         * meanwhile is seen here, or its drainer wakes us. */
        if (ms != 0 && pyproc__chan_sleep_begin(w) && !pyproc__call_done(c))
            pyproc__chan_sleep(w, nap);
        pyproc__chan_sleep_end(w); /* we poll again */
        s = CALL_RING_SLEEPING;
        /* Fails only when the call is done; pyproc__call_done() reads that again. */
        atomic_compare_exchange_strong_explicit(&c->state, &s, CALL_PENDING, memory_order_relaxed,
                                                memory_order_relaxed);
        pthread_mutex_lock(&w->rx_lock);
        unsigned got = pyproc__drain(w);
        pthread_mutex_unlock(&w->rx_lock);
        if (ms == 0 || pyproc__chan_closed(w))
            break;
        /* Woken with nothing to read: a stale wake-up, or a worker that
         * wakes us over and over to keep us busy.  Sleep on the call's own
         * futex instead, which the worker cannot reach. */
        if (got == 0 && !pyproc__call_done(c))
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
            return pyproc__call_done(c);
        shm_futex_wait(&c->state, CALL_SLEEPING, ms, false);
        if (pyproc__call_done(c))
            return true;
    }
}

bool pyproc__call_wait_state(pyproc_call *c, int64_t deadline)
{
    struct pp_worker *w = c->worker;
    int64_t spin = c->spin_ns;
    bool done;

    if (pyproc__call_done(c))
        return true;
    if (deadline != INT64_MAX && spin > deadline - shm_now_ns())
        spin = deadline - shm_now_ns();
    pyproc__poll_enter(w);
    done = spin > 0 && spin_for(c, spin);
    if (!done && !pyproc__chan_closed(w) && sleep_on_ring(c, deadline))
        done = pyproc__call_done(c);
    /* Answers that came while we polled go to the service thread by its
     * doorbell, not drained here: with several callers on a worker (4
     * threads with windows of 256 calls to 1 or 2 workers), waiters that
     * drained for the others on leaving made a slow mode (more contention
     * on the call table, fewer sleeps on the ring, under half the
     * throughput for a pool's whole life) far more frequent; the doorbell
     * costs one caller nothing measurable. */
    pyproc__poll_leave(w);
    return done || sleep_for(c, deadline);
}

bool pyproc__call_spin(pyproc_call *c)
{
    bool done;

    if (c->spin_ns <= 0)
        return call_ended(c);
    bool caught = atomic_load_explicit(&c->pool->spin_caught, memory_order_relaxed);
    pyproc__poll_enter(c->worker);
    if (caught)
        pyproc__async_expect(c->pool);
    done = spin_for(c, c->spin_ns);
    pyproc__poll_leave(c->worker);
    if (done != caught) /* stored only as it changes: the line stays shared */
        atomic_store_explicit(&c->pool->spin_caught, done, memory_order_relaxed);
    return done;
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : shm_now_ns() + (int64_t)timeout_ms * 1000000;
}

int pyproc__call_wait(pyproc_call *c, pyproc_msg **ret, int timeout_ms)
{
    /* Done already (a window of calls is mostly waited for after their
     * answers came): no clock, no wait. */
    if (!pyproc__call_done(c) && !pyproc__call_wait_state(c, deadline_of(timeout_ms)))
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
