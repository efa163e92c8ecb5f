/*
 * The _pyproc module: the C half of the worker's loop.
 *
 * The hub (embed/python/hub.py) runs an asyncio loop whose selector calls
 * _pyproc.select().  That call serves the request ring in C: it decodes
 * each frame straight from the ring, resolves the reference through a
 * cache, calls plain functions at once and writes their replies, and hands
 * coroutines to the hub, which runs their first step inside a real Task.
 * It returns to the loop only when the loop has work of its own (ready
 * handles, a wake-up from another thread, a timer due, a signal), so a busy
 * stream of plain calls never leaves C.
 */
#include "bridge.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <msgpuck.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../shm/futex.h"
#include "buffers.h"
#include "hot.h"
#include "native.h"
#include "buffers.h"
#include "worker.h"

struct worker the_worker = {.death_fd = -1, .fast_tasks = true, .template_fd = -1};

/* ---- waiting ---- */

/* How long the worker stays idle before it trims its heap. */
#define TRIM_IDLE_MS 1000

/*
 * The worker spins for work only while the host is busy.  Spinning after
 * answering an idle host gains nothing (its next call is far off) and
 * costs its wake-up: on a 2-CPU machine, the host is then woken on the
 * other, halted CPU, which takes tens of microseconds more.  The host side
 * (host/call.c) does the same: it spins for an answer only when it found
 * the worker awake.
 */
#define BUSY_GAP_NS (1000 * 1000LL)

WORKER_HOT static bool has_work(void)
{
    struct worker *w = &the_worker;
    return !shm_ring_empty(&w->requests) || atomic_load(&w->woken) ||
           shm_ring_is_closed(&w->requests) || worker_control_pending();
}

/*
 * Sharing a CPU with the host.  A yield that takes this long ran someone
 * else on our CPU; CROWDED_YIELDS of them in a row, and the host (or
 * whoever it is) and we take turns on one CPU, a few microseconds a turn,
 * where two CPUs would answer in well under one.  The scheduler does not
 * part two threads that run every few microseconds (both stay cache-hot),
 * so the worker moves itself: to the CPUs it may use but this one, and at
 * once back to all of them, which leaves it where it landed.  Not more
 * often than every MOVE_EVERY_NS.
 */
#define CROWDED_YIELD_NS 1000
#define CROWDED_YIELDS 8
#define MOVE_EVERY_NS (100 * 1000 * 1000LL)

/*
 * A yield that took longer than this ran someone that does not hand the
 * CPU back soon, such as a busy process that the scheduler gives a whole
 * slice: yielding to it at once (see spin()) would cost a call that comes
 * meanwhile that slice, a millisecond or so, every time.
 */
#define SHARED_YIELD_MAX_NS (50 * 1000)

static unsigned crowded;
static int64_t moved_ns;
/* The last yield ran someone else, and briefly: see spin(). */
static bool cpu_shared;

static void move_off_this_cpu(void)
{
    cpu_set_t all, others;
    int cpu = sched_getcpu();

    if (cpu < 0 || sched_getaffinity(0, sizeof all, &all) < 0 || !CPU_ISSET(cpu, &all))
        return;
    others = all;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) == 0 || sched_setaffinity(0, sizeof others, &others) < 0)
        return;
    sched_setaffinity(0, sizeof all, &all);
}

/* Yield the CPU, and watch for a crowded one; now is the time before. */
static void yield_cpu(int64_t now)
{
    sched_yield();
    int64_t took = shm_now_ns() - now;
    cpu_shared = took >= CROWDED_YIELD_NS && took < SHARED_YIELD_MAX_NS;
    if (took < CROWDED_YIELD_NS) {
        crowded = 0;
    } else if (++crowded >= CROWDED_YIELDS && now - moved_ns > MOVE_EVERY_NS) {
        crowded = 0;
        moved_ns = now;
        move_off_this_cpu();
    }
}

/*
 * True when this is the only thread Python knows of, in the only
 * interpreter: then no thread can want the GIL (a new one, made by
 * threading or PyGILState_Ensure(), is listed before it asks for it).
 * Needs the GIL.
 */
WORKER_HOT static bool python_alone(void)
{
    PyThreadState *me = PyThreadState_Get();
    PyInterpreterState *interp = PyThreadState_GetInterpreter(me);

    return PyInterpreterState_ThreadHead(interp) == me && !PyThreadState_Next(me) &&
           PyInterpreterState_Head() == interp && !PyInterpreterState_Next(interp);
}

enum { SPIN_NONE, SPIN_FOUND, SPIN_NOT_ALONE };

/*
 * Spin up to the budget; SPIN_FOUND when work turned up.  It goes on
 * yielding rather than sleeping: a host that shares our CPU then runs, and
 * both stay runnable, where a sleep and a wake-up would pull the woken side
 * back next to its waker.  Holding the GIL, it gives up (SPIN_NOT_ALONE)
 * as soon as another thread appears, which may want it.
 *
 * When the last yield ran someone else for a moment, the CPU is yielded
 * first, not after a microsecond's spin: whoever shares it is likely the
 * one the host waits for next.  One caller on a pool of 2 with 2 CPUs is
 * the case: the caller holds one CPU and the workers take turns on the
 * other, and round robin sends each call to the worker that is not
 * running.  Yielding as soon as we answered switches our sibling in while
 * the host takes the answer and sends it its call, instead of after; that
 * cut sync-2w from 3.8 to 1.7 us (close to the one switch between
 * processes per call that the bench's switch row shows), sync itself
 * unchanged.  A yield that finds the CPU free costs one system call, and
 * clears the flag.
 */
WORKER_HOT static int spin(int64_t budget_ns, bool holding_gil)
{
    int64_t start = 0, until = 0;

    if (cpu_shared && !has_work())
        yield_cpu(shm_now_ns());
    for (unsigned i = 1;; i++) {
        if (has_work())
            return SPIN_FOUND;
        shm_cpu_relax();
        if ((i & 63) == 0) {
            int64_t now = shm_now_ns();
            /* The clock is first read 64 rounds in: a busy host's next
             * call, which comes sooner, costs no reading.  Those rounds
             * count as the microsecond or more they take, so every
             * reading is past SHM_SPIN_SOLO_NS and yields, as
             * shm_spin_yield() does after that long. */
            if (!start) {
                start = now - SHM_SPIN_SOLO_NS;
                until = start + budget_ns;
            }
            if (now >= until)
                return SPIN_NONE;
            if (holding_gil && !python_alone())
                return SPIN_NOT_ALONE;
            yield_cpu(now);
        }
    }
}

/*
 * A spin pays when the next request comes within its budget, sparing the
 * host the wake-up of a sleeping worker.  One that did not (the host was
 * busy elsewhere: a saturated pool, where the spin only takes a CPU from
 * those who have work) makes the worker sleep at once the next
 * SPIN_PROBE_EVERY - 1 times it runs out of work; the next one tries
 * again, so that spinning comes back when it pays again.
 */
#define SPIN_PROBE_EVERY 16u

/*
 * How long to spin for the next request before sleeping: only while the
 * host is busy with us (the last sleep was short), recent spins paid, and
 * the host waits for each answer before its next call (we served one
 * request at a time).  A host that sends batches is busy with the
 * answers to the last one before it sends again, and wants the CPU.
 * A host that slept for our last answer takes a wake-up before its next
 * call: wait that much longer for it.
 */
static int64_t spin_budget(void)
{
    struct worker *w = &the_worker;

    if (!w->busy || w->last_served > 1 ||
        (w->spin_unpaid && ++w->spin_skipped % SPIN_PROBE_EVERY != 0))
        return 0;
    return w->host_slept ? 4 * w->spin_ns : w->spin_ns;
}

/* Spin for the budget and remember whether it paid (spin()'s answer). */
static int spin_and_judge(int64_t budget_ns, bool holding_gil)
{
    struct worker *w = &the_worker;
    int found;

    if (budget_ns <= 0)
        return SPIN_NONE;
    found = spin(budget_ns, holding_gil);
    if (found != SPIN_NOT_ALONE) {
        w->spin_unpaid = found != SPIN_FOUND;
        w->spin_skipped = 0;
    }
    return found;
}

enum { WAIT_WORK, WAIT_TIMEOUT, WAIT_SIGNAL };

/*
 * Sleep on the request ring's futex until a frame, a wake-up or the
 * timeout.  Called without the GIL.
 */
WORKER_HOT static int sleep_futex(int timeout_ms)
{
    struct worker *w = &the_worker;
    int r = 0;

    /* A stop or shutdown posted since has no frame to show for it: look
     * for it after the fence in shm_ring_sleep_begin(), which pairs with
     * the one in the host's wake-up. */
    if (!shm_ring_sleep_begin(&w->requests, SHM_SLEEP_FUTEX) && !atomic_load(&w->woken) &&
        !worker_control_pending()) {
        int64_t slept = shm_now_ns();
        r = shm_futex_wait(&w->requests.ctl->consumer_wait, SHM_SLEEP_FUTEX, timeout_ms, true);
        /* A short sleep means the host is sending one call after another:
         * spin between them again.  A long one means it is idle. */
        w->busy = shm_now_ns() - slept < BUSY_GAP_NS;
    }
    shm_ring_sleep_end(&w->requests);
    if (r == -EINTR)
        return WAIT_SIGNAL;
    return r == -ETIMEDOUT ? WAIT_TIMEOUT : WAIT_WORK;
}

static int timeout_ms_of(PyObject *timeout)
{
    if (timeout == Py_None)
        return -1;
    double t = PyFloat_AsDouble(timeout);
    if (t <= 0 || isnan(t))
        return 0;
    return t > 86400.0 ? 86400000 : (int)ceil(t * 1000.0);
}

/*
 * select(timeout, ready, scheduled, fds) -> 0 | 1: serve the ring until
 * the loop has something of its own to do: a ready handle, a new timer
 * (which may be due before our timeout), a new fd to watch (the loop must
 * then wait in epoll), a wake-up from another thread, or the timeout.  Returns 1 when a signal interrupted the wait (the caller polls
 * its fds at once so asyncio sees the wake-up byte).
 */
WORKER_HOT static PyObject *py_select(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    struct worker *w = &the_worker;
    int64_t deadline;
    int timeout_ms;

    (void)self;
    worker_leave_if_forked();
    if (n != 4 || !PyList_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "select(timeout, ready, scheduled, fds)");
        return NULL;
    }
    Py_ssize_t timers = PyList_GET_SIZE(args[2]), fds = PyDict_GET_SIZE(args[3]);
    timeout_ms = timeout_ms_of(args[0]);
    deadline = timeout_ms < 0 ? INT64_MAX : shm_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        atomic_store(&w->woken, 0);
        long served = serve_ring();
        if (served < 0 || w->shutdown)
            break;
        if (served > 0)
            w->last_served = served;
        if (PyObject_Length(args[1]) > 0 || PyList_GET_SIZE(args[2]) != timers ||
            PyDict_GET_SIZE(args[3]) != fds || timeout_ms == 0)
            break;
        /* No timer: no clock to read. */
        int64_t left = deadline == INT64_MAX ? INT64_MAX : deadline - shm_now_ns();
        if (left <= 0)
            break;
        int how = WAIT_WORK;
        int64_t budget = spin_budget();
        if (budget > left)
            budget = left;
        /* Alone, spin with the GIL held: no one else wants it, and to drop
         * and take it back costs about as much as serving a call. */
        int spun = budget <= 0      ? SPIN_NONE
                   : python_alone() ? spin_and_judge(budget, true)
                                    : SPIN_NOT_ALONE;
        if (spun != SPIN_FOUND) {
            Py_BEGIN_ALLOW_THREADS if (spun == SPIN_NONE ||
                                       spin_and_judge(budget, false) != SPIN_FOUND)
            {
                left = deadline == INT64_MAX ? INT64_MAX : deadline - shm_now_ns();
                int ms = deadline == INT64_MAX ? -1 : (int)((left + 999999) / 1000000);
                if (w->trim_when_idle && (ms < 0 || ms > TRIM_IDLE_MS)) {
                    /* Idle for a while after large messages: give back the
                     * memory they left behind.  Not sooner, or a host that
                     * sends them back to back would fault it all in again. */
                    how = sleep_futex(TRIM_IDLE_MS);
                    if (how == WAIT_TIMEOUT && !has_work()) {
                        w->trim_when_idle = false;
                        shm_buf_free(&w->out);
                        malloc_trim(0);
                        how = WAIT_WORK; /* go round: the loop sleeps again */
                    }
                } else {
                    how = left > 0 ? sleep_futex(ms) : WAIT_TIMEOUT;
                }
            }
            Py_END_ALLOW_THREADS
        }
        if (how == WAIT_SIGNAL) {
            if (PyErr_CheckSignals() < 0)
                return NULL;
            return PyLong_FromLong(1);
        }
        if (atomic_load(&w->woken))
            break;
    }
    return PyLong_FromLong(0);
}

/* serve() -> count: serve what is in the ring now, without waiting. */
static PyObject *py_serve(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(serve_ring());
}

/*
 * spin_then_arm() -> bool: before the loop sleeps in epoll (user code has
 * fds of its own), spin for the budget, then ask the host to ring the
 * doorbell.  False when work turned up and the loop must not sleep.
 */
static PyObject *py_spin_then_arm(PyObject *self, PyObject *unused)
{
    struct worker *w = &the_worker;
    bool found;

    (void)self;
    (void)unused;
    worker_leave_if_forked();
    Py_BEGIN_ALLOW_THREADS found = spin(w->spin_ns, false) == SPIN_FOUND;
    Py_END_ALLOW_THREADS if (found || shm_ring_sleep_begin(&w->requests, SHM_SLEEP_DOORBELL) ||
                             atomic_load(&w->woken) || worker_control_pending())
    {
        shm_ring_sleep_end(&w->requests);
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyObject *py_disarm(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    worker_leave_if_forked();
    shm_ring_sleep_end(&the_worker.requests);
    Py_RETURN_NONE;
}

/* wake(): from any thread, make the loop look at its ready queue. */
static PyObject *py_wake(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (the_worker.forked)
        Py_RETURN_NONE; /* its parent's ring: not ours to touch */
    atomic_store(&the_worker.woken, 1);
    shm_ring_notify(&the_worker.requests);
    Py_RETURN_NONE;
}

/*
 * take_interrupt() -> 0 | SHM_INTERRUPT_*: called by the signal handler;
 * says whether the host asked to stop the plain call running now.
 */
static PyObject *py_take_interrupt(PyObject *self, PyObject *unused)
{
    struct shm_seg_header *h = the_worker.seg.hdr;
    uint64_t running;

    (void)self;
    (void)unused;
    if (the_worker.forked)
        return PyLong_FromLong(0); /* the running call is the parent's */
    running = atomic_load_explicit(&h->running_call, memory_order_relaxed);
    return PyLong_FromLong((long)shm_seg_stop_lookup(h, running));
}

/* forked_child(): run in a child that user code forked (os.fork). */
static PyObject *py_forked_child(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    the_worker.forked = 1; /* the at-fork handler did too, for C forks */
    worker_forked_child_setup();
    Py_RETURN_NONE;
}

/* _alone() -> bool: whether the loop would spin holding the GIL. */
static PyObject *py_alone(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(python_alone());
}

/* set_fast_tasks(flag): whether the loop has no task factory. */
static PyObject *py_set_fast_tasks(PyObject *self, PyObject *flag)
{
    (void)self;
    the_worker.fast_tasks = PyObject_IsTrue(flag) == 1;
    Py_RETURN_NONE;
}

/* set_hub(hub, module): the hub object and the module with its functions. */
static PyObject *py_set_hub(PyObject *self, PyObject *args)
{
    static const char *const names[] = {"create_task", "ready",      "ready_pop",     "track_task",
                                        "resolve",     "start_coro", "start_gen",     "error_info",
                                        "add_sub",     "add_native", "set_attr",      "shutdown",
                                        "cancel",      "credit",     "callback_reply"};
    PyObject **slots[] = {&H.create_task, &H.ready,      &H.ready_pop,     &H.track_task,
                          &H.resolve,     &H.start_coro, &H.start_gen,     &H.error_info,
                          &H.add_sub,     &H.add_native, &H.set_attr,      &H.shutdown,
                          &H.cancel,      &H.credit,     &H.callback_reply};
    PyObject *hub, *mod;

    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &hub, &mod))
        return NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PyObject *fn = PyObject_GetAttrString(mod, names[i]); /* new ref */
        if (!fn)
            return NULL;
        Py_XSETREF(*slots[i], fn); /* steals fn */
    }
    /* Maps' (embed/map.c). */
    PyObject *fn = PyObject_GetAttrString(mod, "start_map"); /* new ref */
    if (!fn)
        return NULL;
    Py_XSETREF(H.start_map, fn); /* steals fn */
    Py_INCREF(hub);
    Py_XSETREF(H.hub, hub);
    if (!H.refs && !(H.refs = PyDict_New()))
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"select", (PyCFunction)(void (*)(void))py_select, METH_FASTCALL, NULL},
    {"serve", py_serve, METH_NOARGS, NULL},
    {"take_interrupt", py_take_interrupt, METH_NOARGS, NULL},
    {"forked_child", py_forked_child, METH_NOARGS, NULL},
    {"set_fast_tasks", py_set_fast_tasks, METH_O, NULL},
    {"_alone", py_alone, METH_NOARGS, NULL},
    {"spin_then_arm", py_spin_then_arm, METH_NOARGS, NULL},
    {"disarm", py_disarm, METH_NOARGS, NULL},
    {"wake", py_wake, METH_NOARGS, NULL},
    {"send_result", (PyCFunction)(void (*)(void))py_send_result, METH_FASTCALL, NULL},
    {"send_error", (PyCFunction)(void (*)(void))py_send_error, METH_FASTCALL, NULL},
    {"send_yield", (PyCFunction)(void (*)(void))py_send_yield, METH_FASTCALL, NULL},
    {"send_end", (PyCFunction)(void (*)(void))py_send_end, METH_FASTCALL, NULL},
    {"send_callback", (PyCFunction)(void (*)(void))py_send_callback, METH_FASTCALL, NULL},
    {"pump", (PyCFunction)(void (*)(void))py_pump, METH_FASTCALL, NULL},
    {"send_map_item", (PyCFunction)(void (*)(void))py_send_map_item, METH_FASTCALL, NULL},
    {"ready", py_ready, METH_NOARGS, NULL},
    {"set_hub", py_set_hub, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_pyproc",
    "The worker's link to its rings.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyObject *pyproc_bridge_module(void)
{
    struct worker *w = &the_worker;
    if (w->template_fd >= 0)
        worker_text_on_huge_pages();        /* shared by the workers it forks */
    PyObject *m = PyModule_Create(&module); /* new ref */

    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "index", w->index) < 0 ||
        PyModule_AddStringConstant(m, "pool", w->pool) < 0 ||
        PyModule_AddStringConstant(m, "python_path", w->python_path ? w->python_path : "") < 0 ||
        PyModule_AddIntConstant(m, "doorbell", w->requests.doorbell_fd) < 0 ||
        PyModule_AddIntConstant(m, "stream_window", SHM_STREAM_WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "INTERRUPT_SIGNAL", SHM_INTERRUPT_SIGNAL) < 0 ||
        PyModule_AddIntConstant(m, "INTERRUPT_CANCEL", SHM_INTERRUPT_CANCEL) < 0 ||
        PyModule_AddIntConstant(m, "INTERRUPT_TIMEOUT", SHM_INTERRUPT_TIMEOUT) < 0 ||
        native_register(m) < 0 || worker_buffers_register(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

int pyproc_bridge_register(void)
{
    return PyImport_AppendInittab("_pyproc", pyproc_bridge_module);
}
