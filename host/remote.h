/*
 * A pool whose workers are not local processes: the entry point that a
 * transport (mpi/) builds its pools with.  struct pp_remote (core.h) says
 * what the transport provides.
 *
 * Floor 7 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_REMOTE_H
#define PYPROC_HOST_REMOTE_H

#include "core.h"

/*
 * pyproc_pool_new() with remote's functions starting, signalling and
 * reaping the workers.  The pool owns remote_data from here on, also on
 * failure: remote->fini() is called as the pool is destroyed.
 */
int pyproc__pool_new_remote(pyproc_pool **ret, const char *name, const pyproc_opts *opts,
                            const struct pp_remote *remote, void *remote_data);

#endif
