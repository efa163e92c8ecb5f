/*
 * The pool's service thread (service.c): an event loop over every
 * worker's doorbell, pidfd and output pipes, plus a control eventfd and a
 * tick.  It lives on floor 1 and calls nothing above it: what a doorbell,
 * a death and a tick mean is handed to it by the composition root
 * (pool.c) as a table of handlers.
 */
#ifndef PYPROC_HOST_SERVICE_H
#define PYPROC_HOST_SERVICE_H

#include <stdbool.h>

#include "core.h"

struct pp_service_ops {
    /* Read one batch of w's replies, with rx_lock held: at most max_msgs
     * messages; true when frames are left (pyproc__drain_batch()). */
    bool (*drain)(struct pp_worker *w, unsigned max_msgs, unsigned *ret_read);
    /* w's process exited (its pidfd is readable) and w is unwatched: reap
     * it and deal with its slot. */
    void (*died)(pyproc_pool *p, struct pp_worker *w);
    /* Due work by time (call timeouts); returns ms until the next tick,
     * or -1 for none. */
    int (*tick)(pyproc_pool *p);
    /* The pool's template exited (see pyproc__service_watch_template()). */
    void (*template_died)(pyproc_pool *p);
};

/* Start the thread; ops must outlive the pool. */
int pyproc__service_start(pyproc_pool *p, const struct pp_service_ops *ops);
void pyproc__service_stop(pyproc_pool *p);
/* Run fn(p, arg) on the service thread and return its result. */
int pyproc__service_run(pyproc_pool *p, int (*fn)(pyproc_pool *, void *), void *arg);
/* Watch a new worker's pidfd, doorbell and output pipes; on the service
 * thread. */
int pyproc__service_watch(pyproc_pool *p, struct pp_worker *w);
/* Once it returns, no event of the epoll set points at w. */
void pyproc__service_unwatch(pyproc_pool *p, struct pp_worker *w);
/* Watch the pidfd of the pool's template, or stop watching it; on the
 * service thread. */
int pyproc__service_watch_template(pyproc_pool *p, int pidfd);
void pyproc__service_unwatch_template(pyproc_pool *p, int pidfd);
/* Wake the service thread so it ticks again now. */
void pyproc__service_kick(pyproc_pool *p);

#endif
