/*
 * Waiting on several futex words at once (futex_waitv, Linux 5.16), in a
 * file of its own: a test may stand in for shm/futex.c's calls without
 * taking this one too.
 */
#include "futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int shm_futex_waitv(const struct shm_futex_wait *w, int n, int timeout_ms)
{
#ifdef SYS_futex_waitv
    struct futex_waitv v[SHM_FUTEX_WAITV_MAX];
    struct timespec ts, *tsp = NULL;

    if (n < 1 || n > SHM_FUTEX_WAITV_MAX)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        v[i] = (struct futex_waitv){.val = w[i].expected,
                                    .uaddr = (uint64_t)(uintptr_t)w[i].word,
                                    .flags = FUTEX_32 | (w[i].shared ? 0 : FUTEX_PRIVATE_FLAG)};
    /* futex_waitv takes an absolute time on the clock it is given. */
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        tsp = &ts;
    }
    if (syscall(SYS_futex_waitv, v, (unsigned)n, 0u, tsp, CLOCK_MONOTONIC) >= 0)
        return 0;
    /* EAGAIN: a word no longer held its value, which is a wake-up too. */
    return errno == EAGAIN ? 0 : -errno;
#else
    (void)w;
    (void)n;
    (void)timeout_ms;
    return -ENOSYS;
#endif
}
