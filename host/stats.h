/*
 * Counters per worker index, for pyproc_stats() (stats.c).
 * Floor 1 of host/.
 */
#ifndef PYPROC_HOST_STATS_H
#define PYPROC_HOST_STATS_H

#include "core.h"

/* The counters of index ind, made on first use; NULL when out of memory.
 * Takes pool->lock. */
struct pp_slot_stats *pyproc__slot_stats(pyproc_pool *p, int ind);
void pyproc__slot_stats_free(pyproc_pool *p);

#endif
