/*
 * A small mutex for leaf locks held for a few instructions and never
 * waited on with a condition variable (a worker's call table, taken twice
 * per call).  Uncontended, taking and giving it are one atomic each,
 * inline; glibc's mutex costs some fifty instructions more per pair for
 * the kinds and checks these locks never need.  A contended taker spins a
 * little, then sleeps on a private futex.
 *
 * The word: 0 free, 1 held, 2 held and a taker may sleep.  The taker's
 * acquire (compare-exchange or exchange) pairs with the giver's release
 * exchange, which wakes one sleeper when it saw 2.  Under ThreadSanitizer
 * the lock is announced as a mutex, so that it checks the lock order and
 * the data the lock guards as it does for a pthread mutex.
 *
 * Floor 0 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_LOCK_H
#define PYPROC_HOST_LOCK_H

#include <stdatomic.h>
#include <stdint.h>

#if defined(__SANITIZE_THREAD__)
#define PYPROC__LOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PYPROC__LOCK_TSAN 1
#endif
#endif
#ifdef PYPROC__LOCK_TSAN
#include <sanitizer/tsan_interface.h>
#endif

struct pp_lock {
    _Atomic uint32_t word;
};

/* The contended halves (lock.c). */
void pyproc__lock_wait(struct pp_lock *l);
void pyproc__lock_wake(struct pp_lock *l);

static inline void pyproc__lock_init(struct pp_lock *l)
{
    atomic_init(&l->word, 0);
#ifdef PYPROC__LOCK_TSAN
    __tsan_mutex_create(l, 0);
#endif
}

static inline void pyproc__lock_fini(struct pp_lock *l)
{
#ifdef PYPROC__LOCK_TSAN
    __tsan_mutex_destroy(l, 0);
#else
    (void)l;
#endif
}

static inline void pyproc__lock(struct pp_lock *l)
{
    uint32_t free_word = 0;

#ifdef PYPROC__LOCK_TSAN
    __tsan_mutex_pre_lock(l, 0);
#endif
    if (!atomic_compare_exchange_strong_explicit(&l->word, &free_word, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        pyproc__lock_wait(l);
#ifdef PYPROC__LOCK_TSAN
    __tsan_mutex_post_lock(l, 0, 0);
#endif
}

static inline void pyproc__unlock(struct pp_lock *l)
{
#ifdef PYPROC__LOCK_TSAN
    __tsan_mutex_pre_unlock(l, 0);
#endif
    if (atomic_exchange_explicit(&l->word, 0, memory_order_release) == 2)
        pyproc__lock_wake(l);
#ifdef PYPROC__LOCK_TSAN
    __tsan_mutex_post_unlock(l, 0);
#endif
}

#endif
