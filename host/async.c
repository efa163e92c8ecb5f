/*
 * Asynchronous calls for applications with their own event loop.
 *
 * A finished asynchronous call goes on the pool's completed list and makes
 * done_fd readable; pyproc_dispatch() takes the whole list and runs the
 * callbacks on the application's thread, never inside the library's
 * threads, so a callback may do anything, including calls on the pool.
 */
#include <errno.h>
#include <unistd.h>

#include "pool.h"

void pyproc__async_push(pyproc_call *c)
{
    pyproc_pool *p = c->pool;
    bool was_empty;

    pthread_mutex_lock(&p->done_lock);
    was_empty = !p->completed;
    c->next_done = NULL;
    if (p->completed_tail)
        p->completed_tail->next_done = c;
    else
        p->completed = c;
    p->completed_tail = c;
    pthread_mutex_unlock(&p->done_lock);
    if (was_empty) {
        uint64_t one = 1;
        if (write(p->done_fd, &one, sizeof one) < 0) {
            /* The counter is full: the fd is readable, which is all we need. */
        }
    }
}

int pyproc__async_run(pyproc_pool *p)
{
    pyproc_call *list;
    uint64_t n;
    int ran = 0;

    pthread_mutex_lock(&p->done_lock);
    list = p->completed;
    p->completed = p->completed_tail = NULL;
    /* Emptied under the lock, so a push after this writes the fd again. */
    while (read(p->done_fd, &n, sizeof n) > 0)
        ;
    pthread_mutex_unlock(&p->done_lock);
    while (list) {
        pyproc_call *c = list;
        list = c->next_done;
        c->taken = true;
        c->done(p, c->result, c->ret, c->done_data);
        pyproc__call_unref(c);
        ran++;
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
    return err < 0 ? err : p->done_fd;
}

PYPROC_EXPORT int pyproc_dispatch(pyproc_pool *p)
{
    int err = pyproc__pool_check(p);
    return err < 0 ? err : pyproc__async_run(p);
}
