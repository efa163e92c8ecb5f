/*
 * torture: every kind of call at once, against one pool whose workers are
 * killed, added to and reconfigured meanwhile, and freed at the end while
 * calls, streams and callbacks are still running.
 *
 * Caller threads pick operations at random: plain and indexed calls,
 * tracked calls waited with short timeouts (some freed unwaited, some
 * cancelled), streams (some freed or cancelled early), calls that run past
 * the pool's call timeout, calls that raise, calls home to the callback,
 * asynchronous calls completed by a dispatcher thread, and reads of what
 * the admin thread stores with pyproc_set_attr() and pyproc_add_sub().
 * A killer thread SIGKILLs workers; the admin thread also adds workers.
 *
 * Checks: every operation ends exactly once (started and ended are counted
 * per kind, asynchronous completions per call), each with its own value or
 * an error that what happened to it allows; the workers hold what
 * pyproc_set_attr() and pyproc_add_sub() stored before the call started;
 * pyproc_pool_free() ends what is left with -ECANCELED; afterwards no
 * worker is left unreaped and no fd is left open.  A watchdog prints every
 * thread's stack (gdb) and aborts when nothing ends for STALL_S seconds or
 * the run overstays.  Leaks are for ASan's leak checker.
 *
 * Usage: torture [SECONDS]  (default $PYPROC_TORTURE_SECONDS, else 20; run
 * from the repository root).  $PYPROC_TORTURE_SEED fixes the random seed;
 * $PYPROC_TORTURE_HANG makes a caller hang, to see the watchdog work.
 * Exits non-zero on any failure.
 */
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pyproc.h"

extern char **environ;

#ifndef GRACE_S
#define GRACE_S 120 /* past the duration, for the ending phase */
#endif
#ifndef STALL_S
#define STALL_S 45 /* nothing ended for this long: a hang */
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

enum {
    CALLERS = 4,
    START_WORKERS = 3,
    MAX_WORKERS = 5,
    MAX_SUBS = 12,
    CALL_TIMEOUT_MS = 3000,
    MAX_ASYNC = 1 << 16,  /* asynchronous calls recorded for the check */
    LONG_WAIT_MS = 60000, /* no single call may take longer */
};

enum kind {
    K_FUNC,     /* pyproc_func, echo */
    K_IND,      /* pyproc_ind_func, echo */
    K_TRACK,    /* track/ind call of nap, waited with short timeouts */
    K_DROP,     /* tracked call freed before it ends */
    K_STREAM,   /* gen/track_gen/ind_gen, read to the end */
    K_STREAM_X, /* stream freed or cancelled early */
    K_TIMEOUT,  /* runs past call_timeout_ms */
    K_CANCEL,   /* pyproc_cancel on a running call */
    K_CALLBACK, /* calls home */
    K_RAISE,    /* Python raises */
    K_ASYNC,    /* pyproc_func_async, completed by pyproc_dispatch */
    K_CFG,      /* reads what pyproc_set_attr stored */
    K_SUB,      /* calls into a sub added by pyproc_add_sub */
    K_SET_ATTR,
    K_ADD_SUB,
    K_ADD_PROC,
    K_FINAL, /* in flight at pyproc_pool_free() */
    NKINDS
};

static const char *const kind_name[NKINDS] = {
    "func",         "ind_func", "track",    "drop",     "stream", "stream_early",
    "timeout",      "cancel",   "callback", "raise",    "async",  "set_attr_read",
    "add_sub_call", "set_attr", "add_sub",  "add_proc", "final",
};

static pyproc_pool *pool;
static _Atomic long started[NKINDS], ended[NKINDS], good[NKINDS], bad_total;
static _Atomic long progress; /* every end of anything */
static _Atomic long kills, waits_timed_out;
static _Atomic bool stopping; /* no new operations */
static _Atomic bool freeing;  /* pyproc_pool_free() runs or ran */
static _Atomic bool freed;
static _Atomic int callers_parked;
static _Atomic int64_t cfg_floor = -1; /* highest value set_attr stored */
static _Atomic int subs_ok;            /* subs x0..x(subs_ok-1) are mounted */
static bool trace;                     /* $PYPROC_TORTURE_TRACE: log the admin's steps */
static double t_start;

/* ---- small helpers ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int pick(uint64_t *s, int n)
{
    return (int)(rnd(s) % (uint64_t)n);
}

static void start(enum kind k)
{
    atomic_fetch_add(&started[k], 1);
}

/*
 * One operation ended.  ok says whether rc (and the value) is what may
 * happen to it; anything else is reported with its error text.
 */
static void end(enum kind k, bool ok, int rc, pyproc_msg *m, const char *what)
{
    atomic_fetch_add(&ended[k], 1);
    atomic_fetch_add(&progress, 1);
    if (ok) {
        atomic_fetch_add(&good[k], 1);
        return;
    }
    if (atomic_fetch_add(&bad_total, 1) < 30) {
        const char *e = m ? pyproc_msg_error(m) : NULL;
        fprintf(stderr, "torture: %s: %s ended with %d (%s)%s%s\n", kind_name[k], what, rc,
                pyproc_strerror(rc), e ? ": " : "", e ? e : "");
    }
}

/*
 * An error that a call may meet: its worker was killed, or the pool was
 * freed.  Calls that block their worker's loop (op_timeout) all go to
 * worker 0, so only there (or where the index is not known, ind < 0) may
 * a call wait behind one past the call timeout: elsewhere -ETIMEDOUT means
 * a call whose answer came but whose waiter was never woken, until the
 * call timeout ended it.
 */
static bool met_fate_at(int rc, int ind)
{
    return rc == PYPROC_EWORKER || (rc == -ETIMEDOUT && ind <= 0) ||
           (rc == -ECANCELED && atomic_load(&freeing));
}

static bool met_fate(int rc)
{
    return met_fate_at(rc, -1);
}

/*
 * A long stream is one call: on a loaded machine, reading it (or what was
 * queued before its cancel landed) can outlast the pool's call timeout,
 * on any worker.  -ETIMEDOUT is its due end then, and only then.
 */
static bool ran_past_timeout(int rc, double began)
{
    return rc == -ETIMEDOUT && (now() - began) * 1000 >= CALL_TIMEOUT_MS;
}

/* rc is 0 and m holds the int want. */
static bool is_int(int rc, pyproc_msg *m, int64_t want)
{
    int64_t got;
    return rc == 0 && m && pyproc_msg_read(m, "I", &got) == 0 && got == want;
}

/* Errors that come with a message must have one. */
static bool has_text(int rc, pyproc_msg *m)
{
    if (rc == PYPROC_EWORKER || rc == PYPROC_EREMOTE)
        return m && pyproc_msg_error(m);
    return true;
}

static int some_worker(uint64_t *s)
{
    int n = pyproc_workers(pool);
    return n > 0 ? pick(s, n) : 0;
}

/*
 * Wait for a tracked call in slices of 0 to 20 ms, as a caller polling it
 * would; a call that has not ended after LONG_WAIT_MS is reported (the
 * watchdog would catch a hang sooner).  pyproc_wait() says -ETIMEDOUT both
 * for a wait that ran out and for a call that the pool's call timeout
 * ended.  The latter mostly hands out a message (its text); when it does
 * not, the next wait says -EALREADY, as after any ending.
 */
static int wait_sliced(pyproc_call *c, pyproc_msg **m, uint64_t *s)
{
    double limit = now() + LONG_WAIT_MS / 1000.0;
    int rc, last = 0;
    while ((rc = pyproc_wait(c, m, pick(s, 21))) == -ETIMEDOUT && !*m && now() < limit) {
        atomic_fetch_add(&waits_timed_out, 1);
        last = rc;
    }
    return rc == -EALREADY && last == -ETIMEDOUT ? -ETIMEDOUT : rc;
}

/* ---- the operations ---- */

static void op_func(uint64_t *s, bool indexed)
{
    enum kind k = indexed ? K_IND : K_FUNC;
    int64_t v = (int64_t)rnd(s);
    int ind = indexed ? some_worker(s) : -1;
    pyproc_msg *m = NULL;
    start(k);
    int rc = indexed ? pyproc_ind_func(pool, ind, "tt.ops.echo", &m, "I", v)
                     : pyproc_func(pool, "tt.ops.echo", &m, "I", v);
    end(k, (is_int(rc, m, v) || met_fate_at(rc, ind)) && has_text(rc, m), rc, m, "echo");
    pyproc_msg_free(m);
}

static int track_nap(uint64_t *s, pyproc_call **c, int *ind, int64_t v, int ms)
{
    if (pick(s, 2)) {
        *ind = some_worker(s);
        return pyproc_ind_call(pool, *ind, c, "tt.ops.nap", "Ii", v, ms);
    }
    return pyproc_track_func(pool, ind, c, "tt.ops.nap", "Ii", v, ms);
}

static void op_track(uint64_t *s)
{
    int64_t v = (int64_t)rnd(s);
    pyproc_call *c = NULL;
    pyproc_msg *m = NULL;
    int ind = -1;
    bool drop = pick(s, 4) == 0;
    enum kind k = drop ? K_DROP : K_TRACK;

    start(k);
    int rc = track_nap(s, &c, &ind, v, pick(s, 50));
    if (rc < 0) {
        end(k, false, rc, NULL, "starting nap");
        return;
    }
    if (pyproc_call_worker(c) != ind) {
        end(k, false, pyproc_call_worker(c), NULL, "pyproc_call_worker differs");
        pyproc_call_free(c);
        return;
    }
    if (drop) {
        /* Freed running (or just ended): its answer is dropped. */
        sleep_ms(pick(s, 30));
        pyproc_call_free(c);
        end(k, true, 0, NULL, "nap freed early");
        return;
    }
    rc = wait_sliced(c, &m, s);
    bool ok = (is_int(rc, m, v) || met_fate_at(rc, ind)) && has_text(rc, m);
    if (rc == 0) {
        pyproc_msg *again = NULL;
        int rc2 = pyproc_wait(c, &again, 0);
        if (rc2 != -EALREADY) {
            ok = false;
            rc = rc2; /* reported below */
        }
        pyproc_msg_free(again);
    }
    end(k, ok, rc, m, "nap (or its second wait)");
    pyproc_msg_free(m);
    pyproc_call_free(c);
}

/* Start a stream of n items; *ind is its worker, or -1 when not known. */
static int start_stream(uint64_t *s, pyproc_call **c, int *ind, int n, int ms)
{
    bool async = pick(s, 2);
    const char *ref = async ? "tt.ops.acount" : "tt.ops.count";
    const char *fmt = async ? "ii" : "i";
    *ind = -1;
    switch (pick(s, 3)) {
    case 0:
        return pyproc_gen(pool, ref, c, fmt, n, ms);
    case 1:
        return pyproc_track_gen(pool, ind, c, ref, fmt, n, ms);
    default:
        *ind = some_worker(s);
        return pyproc_ind_gen(pool, *ind, ref, c, fmt, n, ms);
    }
}

/* Read up to `upto` items, which must be 0, 1, 2, ... in order.  Returns
 * the last pyproc_next() result; *count says how many items came. */
static int read_items(pyproc_call *c, int upto, int *count, pyproc_msg **err, bool *order_ok)
{
    int rc = 1;
    *count = 0;
    while (*count < upto) {
        pyproc_msg *item = NULL;
        rc = pyproc_next(c, &item);
        if (rc != 1) {
            *err = item;
            return rc;
        }
        if (!is_int(0, item, *count))
            *order_ok = false;
        pyproc_msg_free(item);
        (*count)++;
    }
    return rc;
}

static void op_stream(uint64_t *s)
{
    int n = pick(s, 200), ms = pick(s, 3), count = 0, ind;
    pyproc_call *c = NULL;
    pyproc_msg *err = NULL;
    bool order_ok = true;

    start(K_STREAM);
    int rc = start_stream(s, &c, &ind, n, ms);
    if (rc < 0) {
        end(K_STREAM, false, rc, NULL, "starting a stream");
        return;
    }
    rc = read_items(c, n + 1, &count, &err, &order_ok);
    bool ok = order_ok && has_text(rc, err) &&
              ((rc == 0 && count == n) || (rc < 0 && met_fate_at(rc, ind)));
    if (rc <= 0) {
        /* After the end or an error, pyproc_next() keeps returning 0. */
        pyproc_msg *more = NULL;
        if (pyproc_next(c, &more) != 0)
            ok = false;
        pyproc_msg_free(more);
    }
    end(K_STREAM, ok, rc, err, order_ok ? "stream" : "stream (items out of order)");
    pyproc_msg_free(err);
    pyproc_call_free(c);
}

/* A long stream, left early: freed with unread items, or cancelled. */
static void op_stream_early(uint64_t *s)
{
    int count = 0, ind;
    pyproc_call *c = NULL;
    pyproc_msg *err = NULL;
    bool order_ok = true, ok = true;

    start(K_STREAM_X);
    double began = now();
    int rc = start_stream(s, &c, &ind, 1000000, 1);
    if (rc < 0) {
        end(K_STREAM_X, false, rc, NULL, "starting a long stream");
        return;
    }
    rc = read_items(c, pick(s, 20), &count, &err, &order_ok);
    if (rc < 0)
        ok = met_fate_at(rc, ind) || ran_past_timeout(rc, began);
    else if (pick(s, 2)) {
        int crc = pyproc_cancel(c);
        ok = crc == 0 || crc == -EALREADY;
        /* Items already queued may still come before the end. */
        rc = read_items(c, 1000000, &count, &err, &(bool){true});
        ok = ok && (rc == -ECANCELED || met_fate_at(rc, ind) || ran_past_timeout(rc, began)) &&
             has_text(rc, err);
    }
    end(K_STREAM_X, ok && order_ok, rc, err, "stream left early");
    pyproc_msg_free(err);
    pyproc_call_free(c);
}

static void op_timeout(uint64_t *s)
{
    /* A C-stuck call costs its worker (killed a second past the timeout),
     * so it is rare. */
    int r = pick(s, 20);
    const char *ref = r == 0 ? "tt.ops.stuck" : r < 6 ? "tt.ops.spin" : "tt.ops.hang";
    pyproc_msg *m = NULL;
    start(K_TIMEOUT);
    int rc = r == 0 ? pyproc_ind_func(pool, 0, ref, &m, "i", 30)
                    : pyproc_ind_func(pool, 0, ref, &m, NULL);
    bool ok = (rc == -ETIMEDOUT || rc == PYPROC_EWORKER ||
               (rc == -ECANCELED && atomic_load(&freeing))) &&
              has_text(rc, m);
    end(K_TIMEOUT, ok, rc, m, ref);
    pyproc_msg_free(m);
}

static void op_cancel(uint64_t *s)
{
    bool quick = pick(s, 3) == 0;
    int64_t v = (int64_t)rnd(s);
    pyproc_call *c = NULL;
    pyproc_msg *m = NULL;
    int ind = -1;
    start(K_CANCEL);
    int rc = quick ? track_nap(s, &c, &ind, v, 0)
                   : pyproc_track_func(pool, &ind, &c, "tt.ops.hang", NULL);
    if (rc < 0) {
        end(K_CANCEL, false, rc, NULL, "starting a call to cancel");
        return;
    }
    sleep_ms(pick(s, 20));
    int crc = pyproc_cancel(c);
    rc = wait_sliced(c, &m, s);
    bool ok = (crc == 0 || crc == -EALREADY) && has_text(rc, m) &&
              (rc == -ECANCELED || met_fate_at(rc, ind) || (quick && is_int(rc, m, v)));
    end(K_CANCEL, ok, rc, m, quick ? "cancelled nap" : "cancelled hang");
    pyproc_msg_free(m);
    pyproc_call_free(c);
}

/* The callback answers 3 * v, or fails for multiples of 7. */
static int on_callback(pyproc_pool *p, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    int64_t v = 0;
    (void)ind;
    (void)data;
    if (pyproc_msg_read(payload, "I", &v) < 0)
        return -EBADMSG;
    if (v % 7 == 0)
        return -EIO;
    if (v % 5 == 0 && !atomic_load(&stopping)) {
        /* A callback may call the pool. */
        pyproc_msg *m = NULL;
        int rc = pyproc_func(p, "tt.ops.echo", &m, "I", v);
        bool ok = is_int(rc, m, v) || met_fate(rc);
        pyproc_msg_free(m);
        if (!ok)
            return -EPROTO;
    }
    if (atomic_load(&stopping))
        sleep_ms(50); /* still running when the pool is freed */
    return pyproc_msg_new(reply, "I", 3 * v);
}

static void op_callback(uint64_t *s)
{
    int64_t v = (int64_t)(rnd(s) % 1000000);
    pyproc_msg *m = NULL;
    start(K_CALLBACK);
    int rc = pyproc_func(pool, "tt.ops.call_home", &m, "I", v);
    bool ok = v % 7 == 0 ? rc == PYPROC_EREMOTE || met_fate(rc)
                         : is_int(rc, m, 3 * v) || met_fate(rc);
    end(K_CALLBACK, ok && has_text(rc, m), rc, m, "call_home");
    pyproc_msg_free(m);
}

static void op_raise(uint64_t *s)
{
    pyproc_msg *m = NULL;
    (void)s;
    start(K_RAISE);
    int rc = pyproc_func(pool, "tt.ops.fail", &m, "s", "on purpose");
    const char *e = m ? pyproc_msg_error(m) : NULL;
    bool ok = (rc == PYPROC_EREMOTE && e && strstr(e, "ValueError") && strstr(e, "on purpose")) ||
              (met_fate(rc) && has_text(rc, m));
    end(K_RAISE, ok, rc, m, "fail");
    pyproc_msg_free(m);
}

/* Asynchronous calls: each record counts its completions. */
struct async_rec {
    int64_t v;
    _Atomic int done;
};
static struct async_rec *async_recs;
static _Atomic long async_n;

static void on_done(pyproc_pool *p, int result, pyproc_msg *ret, void *data)
{
    struct async_rec *r = data;
    (void)p;
    bool first = atomic_fetch_add(&r->done, 1) == 0;
    bool ok = first && (is_int(result, ret, r->v) || met_fate(result)) && has_text(result, ret);
    end(K_ASYNC, ok, result, ret, first ? "async echo" : "async echo completed twice");
    pyproc_msg_free(ret);
}

static void op_async(uint64_t *s)
{
    long i = atomic_fetch_add(&async_n, 1);
    if (i >= MAX_ASYNC) {
        atomic_fetch_sub(&async_n, 1);
        op_func(s, false);
        return;
    }
    struct async_rec *r = &async_recs[i];
    r->v = (int64_t)rnd(s);
    start(K_ASYNC);
    int rc = pick(s, 2) ? pyproc_func_async(pool, "tt.ops.echo", on_done, r, "I", r->v)
                        : pyproc_func_async(pool, "tt.ops.nap", on_done, r, "Ii", r->v, 20);
    if (rc < 0) {
        atomic_fetch_add(&r->done, 1);
        end(K_ASYNC, false, rc, NULL, "starting an async call");
    }
}

static void op_cfg(uint64_t *s)
{
    int64_t floor = atomic_load(&cfg_floor), got = -2;
    int ind = some_worker(s);
    pyproc_msg *m = NULL;
    pyproc_worker_stats st = {0};
    start(K_CFG);
    int rc = pyproc_ind_func(pool, ind, "tt.ops.cfg", &m, NULL);
    if (trace && rc == 0 && pyproc_msg_read(m, "I", &got) == 0) {
        pyproc_stats(pool, ind, &st);
        fprintf(stderr, "trace %.3f worker %d pid %d holds cfg %" PRId64 "\n", now() - t_start, ind,
                st.pid, got);
    }
    bool ok = (rc == 0 && pyproc_msg_read(m, "I", &got) == 0 && got >= floor) ||
              (met_fate_at(rc, ind) && has_text(rc, m));
    if (rc == 0 && !ok) {
        pyproc_stats(pool, ind, &st);
        fprintf(stderr,
                "torture: worker %d (pid %d, %" PRIu64 " restarts) holds cfg %" PRId64
                " after set_attr stored %" PRId64 "\n",
                ind, st.pid, st.restarts, got, floor);
    }
    end(K_CFG, ok, rc, m, "cfg");
    pyproc_msg_free(m);
}

static void op_sub(uint64_t *s)
{
    int n = atomic_load(&subs_ok);
    if (n == 0) {
        op_func(s, true);
        return;
    }
    char ref[32];
    int64_t v = (int64_t)rnd(s);
    pyproc_msg *m = NULL;
    snprintf(ref, sizeof ref, "x%d.ops.echo", pick(s, n));
    start(K_SUB);
    int ind = some_worker(s);
    int rc = pyproc_ind_func(pool, ind, ref, &m, "I", v);
    end(K_SUB, (is_int(rc, m, v) || met_fate_at(rc, ind)) && has_text(rc, m), rc, m, ref);
    pyproc_msg_free(m);
}

static void one_op(uint64_t *s)
{
    int r = pick(s, 100);
    if (r < 15)
        op_func(s, false);
    else if (r < 25)
        op_func(s, true);
    else if (r < 40)
        op_track(s);
    else if (r < 52)
        op_stream(s);
    else if (r < 58)
        op_stream_early(s);
    else if (r < 60)
        op_timeout(s);
    else if (r < 67)
        op_cancel(s);
    else if (r < 75)
        op_callback(s);
    else if (r < 80)
        op_raise(s);
    else if (r < 90)
        op_async(s);
    else if (r < 95)
        op_cfg(s);
    else
        op_sub(s);
}

/* ---- the ending: calls in flight while the pool is freed ---- */

struct final_set {
    pyproc_call *hang, *stream, *home, *nap;
    int64_t nap_v;
};

static void final_start(uint64_t *s, struct final_set *f)
{
    int rc[4];
    memset(f, 0, sizeof *f);
    f->nap_v = (int64_t)rnd(s);
    rc[0] = pyproc_track_func(pool, NULL, &f->hang, "tt.ops.hang", NULL);
    rc[1] = pyproc_gen(pool, "tt.ops.acount", &f->stream, "ii", 1000000, 1);
    rc[2] = pyproc_track_func(pool, NULL, &f->home, "tt.ops.call_home", "I", (int64_t)1);
    rc[3] = pyproc_track_func(pool, NULL, &f->nap, "tt.ops.nap", "Ii", f->nap_v, 500);
    for (int i = 0; i < 4; i++) {
        start(K_FINAL);
        if (rc[i] < 0)
            end(K_FINAL, false, rc[i], NULL, "starting a final call");
    }
}

/* What a call in flight at pyproc_pool_free() may end with. */
static bool final_ok(int rc)
{
    return rc == -ECANCELED || rc == -ETIMEDOUT || rc == PYPROC_EWORKER;
}

static void final_finish(struct final_set *f)
{
    pyproc_msg *m = NULL;
    int rc, count;
    bool order_ok = true;

    if (f->hang) { /* blocked in pyproc_wait() while the pool goes */
        rc = pyproc_wait(f->hang, &m, -1);
        end(K_FINAL, final_ok(rc), rc, m, "hang waited across pyproc_pool_free");
        pyproc_msg_free(m);
        m = NULL;
    }
    if (f->stream) {
        rc = read_items(f->stream, 2000000, &count, &m, &order_ok);
        end(K_FINAL, final_ok(rc) && order_ok, rc, m, "stream read across pyproc_pool_free");
        pyproc_msg_free(m);
        m = NULL;
    }
    if (f->home) {
        rc = pyproc_wait(f->home, &m, -1);
        end(K_FINAL, final_ok(rc) || is_int(rc, m, 3), rc, m, "call_home across free");
        pyproc_msg_free(m);
        m = NULL;
    }
    if (f->nap) { /* not waited until now: it must have ended (it may
                   * have finished while the pool asked its worker to stop) */
        /* Only once pyproc_pool_free() has returned: the calls above may
         * have been ended by it while it still goes through the other
         * calls, worker by worker, and this one may come later. */
        while (!atomic_load(&freed))
            sleep_ms(1);
        rc = pyproc_wait(f->nap, &m, 0);
        bool ok = final_ok(rc) || is_int(rc, m, f->nap_v);
        if (rc == -ETIMEDOUT && !m) {
            /* The call timeout's, or still running? */
            int again = pyproc_wait(f->nap, &m, 0);
            ok = again == -EALREADY;
            if (!ok) {
                rc = again;
                fprintf(stderr,
                        "torture: the nap on worker %d still runs after the pool was freed\n",
                        pyproc_call_worker(f->nap));
            }
        }
        end(K_FINAL, ok, rc, m, "nap after pyproc_pool_free (still running?)");
        pyproc_msg_free(m);
    }
    pyproc_call_free(f->hang);
    pyproc_call_free(f->stream);
    pyproc_call_free(f->home);
    pyproc_call_free(f->nap);
}

static void *hang_caller = (void *)-1;

static void *caller(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg;
    struct final_set f;

    while (!atomic_load(&stopping))
        one_op(&s);
    if (arg == hang_caller)
        for (;;)
            pause(); /* $PYPROC_TORTURE_HANG: shows the watchdog at work */
    final_start(&s, &f);
    atomic_fetch_add(&callers_parked, 1);
    final_finish(&f);
    return NULL;
}

/* ---- the pool's other users ---- */

static void *killer(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg;
    while (!atomic_load(&stopping)) {
        sleep_ms(200 + pick(&s, 600));
        pyproc_worker_stats st;
        if (pyproc_stats(pool, some_worker(&s), &st) == 0 && st.pid > 0 &&
            !atomic_load(&stopping)) {
            kill(st.pid, SIGKILL);
            if (trace)
                fprintf(stderr, "trace %.3f kill pid %d\n", now() - t_start, st.pid);
            atomic_fetch_add(&kills, 1);
        }
    }
    return NULL;
}

static void admin_set_attr(int64_t v)
{
    start(K_SET_ATTR);
    double t0 = now();
    int rc = pyproc_set_attr(pool, "tt.cfg", "I", v);
    if (trace)
        fprintf(stderr, "trace %.3f-%.3f set_attr %" PRId64 ": %d\n", t0 - t_start, now() - t_start,
                v, rc);
    if (rc == 0) {
        int64_t old = atomic_load(&cfg_floor);
        while (old < v && !atomic_compare_exchange_weak(&cfg_floor, &old, v))
            ;
    }
    end(K_SET_ATTR, rc == 0 || met_fate(rc), rc, NULL, "set_attr");
}

static void admin_add_sub(void)
{
    char name[16];
    pyproc_msg *err = NULL;
    int n = atomic_load(&subs_ok);
    if (n >= MAX_SUBS)
        return;
    snprintf(name, sizeof name, "x%d", n);
    start(K_ADD_SUB);
    int rc = pyproc_add_sub_err(pool, name, "torture", 0, &err);
    if (rc == 0)
        atomic_store(&subs_ok, n + 1);
    end(K_ADD_SUB, rc == 0 || met_fate(rc), rc, err, name);
    pyproc_msg_free(err);
}

static void admin_add_proc(void)
{
    int ind = -1;
    if (pyproc_workers(pool) >= MAX_WORKERS)
        return;
    start(K_ADD_PROC);
    int rc = pyproc_add_proc(pool, &ind);
    end(K_ADD_PROC, rc == 0 && ind >= START_WORKERS, rc, NULL, "add_proc");
}

static void *admin(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg;
    int64_t v = 0;
    while (!atomic_load(&stopping)) {
        sleep_ms(100 + pick(&s, 300));
        int r = pick(&s, 10);
        if (r < 6)
            admin_set_attr(++v);
        else if (r < 9)
            admin_add_sub();
        else
            admin_add_proc();
    }
    return NULL;
}

/* Runs completions until the pool is about to be freed; what is left then
 * completes from inside pyproc_pool_free(). */
static void *dispatcher(void *arg)
{
    (void)arg;
    struct pollfd pfd = {.fd = pyproc_pool_fd(pool), .events = POLLIN};
    while (!atomic_load(&freeing)) {
        poll(&pfd, 1, 20);
        int rc = pyproc_dispatch(pool);
        if (rc < 0) {
            end(K_ASYNC, false, rc, NULL, "pyproc_dispatch");
            sleep_ms(10);
        }
    }
    return NULL;
}

/* ---- the watchdog ---- */

static void print_counts(void)
{
    for (int k = 0; k < NKINDS; k++)
        fprintf(stderr, "  %-14s started %7ld  ended %7ld  as allowed %7ld\n", kind_name[k],
                atomic_load(&started[k]), atomic_load(&ended[k]), atomic_load(&good[k]));
    fprintf(stderr, "  workers killed %ld, waits timed out %ld, wrong endings %ld\n",
            atomic_load(&kills), atomic_load(&waits_timed_out), atomic_load(&bad_total));
}

/* Every thread's stack, from gdb attached to this process. */
static void dump_stacks(void)
{
    char pid[16];
    pid_t child;
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    char *argv[] = {"timeout", "120", "gdb",
                    "-p",      pid,   "-batch",
                    "-nx",     "-ex", "thread apply all bt",
                    NULL};
    if (posix_spawnp(&child, "timeout", NULL, NULL, argv, environ) == 0)
        waitpid(child, NULL, 0);
}

static double run_deadline;
static _Atomic bool watchdog_stop;

static void *watchdog(void *arg)
{
    long last = -1;
    double last_change = now();
    (void)arg;
    while (!atomic_load(&watchdog_stop)) {
        sleep_ms(500);
        long p = atomic_load(&progress);
        double t = now();
        if (p != last) {
            last = p;
            last_change = t;
        }
        bool stalled = t - last_change > STALL_S && !atomic_load(&freed);
        if (stalled || t > run_deadline) {
            fprintf(stderr, "torture: %s; %s\n",
                    stalled ? "nothing ended for " STR(STALL_S) " s" : "the run overstayed",
                    atomic_load(&freeing) ? "pyproc_pool_free() was called"
                                          : "the pool was not being freed");
            print_counts();
            dump_stacks();
            fprintf(stderr, "torture: FAILED (hang)\n");
            abort();
        }
    }
    return NULL;
}

/* ---- main ---- */

/*
 * Open fds of the kinds a pool makes: pipes, eventfds, pidfds, epoll,
 * memfds and /dev/null.  Others (a sanitizer's log, opened at its first
 * report) are not the pool's.
 */
static int count_fds(void)
{
    static const char *const kinds[] = {"pipe:", "anon_inode:", "/memfd:", "/dev/null"};
    char target[256];
    struct dirent *e;
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        ssize_t len = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
        if (len <= 0 || atoi(e->d_name) == dirfd(d))
            continue;
        target[len] = 0;
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (strncmp(target, kinds[i], strlen(kinds[i])) == 0) {
                n++;
                break;
            }
    }
    closedir(d);
    return n;
}

static bool check_end(int fds_before)
{
    bool ok = atomic_load(&bad_total) == 0;
    for (int k = 0; k < NKINDS; k++)
        if (atomic_load(&started[k]) != atomic_load(&ended[k])) {
            fprintf(stderr, "torture: %s: %ld started, %ld ended\n", kind_name[k],
                    atomic_load(&started[k]), atomic_load(&ended[k]));
            ok = false;
        }
    for (long i = 0; i < atomic_load(&async_n); i++)
        if (atomic_load(&async_recs[i].done) != 1) {
            fprintf(stderr, "torture: async call %ld completed %d times\n", i,
                    atomic_load(&async_recs[i].done));
            ok = false;
        }
    /* Something of each main kind went through, and workers did die. */
    enum kind must[] = {K_FUNC, K_IND, K_TRACK, K_STREAM, K_CALLBACK, K_ASYNC, K_SET_ATTR};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        if (atomic_load(&good[must[i]]) == 0) {
            fprintf(stderr, "torture: no %s call ended well\n", kind_name[must[i]]);
            ok = false;
        }
    if (atomic_load(&kills) == 0) {
        fprintf(stderr, "torture: no worker was killed\n");
        ok = false;
    }
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
        fprintf(stderr, "torture: a child process is left after pyproc_pool_free()\n");
        ok = false;
    }
    int fds = count_fds();
    if (fds != fds_before) {
        fprintf(stderr, "torture: %d fds open before the pool, %d after it\n", fds_before, fds);
        ok = false;
    }
    return ok;
}

static int setup(void)
{
    pyproc_opts opts = {
        .workers = START_WORKERS,
        .python_path = "tests/py",
        .call_timeout_ms = CALL_TIMEOUT_MS,
        .callback = on_callback,
    };
    int rc;
    if ((rc = pyproc_pool_new(&pool, "torture", &opts)) < 0 ||
        (rc = pyproc_add_sub(pool, "tt", "torture", 0)) < 0) {
        fprintf(stderr, "torture: setting up: %s\n", pyproc_strerror(rc));
        return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *env = getenv("PYPROC_TORTURE_SECONDS");
    double seconds = argc > 1 ? atof(argv[1]) : env ? atof(env) : 20;
    const char *seed_env = getenv("PYPROC_TORTURE_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL);
    pthread_t callers[CALLERS], kt, at, dt, wt;

    printf("torture: %.0f s, seed %" PRIu64 " (PYPROC_TORTURE_SEED)\n", seconds, seed);
    fflush(stdout);
    int fds_before = count_fds();
    async_recs = calloc(MAX_ASYNC, sizeof *async_recs);
    run_deadline = now() + seconds + GRACE_S;
    pthread_create(&wt, NULL, watchdog, NULL);
    if (!async_recs || setup() < 0)
        return 1;

    double t0 = now();
    t_start = t0;
    trace = getenv("PYPROC_TORTURE_TRACE") != NULL;
    pthread_create(&kt, NULL, killer, (void *)(uintptr_t)(seed * 3 + 1));
    pthread_create(&at, NULL, admin, (void *)(uintptr_t)(seed * 5 + 2));
    pthread_create(&dt, NULL, dispatcher, NULL);
    if (getenv("PYPROC_TORTURE_HANG"))
        hang_caller = (void *)(uintptr_t)(seed * 7 + 3);
    for (int i = 0; i < CALLERS; i++)
        pthread_create(&callers[i], NULL, caller, (void *)(uintptr_t)(seed * 7 + 3 + i));
    while (now() - t0 < seconds)
        sleep_ms(100);

    atomic_store(&stopping, true);
    pthread_join(kt, NULL);
    pthread_join(at, NULL);
    while (atomic_load(&callers_parked) < CALLERS)
        sleep_ms(10);
    sleep_ms(100); /* let the final calls reach their workers */
    atomic_store(&freeing, true);
    pthread_join(dt, NULL);
    pyproc_pool_free(pool);
    atomic_store(&freed, true);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(callers[i], NULL);
    atomic_store(&watchdog_stop, true);
    pthread_join(wt, NULL);

    printf("torture: %.1f s\n", now() - t0);
    print_counts();
    bool ok = check_end(fds_before);
    free(async_recs);
    printf("torture: %s\n", ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
}
