/*
 * The shared-memory segment of one worker: a header, the request ring
 * (host to worker) and the reply ring (worker to host).
 *
 *   offset 0                 struct shm_seg_header (both ring control blocks)
 *   SHM_SEG_DATA_OFFSET      request ring data, ring_bytes
 *   + ring_bytes             reply ring data, ring_bytes
 *
 * The host creates the segment with memfd_create (no name in /dev/shm),
 * sizes and seals it, and hands the fd to the worker at exec.  The worker
 * checks magic, version, creator pid and every size against the fd's real
 * size before it trusts any offset.
 */
#ifndef PYPROC_SHM_SEGMENT_H
#define PYPROC_SHM_SEGMENT_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>

#include "ring.h"

#define SHM_SEG_MAGIC 0x3143524f50595000ull /* "\0PYPROC1" */
#define SHM_SEG_VERSION 1u
#define SHM_SEG_DATA_OFFSET 4096u
#define SHM_RING_MIN_BYTES 4096u
#define SHM_RING_MAX_BYTES (1ull << 30)

/*
 * Written once by the host before the worker starts; read-only afterwards
 * except for the ring control blocks, whose rules are in shm/ring.h.
 */
struct shm_seg_header {
    uint64_t magic;
    uint32_t version;
    uint32_t index;     /* worker index in its pool */
    uint64_t ring_bytes;
    uint64_t total_bytes;
    uint64_t max_msg_bytes;
    int32_t creator_pid;
    uint32_t reserved;
    /*
     * Interrupting a plain function that runs too long.  The worker stores
     * the id of the plain call it is running in running_call (0 between
     * calls); the host stores the id it wants stopped in interrupt_call
     * and the reason in interrupt_why, then signals the worker, whose
     * handler raises in that call only if the two ids still match.
     */
    _Atomic uint64_t running_call;
    _Atomic uint64_t interrupt_call;
    _Atomic uint32_t interrupt_why; /* SHM_INTERRUPT_* */
    struct shm_ring_ctl request; /* host produces, worker consumes */
    struct shm_ring_ctl reply;   /* worker produces, host consumes */
};

enum { SHM_INTERRUPT_CANCEL = 1, SHM_INTERRUPT_TIMEOUT = 2 };

/* The signal that asks a worker to interrupt its running call. */
#define SHM_INTERRUPT_SIGNAL SIGUSR1

struct shm_seg {
    int fd;
    uint8_t *base;
    size_t size;
    struct shm_seg_header *hdr;
    uint8_t *request_data;
    uint8_t *reply_data;
};

/*
 * Create, size, seal and map a new segment whose rings hold ring_bytes each
 * (a power of two).  The fd is close-on-exec.  Returns 0 or -errno.
 */
int shm_seg_create(struct shm_seg *s, uint64_t ring_bytes, uint32_t index,
                   uint64_t max_msg_bytes);

/*
 * Map the segment behind an inherited fd and validate it: magic, version,
 * creator pid, index, and sizes that agree with each other and with the
 * fd's size.  Returns 0, -EPROTO for a segment that fails a check, or
 * -errno.  On success the segment owns fd and shm_seg_release() closes it;
 * on failure the caller still does.
 */
int shm_seg_map(struct shm_seg *s, int fd, pid_t creator, uint32_t index);

/* Unmap and close.  Safe on a zeroed or already released segment. */
void shm_seg_release(struct shm_seg *s);

#endif
