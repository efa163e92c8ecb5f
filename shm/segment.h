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
#define SHM_SEG_VERSION 2u
#define SHM_SEG_DATA_OFFSET 4096u
#define SHM_RING_MIN_BYTES 4096u
#define SHM_RING_MAX_BYTES (1ull << 30)

/* Slots of the stop table (see struct shm_seg_header). */
#define SHM_STOP_SLOTS 64

/*
 * One request to stop a call.  call is 0 while the slot is free.  Only the
 * host writes a slot, under a lock of its own: why first, then call with a
 * release store (pairs with the worker's acquire load of call).  It frees
 * a slot, only once the worker has seen it, by a relaxed store of 0 to call
 * and a release fence, which pairs with the acquire fence in the worker's
 * shm_seg_stop_lookup() between its read of why and its second read of
 * call: a reason read from a later entry comes with a changed id.
 * A call id carries its table slot's generation (host/table.c), so an old
 * entry never matches a later call.
 */
struct shm_stop {
    _Atomic uint64_t call;
    _Atomic uint32_t why; /* SHM_INTERRUPT_* */
    uint32_t reserved;
};

/*
 * Written once by the host before the worker starts; read-only afterwards
 * except for the fields below marked otherwise, and the ring control
 * blocks, whose rules are in shm/ring.h.
 *
 * Stopping calls (cancel, timeout) and the worker (shutdown) never goes
 * through the request ring, which a caller waiting for space may hold for
 * as long as the worker does not read:
 *
 * - stops[]: written by the host only (see struct shm_stop).  The worker
 *   looks up a call there before it starts it, and answers a stopped one
 *   at once without running it.
 * - stop_seq: bumped by the host (release, fetch_add) after each new
 *   entry; the worker's acquire load pairs with it, and a worker that sees
 *   it move scans stops[] for tasks and streams to cancel.  The host then
 *   wakes the worker the way shm_ring_notify() does, without a frame: the
 *   seq_cst fence there pairs with the one in shm_ring_sleep_begin(),
 *   after which the worker re-reads stop_seq before it sleeps.
 * - stop_seen: the stop_seq whose entries the worker has acted on, written
 *   by the worker with release after its scan; the host's acquire load
 *   pairs with it and frees a slot only when the worker has seen it and
 *   the call has ended.
 * - running_call: the id of the plain call (or first coroutine step) the
 *   worker is running, 0 between calls; written by the worker only.  The
 *   worker stores it and then, after a seq_cst fence, looks the id up in
 *   stops[]; the host stores a stop entry and then, after a seq_cst fence,
 *   loads running_call and signals the worker (SHM_INTERRUPT_SIGNAL) when
 *   it matches.  So either the worker finds the entry before it starts
 *   the call, or the host signals it while the call runs, and the
 *   worker's handler raises in the call if its id is in stops[].
 * - shutdown: 0, then 1 once, stored by the host with release (pairs with
 *   the worker's acquire load), followed by the same wake as stop_seq.
 */
struct shm_seg_header {
    uint64_t magic;
    uint32_t version;
    uint32_t index; /* worker index in its pool */
    uint64_t ring_bytes;
    uint64_t total_bytes;
    uint64_t max_msg_bytes;
    int32_t creator_pid;
    uint32_t reserved;
    _Atomic uint64_t running_call;
    _Atomic uint64_t stop_seq;
    _Atomic uint64_t stop_seen;
    _Atomic uint32_t shutdown;
    _Alignas(64) struct shm_stop stops[SHM_STOP_SLOTS];
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
int shm_seg_create(struct shm_seg *s, uint64_t ring_bytes, uint32_t index, uint64_t max_msg_bytes);

/*
 * Map the segment behind an inherited fd and validate it: magic, version,
 * creator pid, index, and sizes that agree with each other and with the
 * fd's size.  Returns 0, -EPROTO for a segment that fails a check, or
 * -errno.  On success the segment owns fd and shm_seg_release() closes it;
 * on failure the caller still does.
 */
int shm_seg_map(struct shm_seg *s, int fd, pid_t creator, uint32_t index);

/* ---- the stop table; see struct shm_seg_header ---- */

/*
 * Host: fill free slot `slot` with a stop request for call id and bump
 * stop_seq; returns its new value (the entry is seen once stop_seen
 * reaches it).  Call with the host's stop lock held; ends with a seq_cst
 * fence, so the caller may then load running_call and wake the worker.
 */
uint64_t shm_seg_stop_post(struct shm_seg_header *h, unsigned slot, uint64_t id, uint32_t why);

/* Host: free a slot the worker has seen (stop_seen), under the stop lock. */
void shm_seg_stop_clear(struct shm_seg_header *h, unsigned slot);

/* Host: the stop_seq value the worker has acted on. */
uint64_t shm_seg_stop_seen(const struct shm_seg_header *h);

/*
 * Worker: why call id was asked to stop (SHM_INTERRUPT_*), or 0.  Safe
 * against the host reusing a slot while it reads.
 */
uint32_t shm_seg_stop_lookup(const struct shm_seg_header *h, uint64_t id);

/* Unmap and close.  Safe on a zeroed or already released segment. */
void shm_seg_release(struct shm_seg *s);

#endif
