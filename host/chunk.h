/*
 * A map chunk's item results (MAP_ITEMS), read from a private copy,
 * checked, and stored in the map's slots (chunk.c).
 *
 * Floor 3 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_CHUNK_H
#define PYPROC_HOST_CHUNK_H

#include "../shm/ring.h"
#include "mapq.h"

/*
 * Deliver a MAP_ITEMS of w; under rx_lock, as the drainer's other
 * handlers.  Returns 0, -EBADMSG when it is malformed or answers an item
 * that is not its chunk's to answer (the worker is then condemned), or
 * -ENOMEM.
 */
int pyproc__chunk_deliver(struct pp_worker *w, struct shm_msg *m);

#endif
