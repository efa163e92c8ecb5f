/*
 * The call object: a request to one worker and its end, however it ends.
 * Lifetime (references), the signal that wakes its waiter, completion
 * (once), the completion queue of asynchronous calls, and the worker's
 * table of calls in flight.
 *
 * Floor 2 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_CALL_H
#define PYPROC_HOST_CALL_H

#include <stdbool.h>
#include <stdint.h>

#include "table.h"

/* True once c's end is stored.  Pairs with the release exchange in
 * pyproc__call_signal(). */
static inline bool pyproc__call_done(pyproc_call *c)
{
    return atomic_load_explicit(&c->state, memory_order_acquire) == CALL_DONE;
}

/* ---- lifetime and end (call.c) ---- */
void pyproc__call_unref(pyproc_call *c);
/* Wake whoever waits on c, after storing what it waits for. */
void pyproc__call_signal(pyproc_call *c);
/* Store the end of a call (or stream) and drop the table's reference;
 * an asynchronous call goes to the completion queue instead. */
void pyproc__call_complete(pyproc_call *c, int result, pyproc_msg *ret);
/* Fail every call in flight on w, and close its table to new calls. */
void pyproc__fail_calls(struct pp_worker *w, int result, const char *why);
/* Free the items a stream still holds. */
void pyproc__stream_free_items(pyproc_call *c);

/* ---- the completion queue of asynchronous calls (call.c) ---- */
/* Queue a finished asynchronous call; takes over the table's reference. */
void pyproc__async_push(pyproc_call *c);
/* An asynchronous call's end is expected soon: wake the loop now, so that
 * the push that follows writes nothing (see pool->done_due). */
void pyproc__async_expect(pyproc_pool *p);
/* Queue a handle whose callback is due, with a new reference. */
void pyproc__handle_queue(pyproc_call *c);
/* A stream got items or its end: queue it if it delivers them through a
 * callback and is not queued already.  Takes qlock. */
void pyproc__stream_notify(pyproc_call *c);

/* ---- calls' own deadlines (deadline.c) ----
 * A min-heap by time under pool->deadline_lock; each entry holds a
 * reference to its call. */
/* Set or move c's deadline to `at` (shm_now_ns() clock); -ENOMEM. */
int pyproc__deadline_set(pyproc_call *c, int64_t at);
/* Take c's deadline out as it ends, if it has one. */
void pyproc__deadline_remove(pyproc_call *c);
/* The first call due by `now`, out of the heap with the heap's reference;
 * NULL when none is due, with *next_ms the wait until the next (-1: none). */
pyproc_call *pyproc__deadline_pop(pyproc_pool *p, int64_t now, int *next_ms);
/* Drop every deadline left (the pool is going). */
void pyproc__deadlines_clear(pyproc_pool *p);

#endif
