/*
 * The callback server: workers' `await pyproc.ret(payload)` answered by
 * the application's pyproc_opts.callback on a thread of the pool's own.
 *
 * Not on the thread that drains replies: a callback may take long or make
 * calls on the pool.  Its answer never waits for ring space either: a
 * reply the ring cannot take now waits in the worker's outbox (send.c),
 * which this thread retries every OUTBOX_RETRY_MS while it is not empty.
 *
 * A worker may have at most PYPROC__CALLBACK_QUEUE_MAX callbacks queued, running
 * or in its outbox: one that sends more is not waiting for answers as a
 * worker does, and is stopped like one that writes a bad frame.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "drain.h"
#include "feature.h"

#define OUTBOX_RETRY_MS 10

static void req_free(struct callback_req *r)
{
    pyproc_msg_free(r->payload);
    pyproc__worker_unref(r->worker);
    free(r);
}

/*
 * CALLBACK_REPLY [true, value] or [false, error text].  Returns true when
 * the reply waits in the worker's outbox.
 */
static bool reply(struct callback_req *r, int rc, pyproc_msg *value)
{
    struct shm_buf b = {0};
    int err = pyproc__wire_callback_reply(&b, rc, value);

    if (err < 0) {
        shm_buf_free(&b);
        pyproc__callback_gone(r->worker);
        return false;
    }
    err = pyproc__send_reply(r->worker, r->id, b.data, b.len);
    shm_buf_free(&b);
    if (err == -ENOMEM)
        pyproc__callback_gone(r->worker);
    return err == -EAGAIN;
}

/*
 * Workers whose outbox still holds replies, each with a reference: the
 * callback thread's own, retried every OUTBOX_RETRY_MS.
 */
struct waiting {
    struct pp_worker **w;
    int n, cap;
};

static void waiting_add(struct waiting *q, struct pp_worker *w)
{
    for (int i = 0; i < q->n; i++)
        if (q->w[i] == w)
            return;
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 8;
        struct pp_worker **a = realloc(q->w, (size_t)cap * sizeof *a);
        if (!a)
            return; /* the next writer on that worker flushes it */
        q->w = a;
        q->cap = cap;
    }
    pyproc__worker_ref(w);
    q->w[q->n++] = w;
}

/* Retry every outbox; drop the workers whose outbox is empty. */
static void waiting_retry(struct waiting *q, bool all)
{
    for (int i = 0; i < q->n;) {
        if (all || !pyproc__outbox_retry(q->w[i])) {
            pyproc__worker_unref(q->w[i]);
            q->w[i] = q->w[--q->n];
        } else {
            i++;
        }
    }
}

/* Wait for a request, or at most OUTBOX_RETRY_MS while outboxes wait. */
static void wait_request(pyproc_pool *p, const struct waiting *q)
{
    struct timespec ts;

    if (!q->n) {
        pthread_cond_wait(&p->cb_cond, &p->lock);
        return;
    }
    /* cb_cond runs on CLOCK_REALTIME; a jump only makes one retry early or late. */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += OUTBOX_RETRY_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&p->cb_cond, &p->lock, &ts);
}

/* Run the application's callback for r and answer it, unless its worker
 * is gone already; true when the answer waits in the outbox. */
static bool serve(pyproc_pool *p, struct callback_req *r)
{
    struct pp_worker *w = r->worker;
    pyproc_msg *value = NULL;
    bool waits = false;
    int rc = -ENOSYS;

    /* dead is a hint (relaxed; stored in pyproc__worker_reap()): a reply
     * to a worker that dies meanwhile finds its ring closed. */
    if (atomic_load_explicit(&w->dead, memory_order_relaxed) || pyproc__chan_closed(w)) {
        pyproc__callback_gone(w);
        return false;
    }
    if (p->callback)
        rc = p->callback(p, w->index, r->payload, &value, p->callback_data);
    if (rc > 0)
        rc = 0;
    if (!atomic_load_explicit(&w->dead, memory_order_relaxed))
        waits = reply(r, rc, value);
    else
        pyproc__callback_gone(w);
    pyproc_msg_free(value);
    return waits;
}

static void *callback_main(void *arg)
{
    pyproc_pool *p = arg;
    struct waiting q = {0};

    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (!p->cb_head && !p->cb_stopping)
            wait_request(p, &q);
        struct callback_req *r = p->cb_head;
        if (!r && p->cb_stopping)
            break;
        if (r) {
            p->cb_head = r->next;
            if (!p->cb_head)
                p->cb_tail = NULL;
        }
        pthread_mutex_unlock(&p->lock);
        if (r && serve(p, r))
            waiting_add(&q, r->worker);
        if (r)
            req_free(r);
        waiting_retry(&q, false);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    /* The workers are stopping: their outboxes go with them. */
    waiting_retry(&q, true);
    free(q.w);
    return NULL;
}

int pyproc__callback_start(pyproc_pool *p)
{
    sigset_t all, old;
    int err;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = -pthread_create(&p->cb_thread, NULL, callback_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    p->cb_running = err == 0;
    return err;
}

void pyproc__callback_stop(pyproc_pool *p)
{
    struct callback_req *dropped;

    if (!p->cb_running)
        return;
    pthread_mutex_lock(&p->lock);
    p->cb_stopping = true;
    /* Requests not started yet are dropped: their workers are gone. */
    dropped = p->cb_head;
    p->cb_head = p->cb_tail = NULL;
    pthread_cond_broadcast(&p->cb_cond);
    pthread_mutex_unlock(&p->lock);
    while (dropped) {
        struct callback_req *r = dropped;
        dropped = r->next;
        pyproc__callback_gone(r->worker);
        req_free(r); /* may free the worker: not under pool->lock */
    }
    pthread_join(p->cb_thread, NULL);
    p->cb_running = false;
}
