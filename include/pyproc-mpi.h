/*
 * pyproc over MPI: one pool whose workers run on the nodes of an MPI job,
 * used with the same functions as a local pool.
 *
 *   mpirun -n 1 ./app : -n 4 pyproc-agent
 *
 * Rank of the application: MPI_Init_thread() with MPI_THREAD_MULTIPLE
 * (each pool has a thread of its own that talks MPI while the
 * application's threads may too), then pyproc_pool_new_mpi().  Every other
 * rank of the communicator runs pyproc-agent, a program that starts the
 * workers on its node and relays their frames.  Programs link
 * libpyproc-mpi (pkg-config pyproc-mpi), which holds the whole pyproc API
 * as well; libpyproc itself does not depend on MPI.
 *
 * What works so far, and what does not: see README.md, "Scaling out".
 * Shared buffers ('B' arguments) cannot be passed to a remote worker:
 * such a call fails (fds do not cross MPI).
 */
#ifndef PYPROC_MPI_H
#define PYPROC_MPI_H

#include <mpi.h>

#include "pyproc.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A pool of opts->workers workers (default: the sum of the agents' CPUs)
 * spread round robin over the agents, which are every rank of comm but
 * the caller's.  comm must be MPI_COMM_WORLD for now (the agents listen
 * there).  opts->spin_us is how long the remote workers spin; the
 * callers on this rank sleep at once (an answer is a network round trip
 * away, and a spinning caller takes the CPU that brings it).  Several pools may be made and freed, one after another or at
 * once; pyproc_pool_free() frees one as any other.
 *
 * Returns 0, or as pyproc_pool_new(), and also:
 *   -EPROTONOSUPPORT  MPI is not initialised, or with less than
 *                     MPI_THREAD_MULTIPLE (MPI_Query_thread())
 *   -EINVAL           comm is not MPI_COMM_WORLD, or has no other rank
 *   -ETIMEDOUT        an agent did not answer within opts->start_timeout_ms
 *   -EOPNOTSUPP       opts->max_rss_bytes is set (a remote worker's
 *                     resident size is not known to the application)
 */
PYPROC_EXPORT int pyproc_pool_new_mpi(pyproc_pool **pool, const char *name, const pyproc_opts *opts,
                                      MPI_Comm comm);

/*
 * Tell every agent of comm to exit (after freeing its pools' workers):
 * once, after the last pool is freed and before MPI_Finalize(), at any
 * thread level; waits until each agent has the message.  0,
 * -EPROTONOSUPPORT (MPI not initialised), -EINVAL as above, or -ETIMEDOUT
 * when an agent did not take it within 10 s.
 */
PYPROC_EXPORT int pyproc_mpi_shutdown(MPI_Comm comm);

#ifdef __cplusplus
}
#endif

#endif
