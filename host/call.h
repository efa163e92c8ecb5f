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
/* Run every completion waiting; returns how many. */
int pyproc__async_run(pyproc_pool *p);

#endif
