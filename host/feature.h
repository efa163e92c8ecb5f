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
void pyproc__map_free(pyproc_call *c);

#endif
