/*
 * The contended halves of struct pp_lock (see lock.h): spin a little for a
 * holder that is about to give the lock back, then announce a sleeper
 * (the word 2) and sleep on the word until the lock is had.
 */
#include "../shm/futex.h"
#include "lock.h"

/* Looks at the word before sleeping: the holders of these locks hold them
 * for a few instructions. */
#define LOCK_SPINS 64

void pyproc__lock_wait(struct pp_lock *l)
{
    for (int i = 0; i < LOCK_SPINS; i++) {
        uint32_t free_word = 0;
        shm_cpu_relax();
        if (atomic_load_explicit(&l->word, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->word, &free_word, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    /* Taken with 2, not 1: another may sleep as well, and our giving back
     * must wake it (a wake-up too many costs a system call, one too few a
     * hang). */
    while (atomic_exchange_explicit(&l->word, 2, memory_order_acquire) != 0)
        shm_futex_wait(&l->word, 2, -1, false);
}

void pyproc__lock_wake(struct pp_lock *l)
{
    shm_futex_wake(&l->word, 1, false);
}
