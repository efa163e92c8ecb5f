/*
 * The public call API: func, track, ind, wait, free.
 */
#include <errno.h>
#include <stdlib.h>

#include "wire.h"
#include "chan.h"
#include "feature.h"

PYPROC_EXPORT int pyproc_track_funcv(pyproc_pool *p, int *ind, pyproc_call **call, const char *ref,
                                     const char *fmt, va_list ap)
{
    pyproc_call *c;
    int err;

    if (!call)
        return -EINVAL;
    err = pyproc__call_start(p, -1, SHM_CALL_FUNC, ref, fmt, ap, &c);
    if (err < 0)
        return err;
    if (ind)
        *ind = c->index;
    *call = c;
    return 0;
}

PYPROC_EXPORT int pyproc_track_func(pyproc_pool *p, int *ind, pyproc_call **call, const char *ref,
                                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_track_funcv(p, ind, call, ref, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_ind_callv(pyproc_pool *p, int ind, pyproc_call **call, const char *ref,
                                   const char *fmt, va_list ap)
{
    if (ind < 0 || !call)
        return -EINVAL;
    return pyproc__call_start(p, ind, SHM_CALL_FUNC, ref, fmt, ap, call);
}

PYPROC_EXPORT int pyproc_ind_call(pyproc_pool *p, int ind, pyproc_call **call, const char *ref,
                                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_ind_callv(p, ind, call, ref, fmt, ap);
    va_end(ap);
    return err;
}

/* Start on worker ind (-1: next) and wait. */
static int call_and_wait(pyproc_pool *p, int ind, const char *ref, pyproc_msg **ret,
                         const char *fmt, va_list ap)
{
    pyproc_call *c;
    int err = pyproc__call_start(p, ind, SHM_CALL_FUNC, ref, fmt, ap, &c);

    if (err < 0)
        return err;
    err = pyproc__call_wait(c, ret, -1);
    pyproc_call_free(c);
    return err;
}

PYPROC_EXPORT int pyproc_funcv(pyproc_pool *p, const char *ref, pyproc_msg **ret, const char *fmt,
                               va_list ap)
{
    return call_and_wait(p, -1, ref, ret, fmt, ap);
}

PYPROC_EXPORT int pyproc_func(pyproc_pool *p, const char *ref, pyproc_msg **ret, const char *fmt,
                              ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = call_and_wait(p, -1, ref, ret, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_ind_funcv(pyproc_pool *p, int ind, const char *ref, pyproc_msg **ret,
                                   const char *fmt, va_list ap)
{
    if (ind < 0)
        return -EINVAL;
    return call_and_wait(p, ind, ref, ret, fmt, ap);
}

PYPROC_EXPORT int pyproc_ind_func(pyproc_pool *p, int ind, const char *ref, pyproc_msg **ret,
                                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = pyproc_ind_funcv(p, ind, ref, ret, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT int pyproc_wait(pyproc_call *c, pyproc_msg **ret, int timeout_ms)
{
    if (!c || c->is_stream)
        return -EINVAL;
    if (c->fork_gen != pyproc__fork_gen())
        return -ECHILD;
    if (atomic_load_explicit(&c->cb, memory_order_relaxed) != CB_NONE)
        return -EBUSY; /* its end goes to a callback */
    return pyproc__call_wait(c, ret, timeout_ms);
}

PYPROC_EXPORT int pyproc_call_worker(pyproc_call *c)
{
    return c ? c->index : -EINVAL;
}

/*
 * A forked child's copy of a call: its worker, table and rings are the
 * parent's, live, so only the child's private memory is released.
 */
static void call_forget(pyproc_call *c)
{
    if (!c->taken)
        pyproc_msg_free(c->ret);
    if (c->is_stream)
        pyproc__stream_free_items(c);
    free(c);
}

PYPROC_EXPORT void pyproc_call_free(pyproc_call *c)
{
    if (!c)
        return;
    /* Release: pairs with the acquire load in dispatch (async.c), which
     * then runs no callback for this handle (and, for a map, no longer
     * looks at the map, which goes now). */
    atomic_store_explicit(&c->cb_freed, true, memory_order_release);
    if (c->map) {
        pyproc__map_free(c);
        return;
    }
    if (c->fork_gen != pyproc__fork_gen()) {
        call_forget(c);
        return;
    }
    if (!pyproc__call_done(c) ||
        (c->is_stream && !atomic_load_explicit(&c->ended, memory_order_acquire))) {
        /* A call whose end was to go to a callback is not wanted any
         * more: stop it rather than let it run for nobody. */
        if (!c->is_stream && atomic_load_explicit(&c->cb, memory_order_relaxed) != CB_NONE)
            pyproc__call_interrupt(c, SHM_INTERRUPT_CANCEL);
        if (pyproc__table_remove(c->worker, c)) {
            /* No answer will reach it now; a stream's generator is closed,
             * through the stop table, or, when that is full, a CANCEL
             * frame (this is an application thread: it may wait). */
            if (c->is_stream &&
                pyproc__worker_stop_call(c->worker, c->id, SHM_INTERRUPT_CANCEL) < 0) {
                char nil[PYPROC__WIRE_SMALL];
                pyproc__send(c->worker, SHM_FRAME_CANCEL, c->id, nil, pyproc__wire_nil(nil));
            }
            pyproc__call_unref(c);
        }
    }
    pyproc__call_unref(c);
}
