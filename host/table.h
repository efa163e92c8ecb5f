/*
 * A worker's table of calls in flight (table.c), by id.  An id is a slot
 * number in the low 32 bits and the slot's generation in the high 32, so a
 * late answer for a call whose slot was reused, or an id a broken worker
 * made up, finds nothing.  The table holds one reference to each call.
 *
 * Floor 1 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_TABLE_H
#define PYPROC_HOST_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"

/* Put c in w's table, giving it its id.  -EPIPE once the table is closed
 * (w died or the pool is freed), -ESTALE once pyproc__table_close_idle()
 * closed it (w left its slot: pick again), -ENOMEM. */
int pyproc__table_add(struct pp_worker *w, pyproc_call *c);
/* Take c out if it is still there (no answer claimed it). */
bool pyproc__table_remove(struct pp_worker *w, pyproc_call *c);
/*
 * Close the table to new calls and take the next call in it, from *cursor
 * (start at 0) on: the table's reference moves to the caller.  NULL once
 * the table is empty.  Allocates nothing, so emptying a table cannot fail.
 */
pyproc_call *pyproc__table_take_next(struct pp_worker *w, uint32_t *cursor);
/* Close the table to new calls if it holds none (a retired worker is
 * idle for good); true when it is closed. */
bool pyproc__table_close_idle(struct pp_worker *w);
/* Look up a call without taking it out of the table; a new reference. */
pyproc_call *pyproc__call_find(struct pp_worker *w, uint64_t id);
/* Take the call out of the table; the table's reference moves to us. */
pyproc_call *pyproc__call_take(struct pp_worker *w, uint64_t id);

/* Whether a call with this id is in the table (no reference taken). */
bool pyproc__table_has(struct pp_worker *w, uint64_t id);

#endif
