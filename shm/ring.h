/*
 * Single-producer single-consumer byte ring in shared memory.
 *
 * The shared part (struct shm_ring_ctl) lives in a segment that two
 * processes map; each side keeps its own view (struct shm_ring) in private
 * memory.  Frames (shm/frame.h) are 8-byte aligned and never wrap: when a
 * frame does not fit before the end of the area, the producer fills the rest
 * with a PAD frame and starts again at offset 0.  A gap at the end shorter
 * than a frame header is skipped by both sides without a PAD.  Payloads
 * larger than a quarter of the area travel as fragments (SHM_FRAME_MORE on
 * all but the last) that the consumer reassembles.
 *
 * Several host threads may produce into one ring: they serialise on a lock
 * of their own, held for every fragment of a message, so the fragments of
 * one message are always contiguous in the ring.
 *
 * The consumer treats everything it reads from the ring as untrusted: a
 * frame whose length, type or position is impossible makes shm_ring_read()
 * fail with -EBADMSG, and nothing outside the area is ever read.
 *
 * What is copied where.  The producer can write the area at any moment,
 * also while the consumer reads it, so the consumer never decodes bytes
 * where they lie: a header is read once, into a local copy, and checked
 * there (ring_check_frame()); a payload is handed out either already in
 * private memory (a fragmented message, which shm_ring_read() copies
 * fragment by fragment into the view's reassembly buffer) or still in the
 * area (a message of one frame, to spare a copy the caller may make
 * anyway).  The caller must copy the latter out before it parses it:
 * into its own object, or with shm_ring_copy_out() into the reassembly
 * buffer, which reads each aligned 64-bit word of the area once, so that
 * a word the producer rewrites meanwhile is copied whole, old or new.
 * shm_msg_in_ring() tells the two apart.
 */
#ifndef PYPROC_SHM_RING_H
#define PYPROC_SHM_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* Values of shm_ring_ctl.consumer_wait. */
enum shm_wait_state {
    SHM_AWAKE = 0,         /* the consumer is running or polling      */
    SHM_SLEEP_FUTEX = 1,   /* asleep in FUTEX_WAIT on consumer_wait   */
    SHM_SLEEP_DOORBELL = 2 /* asleep in epoll; write its doorbell fd  */
};

/*
 * The shared control block.  Each counter is written by one side only with
 * a release store and read by the other with an acquire load:
 *
 * - tail: bytes ever published, written by the producer in
 *   shm_ring_commit(); pairs with the acquire in shm_ring_read().
 * - head: bytes ever consumed, written by the consumer in shm_ring_done();
 *   pairs with the acquire in shm_ring_reserve().
 * - consumer_wait: set by the consumer before it sleeps, taken back to
 *   SHM_AWAKE by whichever producer wakes it (shm_ring_notify()).  The
 *   seq_cst fence after the consumer's store pairs with the fence after the
 *   producer's publish, so either the consumer sees the new tail or the
 *   producer sees that it sleeps.
 * - producer_wait: the same handshake the other way, when the producer
 *   waits for space.
 * - closed: goes from 0 to 1 once, when either side gives up on the ring.
 */
struct shm_ring_ctl {
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint32_t consumer_wait;
    _Alignas(64) _Atomic uint32_t producer_wait;
    _Atomic uint32_t closed;
};

/* One whole message as the consumer sees it. */
struct shm_msg {
    uint16_t type;
    uint64_t id;
    const uint8_t *payload; /* valid until shm_ring_done() */
    size_t len;
    uint64_t frame_bytes; /* ring bytes to release, 0 when private */
};

/*
 * True when m's payload still lies in the shared area, where the producer
 * may rewrite it while it is read: copy it before parsing it.
 */
static inline bool shm_msg_in_ring(const struct shm_msg *m)
{
    return m->frame_bytes != 0;
}

/* One side's private view of a ring. */
struct shm_ring {
    struct shm_ring_ctl *ctl;
    uint8_t *data;
    uint64_t size; /* power of two */
    uint64_t mask;
    uint32_t max_frag;             /* largest payload of one frame */
    uint64_t max_msg;              /* largest reassembled payload accepted */
    int doorbell_fd;               /* the consumer's eventfd, or -1 */
    int (*type_ok)(unsigned type); /* what the consumer accepts */

    /* Producer only: the frame shm_ring_reserve() placed last. */
    uint64_t res_pos; /* counter value at its header */
    uint32_t res_len; /* payload bytes reserved */

    /* Consumer only: the message being reassembled. */
    uint8_t *asm_buf;
    size_t asm_len, asm_cap;
    uint64_t asm_id;
    uint16_t asm_type;
    bool asm_open;
};

/*
 * Attach a view to a control block and an 8-byte aligned data area of
 * `size` bytes (a power of two from 4096 to 2^32).  `doorbell_fd` is the
 * eventfd that a consumer sleeping as SHM_SLEEP_DOORBELL polls (or -1);
 * `type_ok` says which frame types the consumer accepts (NULL: any).
 * Returns 0 or -EINVAL.
 */
int shm_ring_attach(struct shm_ring *r, struct shm_ring_ctl *ctl, void *data, uint64_t size,
                    uint64_t max_msg, int doorbell_fd, int (*type_ok)(unsigned type));

/* Free the reassembly buffer.  The shared memory is not touched. */
void shm_ring_detach(struct shm_ring *r);

/* Mark the ring closed and wake anyone sleeping on it, on either side. */
void shm_ring_close(struct shm_ring *r);
bool shm_ring_is_closed(const struct shm_ring *r);

/* ---- producer ---- */

/*
 * Reserve room for a frame with a `len`-byte payload (len <= max_frag) and
 * return where to write the payload through *payload.  Writes a PAD frame
 * first when the frame would not fit before the end of the area.  Returns
 * 0, -EAGAIN when there is no room now, or -EMSGSIZE.  Nothing is visible
 * to the consumer until shm_ring_commit().
 */
int shm_ring_reserve(struct shm_ring *r, uint32_t len, void **payload);

/*
 * Publish the frame reserved last, with a payload of len bytes (at most the
 * length reserved).  Does not wake the consumer.
 */
void shm_ring_commit(struct shm_ring *r, uint16_t type, uint16_t flags, uint64_t id, uint32_t len);

/* Wake the consumer if it said it sleeps.  Cheap when it does not. */
void shm_ring_notify(struct shm_ring *r);

/*
 * Write a whole message, in fragments when it is larger than max_frag,
 * waiting for space (spinning for spin_ns, then sleeping on the futex) and
 * waking the consumer as needed.  Returns 0, -EPIPE when the ring is closed,
 * or -EMSGSIZE when len exceeds max_msg.
 */
int shm_ring_write(struct shm_ring *r, uint16_t type, uint64_t id, const void *payload, size_t len,
                   int64_t spin_ns);

/* ---- consumer ---- */

/* True when no frame is waiting.  An acquire load of tail. */
bool shm_ring_empty(const struct shm_ring *r);

/*
 * Read the next whole message.  Returns 1 with *m filled, 0 when no whole
 * message is there yet (fragments read so far are kept), -EBADMSG when
 * the producer wrote something impossible, or -ENOMEM when the reassembly
 * buffer cannot grow (the fragment that did not fit stays in the ring).
 * m->payload is valid until shm_ring_done(), which must be called before
 * the next shm_ring_read().
 */
int shm_ring_read(struct shm_ring *r, struct shm_msg *m);

/*
 * Make the payload of m, the message read last, private: one still in the
 * area is copied into the reassembly buffer (free between messages) and
 * its frame released at once; a private one is left alone.  Returns 0, or
 * -ENOMEM with m unchanged.  The payload stays valid until shm_ring_done(),
 * which must still be called.
 */
int shm_ring_copy_out(struct shm_ring *r, struct shm_msg *m);

/* Release the message read last, and wake a producer waiting for space. */
void shm_ring_done(struct shm_ring *r, struct shm_msg *m);

/*
 * The consumer's position (bytes ever released) and the producer's (bytes
 * ever published; an acquire load, which pairs with the release store in
 * shm_ring_commit()).  A consumer compares the two to bound how much it
 * reads in one go.
 */
uint64_t shm_ring_consumed(const struct shm_ring *r);
uint64_t shm_ring_published(const struct shm_ring *r);

/*
 * Spin up to spin_ns for a frame, then announce sleep and FUTEX_WAIT up to
 * timeout_ms (-1: forever).  Returns 1 when a frame is there, 0 on time-out
 * or a bare wake-up (shm_ring_notify() with nothing new), -EPIPE when closed.
 */
int shm_ring_wait(struct shm_ring *r, int64_t spin_ns, int timeout_ms);

/*
 * The two halves of a sleep that happens elsewhere (epoll on the doorbell).
 * shm_ring_sleep_begin() stores `how` in consumer_wait and returns true if a
 * frame arrived meanwhile or the ring was closed, in which case the caller
 * must not sleep (consumer_wait is already back to SHM_AWAKE);
 * shm_ring_sleep_end() marks the consumer awake again.
 */
bool shm_ring_sleep_begin(struct shm_ring *r, enum shm_wait_state how);
void shm_ring_sleep_end(struct shm_ring *r);

/*
 * For a consumer made of several threads (the host): ask for the doorbell
 * only while consumer_wait says SHM_AWAKE, so a thread of the consumer that
 * sleeps on the futex is never overwritten and left unwoken; it drains when
 * woken and asks for the doorbell when it leaves.  Returns true when a
 * frame arrived or the ring closed meanwhile (then consumer_wait is back to
 * SHM_AWAKE and the caller drains), false when the doorbell is armed or a
 * futex sleeper covers the ring.
 */
bool shm_ring_doorbell_begin(struct shm_ring *r);

/* Monotonic clock in nanoseconds, for spin budgets. */
int64_t shm_now_ns(void);

#endif
