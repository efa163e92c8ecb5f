/*
 * The callback server: workers' `await pyproc.ret(payload)` answered by
 * the application's pyproc_opts.callback on a thread of the pool's own.
 *
 * Not on the thread that drains replies: a callback may take long or make
 * calls on the pool, and its answer is a write to the request ring, which
 * may have to wait for space while the worker waits for us to drain.
 */
#include <errno.h>
#include <msgpuck.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "pool.h"

int pyproc__callback_push(struct pp_worker *w, uint64_t id, const uint8_t *payload, size_t len)
{
    pyproc_pool *p = w->pool;
    struct callback_req *r = calloc(1, sizeof *r);
    int err;

    if (!r)
        return -ENOMEM;
    r->worker = w;
    r->id = id;
    err = pyproc__msg_from_value(&r->payload, payload, len);
    if (err < 0) {
        free(r);
        return err;
    }
    pthread_mutex_lock(&p->lock);
    if (p->cb_tail)
        p->cb_tail->next = r;
    else
        p->cb_head = r;
    p->cb_tail = r;
    pthread_cond_broadcast(&p->cb_cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* CALLBACK_REPLY [true, value] or [false, error text]. */
static void reply(struct callback_req *r, int rc, pyproc_msg *value)
{
    struct shm_buf b = {0};
    const void *data = NULL;
    const char *text = NULL;
    size_t len = 0;
    int err = 0;

    if (rc == 0 && value)
        data = pyproc_msg_data(value, &len);
    if (rc == 0 && value && !data)
        rc = -EINVAL; /* an error message is no value */
    if (rc < 0)
        text = value && pyproc_msg_error(value) ? pyproc_msg_error(value) : pyproc_strerror(rc);
    size_t need = 16 + (data ? len : 1) + (text ? strlen(text) : 0);
    char *w = shm_buf_reserve(&b, need, &err);
    if (!w)
        return;
    char *q = mp_encode_array(w, 2);
    q = mp_encode_bool(q, rc == 0);
    if (rc < 0) {
        q = mp_encode_str(q, text, (uint32_t)strlen(text));
    } else if (data) {
        memcpy(q, data, len);
        q += len;
    } else {
        q = mp_encode_nil(q);
    }
    b.len = (size_t)(q - b.data);
    pyproc__send(r->worker, SHM_FRAME_CALLBACK_REPLY, r->id, b.data, b.len);
    shm_buf_free(&b);
}

static void *callback_main(void *arg)
{
    pyproc_pool *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->cb_head && !p->cb_stopping)
            pthread_cond_wait(&p->cb_cond, &p->lock);
        struct callback_req *r = p->cb_head;
        if (!r)
            break;
        p->cb_head = r->next;
        if (!p->cb_head)
            p->cb_tail = NULL;
        pthread_mutex_unlock(&p->lock);

        pyproc_msg *value = NULL;
        int rc = -ENOSYS;
        if (p->callback)
            rc = p->callback(p, r->worker->index, r->payload, &value, p->callback_data);
        if (rc > 0)
            rc = 0;
        if (!atomic_load(&r->worker->dead))
            reply(r, rc, value);
        pyproc_msg_free(value);
        pyproc_msg_free(r->payload);
        free(r);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
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
    if (!p->cb_running)
        return;
    pthread_mutex_lock(&p->lock);
    p->cb_stopping = true;
    /* Requests not started yet are dropped: their workers are gone. */
    while (p->cb_head) {
        struct callback_req *r = p->cb_head;
        p->cb_head = r->next;
        pyproc_msg_free(r->payload);
        free(r);
    }
    p->cb_tail = NULL;
    pthread_cond_broadcast(&p->cb_cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->cb_thread, NULL);
    p->cb_running = false;
}
