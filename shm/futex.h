/*
 * Futex wait and wake on a 32-bit word.  The shared variants work across
 * processes on a MAP_SHARED mapping; the private ones are cheaper and serve
 * words that only one process touches.
 */
#ifndef PYPROC_SHM_FUTEX_H
#define PYPROC_SHM_FUTEX_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Sleep while *word == expected, at most timeout_ms (-1: forever).
 * Returns 0 when woken or when the word had already changed, -ETIMEDOUT,
 * or -EINTR.
 */
int shm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms, bool shared);

/* One word of shm_futex_waitv(): sleep while *word == expected. */
struct shm_futex_wait {
    _Atomic uint32_t *word;
    uint32_t expected;
    bool shared;
};

/* Most words one shm_futex_waitv() waits on (the kernel's bound). */
#define SHM_FUTEX_WAITV_MAX 128

/*
 * Sleep while every word holds its expected value, at most timeout_ms
 * (-1: forever): shm_futex_wait() on up to SHM_FUTEX_WAITV_MAX words at
 * once.  Returns 0 when woken or when a word had already changed,
 * -ETIMEDOUT, -EINTR, or -ENOSYS where the kernel (before 5.16) or the
 * platform lacks the call, having waited for nothing.
 */
int shm_futex_waitv(const struct shm_futex_wait *w, int n, int timeout_ms);

/* Wake up to n sleepers on word. */
void shm_futex_wake(_Atomic uint32_t *word, int n, bool shared);

/*
 * A spin that has found nothing for this long gives up its CPU now and
 * then (shm_spin_yield()): a peer that answers within a round trip is
 * caught before, and when more threads are runnable than there are CPUs,
 * the one it waits for may be queued behind it on this very CPU.
 */
#define SHM_SPIN_SOLO_NS 1000

/*
 * Called by spin loops where they read the clock (every few dozen rounds):
 * after SHM_SPIN_SOLO_NS of fruitless spinning, sched_yield(), which
 * costs a system call when nobody else wants the CPU and hands it over
 * when someone does.
 */
static inline void shm_spin_yield(int64_t spun_ns)
{
    if (spun_ns >= SHM_SPIN_SOLO_NS)
        sched_yield();
}

/* A pause instruction for spin loops. */
static inline void shm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

#endif
