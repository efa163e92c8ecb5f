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

#include "feature.h"

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
