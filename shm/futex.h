/*
 * Futex wait and wake on a 32-bit word.  The shared variants work across
 * processes on a MAP_SHARED mapping; the private ones are cheaper and serve
 * words that only one process touches.
 */
#ifndef PYPROC_SHM_FUTEX_H
#define PYPROC_SHM_FUTEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Sleep while *word == expected, at most timeout_ms (-1: forever).
 * Returns 0 when woken or when the word had already changed, -ETIMEDOUT,
 * or -EINTR.
 */
int shm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms, bool shared);

/* Wake up to n sleepers on word. */
void shm_futex_wake(_Atomic uint32_t *word, int n, bool shared);

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
