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
/*
 * The same in two steps, so that a pool's workers can all be prepared
 * while its template starts: a worker with its segment, rings and the
 * fds it will get (the ends in s are its, ours to close), then its
 * process.  On failure, each step leaves nothing behind; abandon drops
 * one prepared and not launched.  A launch may put a new worker, with
 * new fds, in s->w (a fork whose child may hold the first ones).
 */
struct pp_spawn {
    struct pp_worker *w; /* a reference */
    int out_w[2], death_r, sock_w;
};
int pyproc__worker_prepare(pyproc_pool *p, int index, struct pp_spawn *s);
int pyproc__worker_launch(pyproc_pool *p, struct pp_spawn *s);
void pyproc__spawn_abandon(struct pp_spawn *s);
/* Give an asked worker grace_ms to exit, then kill it; reap it either way. */
void pyproc__worker_stop(struct pp_worker *w, int grace_ms);
/* The worker died (pidfd readable): reap it and fail its calls. */
void pyproc__worker_reap(struct pp_worker *w);
/* "worker N exited with status S" (or killed by signal), malloc'd. */
char *pyproc__exit_text(int index, const siginfo_t *si);
/* Exec the pool's template with sock as its fd 3; its pid and a pidfd. */
int pyproc__template_spawn(pyproc_pool *p, int sock, pid_t *ret_pid, int *ret_pidfd);

/* ---- the template that forks workers (template.c) ---- */

/* The pool's template, not started yet (p->tmpl); -ENOMEM. */
int pyproc__template_new(pyproc_pool *p);
/* Start it (begin), and wait until it can fork (finish), in between
 * preparing the workers; on failure the pool execs its workers from then
 * on.  Before the workers start. */
void pyproc__template_begin(pyproc_pool *p);
void pyproc__template_finish(pyproc_pool *p);
/* On the service thread: have the template fork worker index with fds
 * (its 1 to 7); its pid.  -ETIMEDOUT when no answer came: a child may
 * exist, holding fds, so they must not serve another worker.  -EAGAIN
 * when the template is busy, starting or gone, or another error: then no
 * worker was forked, and the caller execs one with the same fds. */
int pyproc__template_fork(pyproc_pool *p, int index, const int *fds, pid_t *ret_pid);
/* On the service thread: the template's pidfd is readable (watched one
 * shot).  While the pool is closing, only noted. */
void pyproc__template_died(pyproc_pool *p);
/* pyproc_pool_new(), once p->closing is false: restart a template that
 * died while the pool was starting. */
void pyproc__template_pool_opened(pyproc_pool *p);
/* Replace a running template with a new one, which imports the hub and
 * the preloaded subs afresh from disk (pyproc_reload()); workers are
 * exec'd while it starts. */
void pyproc__template_renew(pyproc_pool *p);
/* Import a PYPROC_SUB_PRELOAD sub in the template, now and after each
 * restart. */
void pyproc__template_preload(pyproc_pool *p, const char *name, const char *pypath);
/* Stop the template and free it; the service thread has stopped. */
void pyproc__template_free(pyproc_pool *p);

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
/*
 * Put w, brought up at old's index, in old's slot, after the history's
 * tail, in one step as seen by pyproc__broadcast(); unless the slot
 * changed meanwhile or the pool closes (*ret_placed false, may be NULL:
 * w is then stopped and dropped).  planned: old goes to the retired list
 * with its slot's reference and the index counts a recycle; else old's
 * reference is dropped and it counts a restart.  Returns the replay's
 * error (*why says why), else 0.
 */
int pyproc__worker_publish(pyproc_pool *p, struct pp_worker *old, struct pp_worker *w, bool planned,
                           bool *ret_placed, char **why);
/* Start a worker at the next index and put it in a new slot (grow_lock
 * held); its index in *ind (may be NULL). */
int pyproc__workers_add_one(pyproc_pool *p, int *ind);
/* The worker in its slot died: respawn it in the background. */
void pyproc__respawn_later(pyproc_pool *p, struct pp_worker *dead);
/* Wait for every respawn under way to finish (the pool is closing). */
void pyproc__respawn_wait(pyproc_pool *p);

/* ---- planned replacements (recycle.c) ---- */

/* The service thread's look at the workers' limits (max_calls_per_worker,
 * max_rss_bytes): recycle those past one.  Returns ms until the next
 * look, or -1 when the pool has no limit. */
int pyproc__recycle_tick(pyproc_pool *p);

#endif
