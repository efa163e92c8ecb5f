/*
 * The worker channel: how the floors above reach a worker, and the only
 * code (worker.c, send.c, stop.c) that touches its segment, rings,
 * doorbells, locks and pidfd.  Everything above this header sees a worker
 * as something that takes frames, gives frames back, can be asked to stop
 * a call or itself, and can be condemned; a transport that is not a local
 * process with rings implements these same functions.
 *
 * Floor 1 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_CHAN_H
#define PYPROC_HOST_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "shared.h"

/* ---- lifetime (worker.c) ---- */

/* A new worker record for index, with one reference, no process yet. */
struct pp_worker *pyproc__worker_alloc(pyproc_pool *p, int index);
void pyproc__worker_ref(struct pp_worker *w);
/* Drop a reference; the last one kills a process still running, reaps it,
 * and frees everything. */
void pyproc__worker_unref(struct pp_worker *w);
void pyproc__worker_free(struct pp_worker *w);
/* Every worker of the pool with a process that may still serve calls:
 * those in slots and the retired ones finishing theirs, each with a new
 * reference; *ret (free() it) holds the count returned, or -ENOMEM.
 * Drop them with pyproc__workers_unref(). */
int pyproc__workers_ref(pyproc_pool *p, struct pp_worker ***ret);
void pyproc__workers_unref(struct pp_worker **ws, int n);
/* A worker that broke the protocol: close its channel and kill it; its
 * calls fail when it is reaped.  why ends "worker N ..." on stderr. */
void pyproc__worker_condemn(struct pp_worker *w, const char *why);

/* ---- polling the replies (worker.c) ---- */

/* A caller starts or stops polling w's replies itself.  While anyone
 * polls, the worker rings no doorbell; the last to leave re-arms it. */
void pyproc__poll_enter(struct pp_worker *w);
void pyproc__poll_leave(struct pp_worker *w);
/*
 * A lease: polling that lasts across calls, for a busy map's reader, so
 * that its workers ring no doorbell while it keeps reading (the service
 * thread sleeps).  One owner per worker; take returns false when another
 * holds it.  The owner beats now and then; the service thread takes back
 * a lease whose beat stood still for PYPROC__LEASE_MS or more, and leaves
 * the polling for it, so doorbells ring again for a reader that stopped
 * reading.  held says whether owner still holds it; drop returns true
 * when it did (the caller then leaves polling, as after
 * pyproc__poll_enter()), false when it was taken back.
 */
#define PYPROC__LEASE_MS 20
bool pyproc__lease_take(struct pp_worker *w, const void *owner);
bool pyproc__lease_held(struct pp_worker *w, const void *owner);
void pyproc__lease_beat(struct pp_worker *w);
bool pyproc__lease_drop(struct pp_worker *w, const void *owner);
/* A call that is not the lease owner's starts on w: its answer must ring
 * the doorbell, so take the lease back now (the owner takes it again once
 * its own calls alone run there). */
void pyproc__lease_break(struct pp_worker *w);
/* The service thread: take back the leases that stood still; ms until
 * the next look, -1 with no lease held. */
int pyproc__lease_check(pyproc_pool *p);

/* The same without ringing: true when replies came in while we polled and
 * nobody will ring for them; the caller drains them, or rings the
 * doorbell itself (pyproc__chan_ring()) to hand them to the service
 * thread. */
bool pyproc__poll_leave_quiet(struct pp_worker *w);
void pyproc__chan_ring(struct pp_worker *w);
/* After a batch of w's replies drained outside the service thread (an
 * event loop's pyproc_dispatch()): ask for the doorbell again, unless a
 * caller polls (it re-arms when it leaves).  True when replies came in
 * meanwhile, which nobody will ring for. */
bool pyproc__chan_rearm(struct pp_worker *w);

/* ---- reading replies (worker.c) ---- */

/* The next whole message from w, as shm_ring_read() returns it: 1, 0 (none
 * yet), -EBADMSG, -ENOMEM.  m->payload is memory the worker can still
 * write: copy before parsing (pyproc__chan_copy_out(), or a copy of one's
 * own).  Under rx_lock, with pyproc__chan_done() before the next read. */
int pyproc__chan_read(struct pp_worker *w, struct shm_msg *m);
void pyproc__chan_done(struct pp_worker *w, struct shm_msg *m);
/* Move m's payload into private memory (shm_ring_copy_out()). */
int pyproc__chan_copy_out(struct pp_worker *w, struct shm_msg *m);
/* Where w's replies end now, and whether reading is still short of a
 * mark: so a drainer serves what was there when it began, no more. */
uint64_t pyproc__chan_mark(struct pp_worker *w);
bool pyproc__chan_before(struct pp_worker *w, uint64_t mark);
/* Whether replies wait to be read, and whether the channel is closed. */
bool pyproc__chan_has_replies(struct pp_worker *w);
bool pyproc__chan_closed(struct pp_worker *w);
/* Whether w itself sleeps: a call sent now costs it a wake-up. */
bool pyproc__chan_peer_asleep(struct pp_worker *w);

/* Sleeping on w's replies, for the one caller that takes that role:
 * begin announces it and returns false when a reply came meanwhile (do not
 * sleep then); sleep waits up to ms; end takes the announcement back. */
bool pyproc__chan_sleep_begin(struct pp_worker *w);
void pyproc__chan_sleep(struct pp_worker *w, int ms);
void pyproc__chan_sleep_end(struct pp_worker *w);
/*
 * Sleep on the replies of n workers at once, each begun as above under
 * its sleeper's role, and on a private word of the caller's while it
 * holds val, at most ms: a map's reader, whose answers come from all of
 * them.  -ENOSYS where that cannot be waited for at once (nothing was).
 */
int pyproc__chan_sleep_many(struct pp_worker *const *ws, int n, _Atomic uint32_t *word,
                            uint32_t val, int ms);
/* Wake the caller asleep on w's replies, who may not have seen its
 * call's end: after the end is stored. */
void pyproc__chan_wake_sleeper(struct pp_worker *w);
/* Kill w's process at once (a call stuck where it cannot be stopped). */
void pyproc__worker_kill(struct pp_worker *w);

/* ---- sending (send.c) ---- */
/*
 * Pass the fds of a call's buffers to w, each with its token, before the
 * call's frame is written, so that the worker finds them when it decodes
 * the call.  Never waits: -EAGAIN when w has that many unread already,
 * -EPIPE when w is gone.
 */
int pyproc__send_buffers(struct pp_worker *w, const struct pyproc__attach *att);
/*
 * The fd of a shared buffer that w sent with token, before the reply that
 * names it; the caller owns it.  Under rx_lock.  -ENOENT when w sent no
 * such fd.
 */
int pyproc__recv_buffer(struct pp_worker *w, uint64_t token, int *fd);
/* Set up and tear down w's writer token, condition and outbox (spawn.c). */
void pyproc__tx_init(struct pp_worker *w);
void pyproc__tx_fini(struct pp_worker *w);
/*
 * Write one data frame (in fragments if large) to w's request ring, waiting
 * for the writer token and for space as long as it takes: application
 * threads only.  0, -EPIPE (closed), -EMSGSIZE.
 */
int pyproc__send(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n);
/* The common case alone, never waiting: a message of one fragment that
 * fits now while nobody holds the writer token.  1 when written, 0 when
 * pyproc__send_until() must do it, -EPIPE. */
int pyproc__send_nowait(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n);
/* The same, giving up at deadline (shm_now_ns() clock) with -ETIMEDOUT; a
 * worker that stops reading in the middle of the message is killed.  For
 * pool threads that may wait boundedly (respawn's replay). */
int pyproc__send_until(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n,
                       int64_t deadline);
/* Write one small control frame (n <= max_frag) without waiting: now, or
 * from the outbox when the token's holder lets it go (0 either way);
 * -EAGAIN when the ring is full or the outbox holds too many.  Any thread. */
int pyproc__send_try(struct pp_worker *w, uint16_t type, uint64_t id, const void *p, size_t n);
/* CALLBACK_REPLY from the callback thread: written now as far as possible,
 * the rest kept in w's outbox; -EAGAIN while some of the outbox waits. */
int pyproc__send_reply(struct pp_worker *w, uint64_t id, const void *p, size_t n);
/* Write what w's outbox holds if the token is free; true while some still
 * waits.  The callback thread calls it now and then. */
bool pyproc__outbox_retry(struct pp_worker *w);
/* The same with tx_lock held. */
bool pyproc__outbox_pump_locked(struct pp_worker *w);

/* ---- stopping (stop.c) ---- */

/*
 * Ask w to stop call id (why: SHM_INTERRUPT_CANCEL or _TIMEOUT) through
 * the segment's stop table, and signal it if it runs that call now.  Never
 * blocks on the worker and takes no ring lock.  Returns 0, or -EBUSY when
 * the table is full of stops the worker has not acted on.
 */
int pyproc__worker_stop_call(struct pp_worker *w, uint64_t id, uint32_t why);
/* Ask the worker to exit (the segment's shutdown word); never blocks. */
void pyproc__worker_ask_stop(struct pp_worker *w);

#endif
