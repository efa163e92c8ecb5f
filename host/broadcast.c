/*
 * What reaches every worker: pub, set_attr, and add_proc, which brings a
 * new worker up to date by replaying every add_sub, add_native and set_attr
 * so far.
 */
#include <errno.h>
#include <msgpuck.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "msg.h"
#include "pool.h"


int pyproc__history_add(pyproc_pool *p, uint16_t type, const struct shm_buf *b)
{
    struct history_entry e = {.type = type};
    int err = shm_buf_append(&e.payload, b->data, b->len);

    if (err < 0)
        return err;
    pthread_mutex_lock(&p->lock);
    struct history_entry *h = realloc(p->history, (p->nhistory + 1) * sizeof *h);
    if (h) {
        h[p->nhistory++] = e;
        p->history = h;
    }
    pthread_mutex_unlock(&p->lock);
    if (!h) {
        shm_buf_free(&e.payload);
        return -ENOMEM;
    }
    return 0;
}

/* Send the same CALL to every worker at once, then collect the answers. */
PYPROC_EXPORT int pyproc_pubv(pyproc_pool *p, const char *ref, pyproc_msg ***rets,
                              const char *fmt, va_list ap)
{
    struct shm_buf *b;
    pyproc_call **calls;
    pyproc_msg **out;
    int n, err = pyproc__pool_check(p);

    if (err < 0)
        return err;
    if (!rets)
        return -EINVAL;
    err = pyproc__encode_call(p, SHM_CALL_FUNC, ref, fmt, ap, &b);
    if (err < 0)
        return err;
    n = pyproc_workers(p);
    calls = calloc((size_t)n, sizeof *calls);
    out = calloc((size_t)n, sizeof *out);
    if (!calls || !out) {
        free(calls);
        free(out);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        struct pp_worker *w = pyproc__pick_worker(p, i);
        err = pyproc__call_send_raw(w, SHM_FRAME_CALL, b, &calls[i]);
        pyproc__worker_unref(w);
        if (err < 0)
            pyproc__msg_error(&out[i], "worker %d: %s", i, pyproc_strerror(err));
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

PYPROC_EXPORT int pyproc_pub(pyproc_pool *p, const char *ref, pyproc_msg ***rets,
                             const char *fmt, ...)
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
    size_t rl = strlen(ref);
    int err = 0;
    char *w = shm_buf_reserve(b, 16 + rl, &err);

    if (!w)
        return err;
    char *q = mp_encode_array(w, 2);
    q = mp_encode_str(q, ref, (uint32_t)rl);
    b->len = (size_t)(q - b->data);
    va_copy(va.ap, ap);
    pyproc__args_va(&args, &va);
    err = pyproc__fmt_encode_value(b, fmt, &args);
    va_end(va.ap);
    return err;
}

PYPROC_EXPORT int pyproc_set_attrv(pyproc_pool *p, const char *ref, const char *fmt,
                                   va_list ap)
{
    struct shm_buf b = {0};
    int err = pyproc__pool_check(p);

    if (err < 0)
        return err;
    if (!ref || !*ref || ref[0] == '.' || ref[strlen(ref) - 1] == '.')
        return -EINVAL;
    b.limit = p->max_msg;
    err = encode_set_attr(&b, ref, fmt, ap);
    if (err == 0)
        err = pyproc__broadcast(p, SHM_FRAME_SET_ATTR, &b, NULL);
    if (err == 0)
        err = pyproc__history_add(p, SHM_FRAME_SET_ATTR, &b);
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

PYPROC_EXPORT int pyproc_add_proc(pyproc_pool *p, int *ind)
{
    struct pp_worker *w = NULL;
    int index, err = pyproc__pool_check(p);

    if (err < 0)
        return err;
    pthread_mutex_lock(&p->grow_lock);
    index = pyproc_workers(p);
    err = pyproc__worker_bring_up(p, index, &w, NULL);
    if (err == 0) {
        pthread_mutex_lock(&p->lock);
        struct pp_worker **ws = realloc(p->workers, (size_t)(p->nworkers + 1) * sizeof *ws);
        if (ws) {
            w->published = true;
            ws[p->nworkers++] = w; /* the slot takes our reference */
            p->workers = ws;
        } else {
            err = -ENOMEM;
        }
        pthread_mutex_unlock(&p->lock);
        if (err < 0)
            pyproc__worker_discard(p, w);
    }
    pthread_mutex_unlock(&p->grow_lock);
    if (err == 0 && ind)
        *ind = index;
    return err;
}
