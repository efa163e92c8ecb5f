/*
 * Planned replacements: a worker recycled when it reaches the pool's
 * limits (max_calls_per_worker, max_rss_bytes), every worker replaced by
 * pyproc_reload(), indices added and taken away by pyproc_resize().
 *
 * Replacing index i (replace()), one index at a time under grow_lock: the
 * worker there is marked retiring, so that no new call is routed to it
 * (the pickers pass it over, and calls pinned to i wait, see start.c);
 * its replacement is started and brought up to date from the pool's
 * history, then put in the slot together with the history's tail
 * (pyproc__worker_publish()).  Only then does the old worker leave: it
 * goes to the pool's retired list, finishes there the calls and streams
 * it has, and is stopped once its table is empty (retire()).  If the
 * replacement fails, the old worker keeps its slot and takes calls again,
 * so a housekeeping failure never fails a call.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "chan.h"
#include "table.h"
#include "supervise.h"

#define CHECK_MS 100           /* how often the limits are looked at */
#define RETIRE_POLL_MAX_MS 50  /* a retired worker's table, looked at */
#define RECYCLE_RETRY_MS 10000 /* after a recycle that failed */

/* Signal pool->changed's waiters (pick_pinned() in start.c). */
static void set_retiring(pyproc_pool *p, struct pp_worker *w, bool on)
{
    pthread_mutex_lock(&p->lock);
    atomic_store_explicit(&w->retiring, on, memory_order_relaxed);
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

/*
 * Replace the worker at index (grow_lock held); want: that worker, or NULL
 * for whichever holds the slot.  Returns 0 with the retired worker in
 * *ret_old (its slot's reference, now the retired list's; NULL when the
 * slot changed hands meanwhile, a respawn having placed a fresh worker),
 * -ECANCELED when the slot no longer holds want, or the error that
 * bringing the replacement up ended with (*why says why).
 */
static int replace(pyproc_pool *p, int index, struct pp_worker *want, struct pp_worker **ret_old,
                   char **why)
{
    struct pp_worker *old = NULL, *w;
    bool placed = false;

    *ret_old = NULL;
    pthread_mutex_lock(&p->lock);
    if (!p->closing && index < p->nworkers && (!want || p->workers[index] == want)) {
        old = p->workers[index];
        /* Ours while we replace it: should it die meanwhile, a respawn
         * takes its slot and drops the slot's reference. */
        pyproc__worker_ref(old);
        atomic_store_explicit(&old->retiring, true, memory_order_relaxed);
        pthread_cond_broadcast(&p->changed);
    }
    pthread_mutex_unlock(&p->lock);
    if (!old)
        return -ECANCELED;
    int err = pyproc__worker_bring_up(p, index, &w, why);
    if (err == 0)
        err = pyproc__worker_publish(p, old, w, true, &placed, why);
    if (!placed)
        set_retiring(p, old, false);
    else
        *ret_old = old; /* the slot's reference, now the retired list's */
    pyproc__worker_unref(old);
    return placed ? 0 : err;
}

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

/*
 * Wait until the retired worker old has ended its calls, then stop it and
 * drop the retired list's reference.  Its calls end as any call does (an
 * answer, its death, pyproc_pool_free(), which cancels them): nothing
 * else is asked of it meanwhile.  A worker that ends its calls only now
 * and then is looked at less and less often, up to RETIRE_POLL_MAX_MS.
 */
static void retire(pyproc_pool *p, struct pp_worker *old)
{
    for (int ms = 1; !pyproc__table_close_idle(old); ms = ms < RETIRE_POLL_MAX_MS ? 2 * ms : ms)
        sleep_ms(ms);
    pthread_mutex_lock(&p->lock);
    for (struct pp_worker **link = &p->retired; *link; link = &(*link)->retired_next) {
        if (*link == old) {
            *link = old->retired_next;
            break;
        }
    }
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    pyproc__worker_discard(p, old);
}

/* ---- threads of their own ---- */

struct job {
    pyproc_pool *pool;
    struct pp_worker *w; /* a reference (the retired list's, for retire) */
};

/* The end of a job's thread: pyproc__respawn_wait() counts them. */
static void job_done(struct job *j)
{
    pyproc_pool *p = j->pool;

    free(j);
    pthread_mutex_lock(&p->lock);
    p->respawning--;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

/* Run fn(job) on a detached thread with every signal blocked, counted in
 * pool->respawning so that pyproc_pool_free() waits for it; -ECANCELED
 * once the pool closes, or the error of pthread_create(). */
static int job_start(pyproc_pool *p, struct pp_worker *w, void *(*fn)(void *))
{
    struct job *j = malloc(sizeof *j);
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t t;

    if (!j)
        return -ENOMEM;
    *j = (struct job){p, w};
    pthread_mutex_lock(&p->lock);
    bool go = !p->closing;
    if (go)
        p->respawning++;
    pthread_mutex_unlock(&p->lock);
    if (!go) {
        free(j);
        return -ECANCELED;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = -pthread_create(&t, &attr, fn, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err < 0) {
        j->w = NULL;
        job_done(j);
    }
    return err;
}

static void *retire_main(void *arg)
{
    struct job *j = arg;

    retire(j->pool, j->w);
    job_done(j);
    return NULL;
}

/* Retire old in the background, or here when no thread can be had. */
static void retire_later(pyproc_pool *p, struct pp_worker *old)
{
    if (job_start(p, old, retire_main) < 0)
        retire(p, old);
}

/* ---- recycling ---- */

static void *recycle_main(void *arg)
{
    struct job *j = arg;
    pyproc_pool *p = j->pool;
    struct pp_worker *w = j->w, *old;
    char *why = NULL;

    pthread_mutex_lock(&p->grow_lock);
    int err = replace(p, w->index, w, &old, &why);
    pthread_mutex_unlock(&p->grow_lock);
    if (err < 0 && err != -ECANCELED) {
        fprintf(stderr, "pyproc %s: worker %d was not recycled, and serves on: %s\n", p->name,
                w->index, why ? why : pyproc_strerror(err));
        atomic_store_explicit(&w->recycle_after_ns, shm_now_ns() + RECYCLE_RETRY_MS * 1000000LL,
                              memory_order_relaxed);
    }
    free(why);
    atomic_store_explicit(&w->recycle, RECYCLE_NONE, memory_order_relaxed);
    pyproc__worker_unref(w);
    if (err == 0 && old)
        retire(p, old);
    job_done(j);
    return NULL;
}

/* Resident bytes of process pid (/proc/pid/statm), 0 if unknown. */
static uint64_t rss_of(pid_t pid)
{
    char path[64], buf[128];
    unsigned long long size, resident;
    uint64_t rss = 0;

    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
        buf[n] = 0;
        if (sscanf(buf, "%llu %llu", &size, &resident) == 2)
            rss = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
    }
    return rss;
}

/* Whether w, in its slot, is past one of the pool's limits. */
static bool over_limit(pyproc_pool *p, struct pp_worker *w, pid_t pid)
{
    if (p->max_calls &&
        atomic_load_explicit(&w->calls_started, memory_order_relaxed) >= p->max_calls)
        return true;
    return p->max_rss && pid > 0 && rss_of(pid) > p->max_rss;
}

/* On the service thread: start a recycle of each worker past a limit. */
static void recycle_scan(pyproc_pool *p, int64_t now)
{
    struct pp_worker **ws;
    pid_t *pids;
    int n = 0;

    pthread_mutex_lock(&p->lock);
    ws = malloc((size_t)p->nworkers * sizeof *ws);
    pids = malloc((size_t)p->nworkers * sizeof *pids);
    /* Relaxed: a hint; a pool that starts draining after this look
     * still replaces the worker, which harms nothing. */
    bool open = !p->closing && !atomic_load_explicit(&p->draining, memory_order_relaxed);
    for (int i = 0; open && ws && pids && i < p->nworkers; i++) {
        struct pp_worker *w = p->workers[i];
        if (!w || atomic_load_explicit(&w->dead, memory_order_relaxed) ||
            atomic_load_explicit(&w->retiring, memory_order_relaxed) ||
            atomic_load_explicit(&w->recycle, memory_order_relaxed) != RECYCLE_NONE ||
            now < atomic_load_explicit(&w->recycle_after_ns, memory_order_relaxed))
            continue;
        pyproc__worker_ref(w);
        pids[n] = w->pid;
        ws[n++] = w;
    }
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < n; i++) {
        struct pp_worker *w = ws[i];
        if (over_limit(p, w, pids[i])) {
            /* The thread takes our reference; only this thread starts
             * recycles, so the state is NONE here. */
            atomic_store_explicit(&w->recycle, RECYCLE_RUNNING, memory_order_relaxed);
            if (job_start(p, w, recycle_main) == 0)
                continue;
            atomic_store_explicit(&w->recycle, RECYCLE_NONE, memory_order_relaxed);
        }
        pyproc__worker_unref(w);
    }
    free(ws);
    free(pids);
}

int pyproc__recycle_tick(pyproc_pool *p)
{
    int64_t now = shm_now_ns();

    if (!p->max_calls && !p->max_rss)
        return -1;
    /* Relaxed: set before the kick that woke us (start.c). */
    bool asked = atomic_exchange_explicit(&p->recycle_check, false, memory_order_relaxed);
    if (!asked && now < p->next_check_ns)
        return (int)((p->next_check_ns - now) / 1000000) + 1;
    p->next_check_ns = now + CHECK_MS * 1000000LL;
    recycle_scan(p, now);
    return CHECK_MS;
}

/* ---- reload ---- */

PYPROC_EXPORT int pyproc_reload_err(pyproc_pool *p, pyproc_msg **err_msg)
{
    struct pp_worker *old;
    char *why = NULL;
    int err = pyproc__pool_accepting(p);

    if (err < 0)
        return err;
    pthread_mutex_lock(&p->grow_lock);
    /* Workers forked from the template would get its modules as they
     * were when it imported them. */
    pyproc__template_renew(p);
    for (int i = 0; err == 0 && i < pyproc_workers(p); i++) {
        err = replace(p, i, NULL, &old, &why);
        if (err == 0 && old)
            retire_later(p, old);
        if (err < 0 && err_msg)
            pyproc__msg_error(err_msg, "worker %d could not be reloaded, and serves on: %s", i,
                              why ? why : pyproc_strerror(err));
        free(why);
        why = NULL;
    }
    pthread_mutex_unlock(&p->grow_lock);
    return err;
}

PYPROC_EXPORT int pyproc_reload(pyproc_pool *p)
{
    return pyproc_reload_err(p, NULL);
}

/* ---- resize ---- */

/* Take the highest index out of the pool (grow_lock held); its worker,
 * with the slot's reference, goes to the retired list and is returned. */
static struct pp_worker *remove_last(pyproc_pool *p)
{
    pthread_mutex_lock(&p->history_lock);
    pthread_mutex_lock(&p->lock);
    struct pp_worker *old = p->workers[--p->nworkers];
    p->workers[p->nworkers] = NULL;
    atomic_store_explicit(&old->retiring, true, memory_order_relaxed);
    old->retired_next = p->retired;
    p->retired = old;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->history_lock);
    return old;
}

PYPROC_EXPORT int pyproc_resize(pyproc_pool *p, int n)
{
    int err = pyproc__pool_accepting(p);

    if (err < 0)
        return err;
    if (n < 1)
        return -EINVAL;
    pthread_mutex_lock(&p->grow_lock);
    while (err == 0 && pyproc_workers(p) < n)
        err = pyproc__workers_add_one(p, NULL);
    while (err == 0 && pyproc_workers(p) > n)
        retire_later(p, remove_last(p));
    pthread_mutex_unlock(&p->grow_lock);
    return err;
}
