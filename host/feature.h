/*
 * What the public features share below the composition root: ending calls
 * early (expire.c), the callback thread (callback.c), broadcasts with the
 * pool's history (broadcast.c).
 *
 * Floor 5 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_FEATURE_H
#define PYPROC_HOST_FEATURE_H

#include <stdint.h>

#include "start.h"

/*
 * Ask c's worker to stop call c (why: SHM_INTERRUPT_CANCEL or _TIMEOUT)
 * through the segment's stop table, and signal the worker if it runs c
 * now.  Never blocks on the worker and takes no ring lock: safe from any
 * thread, with c still in its worker's call table.  When the table is full
 * the stop is kept on c and posted by the service thread once a slot frees.
 */
void pyproc__call_interrupt(pyproc_call *c, uint32_t why);

/*
 * Take a stream's next item without waiting (stream.c): 1 with the item,
 * 0 at the end, a negative errno with the error message in *item, or
 * PYPROC__STREAM_EMPTY when none has come yet (with arm, the call's state
 * is set back to pending first, so a wait after it sees the next item).
 * Credit goes back to the worker as items are taken.
 */
#define PYPROC__STREAM_EMPTY 2
int pyproc__stream_take(pyproc_call *c, pyproc_msg **item, bool arm);

/* End the calls whose own deadlines are due; ms until the next one, or
 * -1.  The service thread's tick (events.c). */
int pyproc__deadlines_expire(pyproc_pool *p);

/* Run every callback due (async.c); returns how many ran. */
int pyproc__async_run(pyproc_pool *p);
/* End the calls past their deadline; returns ms until the next check
 * (the service thread's tick). */
int pyproc__expire_calls(pyproc_pool *p);

int pyproc__callback_start(pyproc_pool *p);
void pyproc__callback_stop(pyproc_pool *p);

/* Send one control request (add_sub, add_native, set_attr) to every worker
 * and wait for all; when all took it, keep it for workers to come.  The
 * first failure's message goes to *err_msg (may be NULL). */
int pyproc__broadcast(pyproc_pool *p, uint16_t type, const struct shm_buf *b, pyproc_msg **err_msg);

/* A map behind a stream handle (map.c): pyproc_next() (*index: the
 * item's input position, may be NULL), pyproc_cancel() and
 * pyproc_call_free() of a handle whose c->map is set. */
int pyproc__map_next(pyproc_call *c, pyproc_msg **item, uint64_t *index);
int pyproc__map_cancel(pyproc_call *c);
/* A map's next result without waiting, as pyproc__stream_take() is for a
 * stream (PYPROC__STREAM_EMPTY when none is there yet). */
int pyproc__map_poll(pyproc_call *c, pyproc_msg **item);
/* The map's results go to a callback from now on. */
void pyproc__map_deliver(pyproc_call *c);
void pyproc__map_free(pyproc_call *c);

#endif
