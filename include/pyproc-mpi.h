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
 * An agent that runs workers of the pool and is not heard from for 10 s
 * ($PYPROC_MPI_LOST_MS, in ms, sets another bound; it sends something
 * every second meanwhile) is lost to the pool: its workers' calls fail
 * with PYPROC_EWORKER and "worker N: agent rank R on node X was lost: no
 * word from it in 10 s", the workers start again on
 * the other agents, and it is never picked again, nor made an agent of
 * a later pool (with none left, the workers cannot start, and a new pool
 * cannot be made: -EHOSTDOWN).  An agent asked to start a worker or to
 * free the pool owes the answer the same way, so pyproc_pool_free()
 * waits for a dead one for that bound at most.  That is only reached under
 * mpirun --enable-recovery, where Open MPI 4.1 lets the job live on after
 * a rank's death but tells the others nothing; plain mpirun ends the whole
 * job within a second or two of a death (pyproc-mpi(3), FAULTS).
 *
 * Returns 0, or as pyproc_pool_new(), and also:
 *   -EPROTONOSUPPORT  MPI is not initialised, or with less than
 *                     MPI_THREAD_MULTIPLE (MPI_Query_thread())
 *   -EINVAL           comm is not MPI_COMM_WORLD, or has no other rank
 *   -ETIMEDOUT        an agent did not answer within opts->start_timeout_ms
 *   -EHOSTDOWN        every rank but this one was lost to an earlier pool
 *   -EOPNOTSUPP       opts->max_rss_bytes is set (a remote worker's
 *                     resident size is not known to the application)
 */
PYPROC_EXPORT int pyproc_pool_new_mpi(pyproc_pool **pool, const char *name, const pyproc_opts *opts,
                                      MPI_Comm comm);

/*
 * Tell every agent of comm to exit (after freeing its pools' workers):
 * once, after the last pool is freed and before MPI_Finalize(), at any
 * thread level; waits until each agent has the message.  0,
 * -EPROTONOSUPPORT (MPI not initialised), -EINVAL as above, -ETIMEDOUT
 * when an agent did not take it within 10 s, or -EHOSTDOWN when every
 * agent but the lost ones (see above; told too, not waited for) took it.  After
 * -EHOSTDOWN, Open MPI 4.1's MPI_Finalize() may wait for ever for the
 * dead rank: bound it (the agents give theirs 10 s, then _exit(0)).
 */
PYPROC_EXPORT int pyproc_mpi_shutdown(MPI_Comm comm);

#ifdef __cplusplus
}
#endif

#endif
