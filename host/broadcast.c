/*
 * What reaches every worker: add_sub, set_attr and pub, and the pool's
 * history of add_sub, add_native and set_attr, which workers that join
 * later are sent (workers.c).
 *
 * The history and the broadcast are one step as seen by a worker joining
 * the pool (add_proc, or a respawn): each request reaches each worker
 * exactly once, either by the broadcast or by the replay, never both and
 * never neither.  history_lock makes it so.  pyproc__broadcast() holds it
 * from the moment it reads the slots until the request is in the history;
 * a joining worker is replayed the history without it, then holds it
 * while it is sent what the history gained meanwhile and is put in its
 * slot.  So a worker in a slot when a broadcast begins gets the request
 * from the broadcast and had replayed the history before it; one put in
 * its slot later gets it from the history.  A worker counts how much of
 * the history it was sent (pp_worker.replayed), so it is sent no entry
 * twice.
 *
 * A slot whose worker is dead when the broadcast reads it is passed over:
 * its replacement gets the request from the history.  A worker that dies
 * while it handles the request fails the broadcast (the request may be
 * what killed it), as does any error; a failed request is not kept, though
 * the workers that took it keep what it did.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "msg.h"
#include "wire.h"
#include "chan.h"
#include "feature.h"

/*
 * Copy b into a history entry and make room for it in the history, so
 * that keeping it, once every worker took it, cannot fail.  Call with
 * history_lock held: only its holder adds to the history.
 */
static int history_prepare(pyproc_pool *p, uint16_t type, const struct shm_buf *b,
                           struct history_entry *ret)
{
    struct history_entry e = {.type = type};
    int err = shm_buf_append(&e.payload, b->data, b->len);

    if (err < 0)
        return err;
    pthread_mutex_lock(&p->lock);
    struct history_entry *h = realloc(p->history, (p->nhistory + 1) * sizeof *h);
    if (h)
        p->history = h;
    pthread_mutex_unlock(&p->lock);
    if (!h) {
        shm_buf_free(&e.payload);
        return -ENOMEM;
    }
    *ret = e;
    return 0;
}

/* Keep e, for which history_prepare() made room (history_lock held). */
static void history_keep(pyproc_pool *p, const struct history_entry *e)
{
    pthread_mutex_lock(&p->lock);
    p->history[p->nhistory++] = *e;
    pthread_mutex_unlock(&p->lock);
}

/* Send the request to every live worker in a slot; calls[i] NULL where
 * none was sent.  Returns the first error. */
static int send_all(pyproc_pool *p, uint16_t type, const struct shm_buf *b, pyproc_call **calls,
                    int n)
{
    int first = 0;

    for (int i = 0; i < n; i++) {
        struct pp_worker *w = pyproc__pick_worker(p, i);
        int err = 0;
        /* Under pool->lock, which the reaper holds when it stores dead. */
        if (w && !atomic_load_explicit(&w->dead, memory_order_relaxed))
            err = pyproc__call_send_raw(w, type, b, &calls[i]);
        pyproc__worker_unref(w);
        if (err < 0 && !first)
            first = err;
    }
    return first;
}

/* Wait for every call sent; the first failure's message goes to *err_msg. */
static int wait_all(pyproc_call **calls, int n, int first, pyproc_msg **err_msg)
{
    for (int i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        if (!calls[i])
            continue;
        int err = pyproc__call_wait(calls[i], &m, -1);
        if (err < 0 && !first) {
            first = err;
            if (err_msg) {
                *err_msg = m;
                m = NULL;
            }
        }
        pyproc_msg_free(m);
        pyproc_call_free(calls[i]);
    }
    return first;
}

int pyproc__broadcast(pyproc_pool *p, uint16_t type, const struct shm_buf *b, pyproc_msg **err_msg)
{
    struct history_entry e = {0};
    pyproc_call **calls = NULL;
    int n, err;

    pthread_mutex_lock(&p->history_lock);
    /* Slots are added under history_lock: n holds until we unlock. */
    n = pyproc_workers(p);
    err = history_prepare(p, type, b, &e);
    if (err == 0 && !(calls = calloc((size_t)n, sizeof *calls)))
        err = -ENOMEM;
    if (err == 0) {
        err = wait_all(calls, n, send_all(p, type, b, calls, n), err_msg);
        if (err == 0)
            history_keep(p, &e);
    }
    pthread_mutex_unlock(&p->history_lock);
    if (err < 0)
        shm_buf_free(&e.payload);
    free(calls);
    return err;
}

/* Send the same CALL to every worker at once, then collect the answers. */
PYPROC_EXPORT int pyproc_pubv(pyproc_pool *p, const char *ref, pyproc_msg ***rets, const char *fmt,
                              va_list ap)
{
    struct shm_buf *b;
    pyproc_call **calls;
    pyproc_msg **out;
    int n, err;

    /* Counted for pyproc_drain() until every call is in its table. */
    if ((err = pyproc__work_begin(p)) < 0)
        return err;
    err = rets ? pyproc__encode_call(p, SHM_CALL_FUNC, ref, fmt, ap, &b, NULL) : -EINVAL;
    n = pyproc_workers(p);
    calls = err < 0 ? NULL : calloc((size_t)n, sizeof *calls);
    out = err < 0 ? NULL : calloc((size_t)n, sizeof *out);
    if (err == 0 && (!calls || !out))
        err = -ENOMEM;
    for (int i = 0; err == 0 && i < n; i++) {
        int sent;
        do { /* -ESTALE: the worker left its slot as we picked it */
            struct pp_worker *w = pyproc__pick_worker(p, i);
            sent = pyproc__call_send_raw(w, SHM_FRAME_CALL, b, &calls[i]);
            pyproc__worker_unref(w);
        } while (sent == -ESTALE);
        if (sent < 0)
            pyproc__msg_error(&out[i], "worker %d: %s", i, pyproc_strerror(sent));
    }
    pyproc__work_end(p);
    if (err < 0) {
        free(calls);
        free(out);
        return err;
    }
    for (int i = 0; i < n; i++) {
        if (calls[i]) {
            pyproc__call_wait(calls[i], &out[i], -1);
            pyproc_call_free(calls[i]);
        }
    }
    free(calls);
    *rets = out;
    return n;
}

PYPROC_EXPORT int pyproc_pub(pyproc_pool *p, const char *ref, pyproc_msg ***rets, const char *fmt,
                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_pubv(p, ref, rets, fmt, ap);
    va_end(ap);
    return err;
}

/* SET_ATTR [ref, value]: the value is what fmt describes. */
static int encode_set_attr(struct shm_buf *b, const char *ref, const char *fmt, va_list ap)
{
    struct pyproc__args args;
    struct pyproc__va va;
    int err;

    va_copy(va.ap, ap);
    pyproc__args_va(&args, &va);
    err = pyproc__wire_set_attr(b, ref, fmt, &args);
    va_end(va.ap);
    return err;
}

PYPROC_EXPORT int pyproc_set_attrv(pyproc_pool *p, const char *ref, const char *fmt, va_list ap)
{
    struct shm_buf b = {0};
    int err = pyproc__pool_accepting(p);

    if (err < 0)
        return err;
    if (!ref || !*ref || ref[0] == '.' || ref[strlen(ref) - 1] == '.')
        return -EINVAL;
    b.limit = p->max_msg;
    err = encode_set_attr(&b, ref, fmt, ap);
    if (err == 0)
        err = pyproc__broadcast(p, SHM_FRAME_SET_ATTR, &b, NULL);
    shm_buf_free(&b);
    return err;
}

PYPROC_EXPORT int pyproc_set_attr(pyproc_pool *p, const char *ref, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_set_attrv(p, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_add_sub_err(pyproc_pool *p, const char *name, const char *pypath,
                                     unsigned flags, pyproc_msg **err_msg)
{
    struct shm_buf b = {0};
    int err = pyproc__pool_accepting(p);

    if (err < 0)
        return err;
    if (!name || !*name || !pypath || !*pypath || (flags & ~(PYPROC_SUB_INIT | PYPROC_SUB_PRELOAD)))
        return -EINVAL;
    /* Imported in the template first, so workers forked later share it;
     * the broadcast then mounts it everywhere as usual. */
    if ((flags & PYPROC_SUB_PRELOAD) && p->preload)
        p->preload(p, name, pypath);
    b.limit = p->max_msg;
    err = pyproc__wire_add_sub(&b, name, pypath, flags & PYPROC_SUB_INIT);
    if (err == 0)
        err = pyproc__broadcast(p, SHM_FRAME_ADD_SUB, &b, err_msg);
    shm_buf_free(&b);
    return err;
}

PYPROC_EXPORT int pyproc_add_sub(pyproc_pool *p, const char *name, const char *pypath,
                                 unsigned flags)
{
    return pyproc_add_sub_err(p, name, pypath, flags, NULL);
}
