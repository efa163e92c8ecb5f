/*
 * Supervision: one worker process started, stopped and reaped (spawn.c);
 * workers brought up, brought up to date, respawned and added (workers.c).
 *
 * Floor 6 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_SUPERVISE_H
#define PYPROC_HOST_SUPERVISE_H

#include <signal.h>

#include "feature.h"

/* ---- one process (spawn.c) ---- */

/* Start the process of a new worker at index; *ret holds a reference. */
int pyproc__worker_spawn(pyproc_pool *p, int index, struct pp_worker **ret);
/* Give an asked worker grace_ms to exit, then kill it; reap it either way. */
void pyproc__worker_stop(struct pp_worker *w, int grace_ms);
/* The worker died (pidfd readable): reap it and fail its calls. */
void pyproc__worker_reap(struct pp_worker *w);
/* "worker N exited with status S" (or killed by signal), malloc'd. */
char *pyproc__exit_text(int index, const siginfo_t *si);

/* ---- workers of a pool (workers.c) ---- */

/* Spawn every worker of a new pool on the service thread and wait until
 * all are ready: 0, PYPROC_EWORKER, -ETIMEDOUT or a spawn's error. */
int pyproc__workers_start(pyproc_pool *p);
/* Ask every worker to stop at once, then wait for each (pool_free). */
void pyproc__workers_stop(pyproc_pool *p);
/* Wait until w said READY (0), died (PYPROC_EWORKER), time ran out
 * (-ETIMEDOUT) or the pool began closing (-ECANCELED). */
int pyproc__worker_wait_ready(struct pp_worker *w, int timeout_ms);
/* Send w, not yet in a slot, the history entries it lacks, in order.
 * Hold history_lock to know none is added meanwhile. */
int pyproc__worker_replay(pyproc_pool *p, struct pp_worker *w, char **why);
/*
 * Start a worker at index, wait for READY and replay the pool's history;
 * on success *ret holds a reference.  On failure the worker is stopped and
 * *why (may be NULL) says how it failed (free it).
 */
int pyproc__worker_bring_up(pyproc_pool *p, int index, struct pp_worker **ret, char **why);
/* Stop a worker that was brought up but will not be used, and drop our
 * reference to it (it is unwatched first, so no event reaches it later). */
void pyproc__worker_discard(pyproc_pool *p, struct pp_worker *w);
/* The worker in its slot died: respawn it in the background. */
void pyproc__respawn_later(pyproc_pool *p, struct pp_worker *dead);
/* Wait for every respawn under way to finish (the pool is closing). */
void pyproc__respawn_wait(pyproc_pool *p);

#endif
