/*
 * Telling a forked child from the process that made a pool.
 *
 * A child of fork() inherits the host's pools, workers and calls as copies
 * whose workers, rings and threads belong to its parent: it must touch none
 * of them.  Every pool and call records the fork generation it was made
 * in; a child sees a larger one.
 */
#ifndef PYPROC_HOST_FORK_H
#define PYPROC_HOST_FORK_H

/* The current generation: bumped in every forked child of this process. */
unsigned pyproc__fork_gen(void);

/* Start counting (once per process) and return the current generation. */
unsigned pyproc__fork_track(void);

#endif
