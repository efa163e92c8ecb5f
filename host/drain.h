/*
 * Replies: reading what a worker sent (drain.c) and handing each frame to
 * where it goes (deliver.c): a call's end, a stream's items, the callback
 * queue, READY.
 *
 * Floor 3 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_DRAIN_H
#define PYPROC_HOST_DRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "call.h"

/* Callbacks a worker may have queued, running or answered but unsent; one
 * more and it is condemned (deliver.c, callback.c). */
#define PYPROC__CALLBACK_QUEUE_MAX 4096

/*
 * Read answers from w's reply ring and hand each to its call; call with
 * rx_lock held.  Reads at most max_msgs messages and stops once it has
 * consumed what the ring held when it began, so that a worker that keeps
 * writing cannot hold the drainer.  Returns true when frames are left;
 * *ret_read (ret_read may be NULL) gets how many messages it read.
 */
bool pyproc__drain_batch(struct pp_worker *w, unsigned max_msgs, unsigned *ret_read);
/* pyproc__drain_batch() with no limit on messages: what is there now.
 * Returns how many messages it read. */
unsigned pyproc__drain(struct pp_worker *w);

/*
 * Append a YIELD's items to stream c.  items must be private memory (see
 * drain.c), not yet checked: the walk over its items checks it.  Returns 0, -EBADMSG when they are malformed, -EPROTO when
 * they would take the stream past its window (the worker ignored its
 * credit), or -ENOMEM.
 */
/* Take in the shared buffers a value of w names (drain.c): 0, -ENOMEM, or
 * -EBADFD for one w may not share (missing, unsealed, too small), which
 * condemns w.  Under rx_lock. */
int pyproc__take_buffers(struct pp_worker *w, pyproc_msg *m);

int pyproc__stream_deliver(struct pp_worker *w, pyproc_call *c, const uint8_t *items, size_t len);
/* One callback of w is over (answered or dropped): it no longer counts
 * against PYPROC__CALLBACK_QUEUE_MAX. */
void pyproc__callback_gone(struct pp_worker *w);
/* Queue a CALLBACK for the callback thread; -EBADMSG for a malformed
 * payload. */
int pyproc__callback_push(struct pp_worker *w, uint64_t id, const uint8_t *payload, size_t len);

#endif
