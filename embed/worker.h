/*
 * The state of the one worker this process is: its segment, its two rings
 * and what the command line told it.  Shared by the worker's C files.
 */
#ifndef PYPROC_EMBED_WORKER_H
#define PYPROC_EMBED_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../shm/buf.h"
#include "../shm/ring.h"
#include "../shm/segment.h"

struct worker {
    struct shm_seg seg;
    struct shm_ring requests; /* we consume */
    struct shm_ring replies;  /* we produce */
    int index;
    const char *pool;
    const char *python_path;
    pid_t host_pid;
    int death_fd; /* read end of a pipe only the host writes; EOF: host gone */
    int64_t spin_ns;
    struct shm_buf out; /* reply encoding scratch, main thread only */
    /* Set by any thread that wants the loop to look at its ready queue
     * (call_soon_threadsafe); cleared by the loop before it looks. */
    _Atomic int woken;
    bool shutdown;
    bool trim_when_idle; /* a large message went by since the last trim */
    bool busy;           /* calls come back to back: spin between them */
    bool host_slept;     /* the host was asleep when we last answered */
};

extern struct worker the_worker;

/* Register the _pyproc module; call before Python is initialised. */
int pyproc_bridge_register(void);

#endif
