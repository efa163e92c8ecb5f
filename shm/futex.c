#include "futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int shm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms, bool shared)
{
    int op = shared ? FUTEX_WAIT : FUTEX_WAIT | FUTEX_PRIVATE_FLAG;
    struct timespec ts, *tsp = NULL;

    /* FUTEX_WAIT takes a relative timeout, so no clock is read here. */
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (syscall(SYS_futex, (void *)word, op, expected, tsp, NULL, 0) == 0)
        return 0;
    /* EAGAIN: the word no longer held `expected`, which is a wake-up too. */
    if (errno == EAGAIN)
        return 0;
    return -errno;
}

void shm_futex_wake(_Atomic uint32_t *word, int n, bool shared)
{
    int op = shared ? FUTEX_WAKE : FUTEX_WAKE | FUTEX_PRIVATE_FLAG;

    syscall(SYS_futex, (void *)word, op, n, NULL, NULL, 0);
}
