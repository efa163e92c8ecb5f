/*
 * Asynchronous calls for applications with their own event loop.
 *
 * A finished asynchronous call, or a handle whose callback is due (see
 * events.c), goes on the pool's completed list and writes done_fd;
 * pyproc_dispatch() takes the whole list and runs the callbacks
 * on the application's thread, never inside the library's threads, so a
 * callback may do anything, including calls on the pool and freeing the
 * handle it was called for (the list's reference keeps it alive).
 *
 * The pool's fd is an epoll set of done_fd and every worker's reply
 * doorbell (pool->loop_fd), so the loop wakes when a worker answers, not
 * after the service thread has read the answer and written done_fd: one
 * wake-up per answer, not two in a row.  pyproc_dispatch() then reads
 * the rings whose doorbells rang, which ends their calls, and runs what
 * is due.  The service thread wakes on the same doorbells and reads them
 * too (whichever comes first; the other finds the ring read), so the
 * answers of blocking callers never wait for the loop.
 *
 * System calls are what this path costs (each about as much as a whole
 * call's round trip in user space), so it makes as few as it can:
 * - done_fd is written only when no dispatch is due to take the list
 *   anyway (pool->done_due): not for each push, not while a dispatch
 *   runs, and not after the loop was woken already;
 * - an asynchronous call whose answer is caught by its caller's spin
 *   writes done_fd before it spins (pyproc__async_expect()), while the
 *   worker works, rather than after the answer came;
 * - a dispatch that finds completions waiting and no worker's ring
 *   holding replies runs them without epoll_wait().  The pool's fd then
 *   stays readable until a dispatch finds nothing, which takes its events
 *   (one more wake-up of a level-triggered loop after a busy spell, never
 *   a loop that spins while nothing comes).  Events left in the set never
 *   hide new ones from an edge-triggered watcher: every write to a member
 *   wakes the set's watchers again.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "msg.h"
#include "chan.h"
#include "drain.h"
#include "feature.h"

/* Doorbells and replies one pyproc_dispatch() serves at most; what is
 * left keeps the pool's fd readable, for the next. */
#define LOOP_EVENTS 32
#define LOOP_BATCH_MSGS 64
/* Workers a dispatch looks at in user space, to skip epoll_wait() when
 * none has replies waiting; a larger pool always asks epoll. */
#define LOOP_SCAN_MAX 16

/* Whether the handle's owner freed it: then no callback runs.  Acquire:
 * pairs with the release store in pyproc_call_free(). */
static bool freed(pyproc_call *c)
{
    return atomic_load_explicit(&c->cb_freed, memory_order_acquire);
}

/* A stream's items, then its end, to its callback. */
static int deliver_items(pyproc_pool *p, pyproc_call *c)
{
    pyproc_msg *item;
    int ran = 0, r;

    pthread_mutex_lock(&c->qlock);
    c->queued = false; /* items that come from now on queue it again */
    pthread_mutex_unlock(&c->qlock);
    while (!c->finished && !freed(c)) {
        item = NULL;
        r = c->map ? pyproc__map_poll(c, &item) : pyproc__stream_take(c, &item, false);
        if (r == PYPROC__STREAM_EMPTY)
            break;
        c->finished = r <= 0;
        c->item_fn(p, r, item, c->item_data);
        ran++;
    }
    return ran;
}

/* An asynchronous call's end, or a handle's. */
static int deliver_end(pyproc_pool *p, pyproc_call *c)
{
    pyproc_done_fn done = c->done ? c->done : c->hdone;
    void *data = c->done ? c->done_data : c->hdone_data;

    if (!c->done && freed(c))
        return 0;
    c->taken = true;
    done(p, c->result, c->ret, data);
    return 1;
}

/* The worker a doorbell event names, with a reference, if it still holds
 * its slot; the service thread reads an old worker's ring. */
static struct pp_worker *loop_worker(pyproc_pool *p, uint64_t key)
{
    uint32_t index = (uint32_t)key, serial = (uint32_t)(key >> 32);
    struct pp_worker *w = NULL;

    pthread_mutex_lock(&p->lock);
    if (index < (uint32_t)p->nworkers && p->workers[index] && p->workers[index]->serial == serial) {
        w = p->workers[index];
        pyproc__worker_ref(w);
    }
    pthread_mutex_unlock(&p->lock);
    return w;
}

/*
 * Take the events of the pool's fd, which makes it unreadable until the
 * next (every member is edge-triggered, done_fd included, and no counter
 * is ever read: a ring or a push is an event each), and read the replies
 * of the workers whose doorbells rang; their ends go on the completed
 * list, which pyproc__async_run() takes after this.  An event that comes
 * later is a new one, so nothing is missed: at worst the fd wakes the
 * loop for a list already taken.
 */
static void loop_events(pyproc_pool *p)
{
    struct epoll_event ev[LOOP_EVENTS];
    int n = epoll_wait(p->loop_fd, ev, LOOP_EVENTS, 0);

    for (int i = 0; i < n; i++) {
        struct pp_worker *w;
        if (ev[i].data.u64 == PYPROC__LOOP_DONE || !(w = loop_worker(p, ev[i].data.u64)))
            continue;
        pthread_mutex_lock(&w->rx_lock);
        bool more = pyproc__drain_batch(w, LOOP_BATCH_MSGS, NULL);
        pthread_mutex_unlock(&w->rx_lock);
        /* Replies left, or come as we re-armed: ring for them, which
         * brings the service thread and this fd back. */
        if ((more || pyproc__chan_rearm(w)) && !pyproc__chan_closed(w))
            pyproc__chan_ring(w);
        pyproc__worker_unref(w);
    }
    /* Events left for the next dispatch keep the fd readable, which a
     * loop that polls it level-triggered sees; one that holds it
     * edge-triggered is woken only by a new event: make one. */
    if (n == LOOP_EVENTS) {
        uint64_t one = 1;
        if (write(p->done_fd, &one, sizeof one) < 0) {
            /* Never read (see pyproc__async_push()): it does not fill. */
        }
    }
}

int pyproc__async_run(pyproc_pool *p)
{
    pyproc_call *list;
    int ran = 0;

    /* Emptied under the lock, with done_due cleared: a push after this
     * writes done_fd again, which is a new event in loop_fd. */
    pthread_mutex_lock(&p->done_lock);
    list = p->completed;
    p->completed = p->completed_tail = NULL;
    p->done_due = false;
    pthread_mutex_unlock(&p->done_lock);
    while (list) {
        pyproc_call *c = list;
        list = c->next_done;
        if (c->is_stream && !c->done)
            ran += deliver_items(p, c);
        else
            ran += deliver_end(p, c);
        pyproc__call_unref(c);
    }
    return ran;
}

PYPROC_EXPORT int pyproc_func_asyncv(pyproc_pool *p, const char *ref, pyproc_done_fn done,
                                     void *data, const char *fmt, va_list ap)
{
    if (!done)
        return -EINVAL;
    return pyproc__call_start_ex(p, -1, 0, ref, fmt, ap, done, data, NULL);
}

PYPROC_EXPORT int pyproc_func_async(pyproc_pool *p, const char *ref, pyproc_done_fn done,
                                    void *data, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_func_asyncv(p, ref, done, data, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_pool_fd(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);
    return err < 0 ? err : p->loop_fd;
}

/* No ring that loop_events() would read (a worker's in its slot) holds
 * replies, which only a doorbell or a polling caller brings to the
 * completed list: so no doorbell that rang is left for this dispatch. */
static bool rings_quiet(pyproc_pool *p)
{
    bool quiet = true;

    pthread_mutex_lock(&p->lock);
    if (p->nworkers > LOOP_SCAN_MAX)
        quiet = false;
    for (int i = 0; quiet && i < p->nworkers; i++)
        if (p->workers[i] && pyproc__chan_has_replies(p->workers[i]))
            quiet = false;
    pthread_mutex_unlock(&p->lock);
    return quiet;
}

/*
 * Whether the completions already queued are all there is to do: then
 * the pool's fd need not be read now.  Either way, a push from now until
 * pyproc__async_run() takes the list writes nothing (done_due): this
 * dispatch takes what it pushes.
 */
static bool only_completions(pyproc_pool *p)
{
    pthread_mutex_lock(&p->done_lock);
    bool waiting = p->completed != NULL;
    p->done_due = true;
    pthread_mutex_unlock(&p->done_lock);
    return waiting && rings_quiet(p);
}

PYPROC_EXPORT int pyproc_dispatch(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);

    if (err < 0)
        return err;
    if (!only_completions(p))
        loop_events(p);
    return pyproc__async_run(p);
}
