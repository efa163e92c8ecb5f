/*
 * Pools: options, start-up and tear-down; the composition root of host/,
 * which wires the service thread's handlers to the floors above it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../shm/frame.h"
#include "fmt.h"
#include "msg.h"
#include "chan.h"
#include "wire.h"
#include "service.h"
#include "stats.h"
#include "drain.h"
#include "feature.h"
#include "supervise.h"
#include "remote.h"

#define DEFAULT_RING_BYTES (2u << 20)
#define DEFAULT_MAX_MSG (1ull << 30)
#define DEFAULT_START_TIMEOUT_MS 10000
#define DEFAULT_SPIN_US 50
#define DEFAULT_MAP_WINDOW 4096
#define MAX_MAP_WINDOW (1 << 24)
/*
 * Workers fork from a template unless told otherwise: see pyproc.h.
 */
#define DEFAULT_START PYPROC_START_TEMPLATE

/* ---- options ---- */

/*
 * The worker installed with this library: <libdir>/../libexec/pyproc/
 * (make install), <libdir>/pyproc/ (Debian's multiarch directory, where
 * each architecture's library has its own worker), or <dir>/../bin/ for a
 * build tree (and for programs that link the static library, whose
 * "library" is the program itself).
 */
static char *default_worker_path(void)
{
    static const char *const rel[] = {"../libexec/pyproc/pyproc-worker", "pyproc/pyproc-worker",
                                      "../bin/pyproc-worker"};
    char self[PATH_MAX], *dir, *path;
    Dl_info info;

    if (!dladdr((void *)default_worker_path, &info) || !info.dli_fname ||
        !realpath(info.dli_fname, self)) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0)
            return NULL;
        self[n] = 0;
    }
    dir = strrchr(self, '/');
    if (dir)
        *dir = 0;
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        if (asprintf(&path, "%s/%s", self, rel[i]) < 0)
            return NULL;
        if (access(path, X_OK) == 0 || i + 1 == sizeof rel / sizeof rel[0])
            return path;
        free(path);
    }
    return NULL;
}

/* Make every relative entry of a ':'-separated path absolute. */
static char *absolute_path_list(const char *list)
{
    char cwd[PATH_MAX], *out = NULL;
    size_t len = 0;
    FILE *f;

    if (!list || !*list)
        return NULL;
    if (!getcwd(cwd, sizeof cwd))
        cwd[0] = 0;
    f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    for (const char *s = list; *s;) {
        size_t n = strcspn(s, ":");
        if (n)
            fprintf(f, "%s%s%s%.*s", ftell(f) ? ":" : "", s[0] == '/' ? "" : cwd,
                    s[0] == '/' ? "" : "/", (int)n, s);
        s += n + (s[n] == ':');
    }
    fclose(f);
    return out;
}

/*
 * A worker path that does not depend on the working directory, which the
 * cwd option changes before the exec.
 */
static char *absolute_worker_path(char *path)
{
    char cwd[PATH_MAX], *abs;

    if (!path || path[0] == '/' || !getcwd(cwd, sizeof cwd))
        return path;
    if (asprintf(&abs, "%s/%s", cwd, path) < 0)
        abs = NULL;
    free(path);
    return abs;
}

/*
 * The virtual environment, made absolute (the cwd option moves the
 * workers); -ENOENT unless it holds a pyvenv.cfg.  Whether it suits the
 * workers' Python is the worker's to check: only it knows its version.
 */
static int apply_venv(pyproc_pool *p, const char *venv)
{
    char *cfg;
    int ok;

    if (!venv)
        return 0;
    if (!*venv)
        return -EINVAL;
    p->venv = absolute_worker_path(strdup(venv));
    if (!p->venv || asprintf(&cfg, "%s/pyvenv.cfg", p->venv) < 0)
        return -ENOMEM;
    ok = access(cfg, R_OK) == 0;
    free(cfg);
    return ok ? 0 : -ENOENT;
}

/* A private copy of a NULL-terminated array of strings. */
static char **copy_env(const char *const *env)
{
    size_t n = 0;
    char **copy;

    while (env[n])
        n++;
    copy = calloc(n + 1, sizeof *copy);
    for (size_t i = 0; copy && i < n; i++) {
        if (!(copy[i] = strdup(env[i]))) {
            while (i-- > 0)
                free(copy[i]);
            free(copy);
            return NULL;
        }
    }
    return copy;
}

static void free_env(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* Options that shape the worker processes themselves. */
static int apply_process_opts(pyproc_pool *p, const pyproc_opts *o)
{
    if (o->max_fds < 0 || (o->max_fds > 0 && o->max_fds < 32))
        return -EINVAL;
    if (o->env && !(p->env = copy_env(o->env)))
        return -ENOMEM;
    if (o->cwd && !(p->cwd = strdup(o->cwd)))
        return -ENOMEM;
    p->mem_limit = o->mem_limit_bytes;
    p->max_calls = o->max_calls_per_worker;
    p->max_rss = o->max_rss_bytes;
    p->max_fds = o->max_fds;
    p->no_new_privs = o->no_new_privs != 0;
    p->output = o->output;
    p->output_data = o->output_data;
    return apply_venv(p, o->venv);
}

static uint64_t round_pow2(uint64_t n)
{
    uint64_t r = SHM_RING_MIN_BYTES;
    while (r < n && r < SHM_RING_MAX_BYTES)
        r <<= 1;
    return r;
}

/*
 * How workers start: the option, else $PYPROC_START ("template" or
 * "exec"; the test suite runs once with each), else DEFAULT_START.
 */
static int apply_start(pyproc_pool *p, int start)
{
    const char *env = getenv("PYPROC_START");

    if (start < 0 || start > PYPROC_START_EXEC)
        return -EINVAL;
    if (start == PYPROC_START_DEFAULT && env && strcmp(env, "template") == 0)
        start = PYPROC_START_TEMPLATE;
    else if (start == PYPROC_START_DEFAULT && env && strcmp(env, "exec") == 0)
        start = PYPROC_START_EXEC;
    else if (start == PYPROC_START_DEFAULT)
        start = DEFAULT_START;
    /* Remote workers start however their agents start them. */
    return start == PYPROC_START_TEMPLATE && !p->remote ? pyproc__template_new(p) : 0;
}

static int apply_opts(pyproc_pool *p, const pyproc_opts *o)
{
    static const pyproc_opts none;
    const char *env = getenv("PYPROC_WORKER");
    int err;

    if (!o)
        o = &none;
    if (o->workers < 0 || o->start_timeout_ms < 0 || o->spin_us < -1)
        return -EINVAL;
    p->nworkers = o->workers ? o->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (p->nworkers < 1)
        p->nworkers = 1;
    if (o->worker_path)
        p->worker_path = strdup(o->worker_path);
    else if (env && *env)
        p->worker_path = strdup(env);
    else
        p->worker_path = default_worker_path();
    p->worker_path = absolute_worker_path(p->worker_path);
    if (!p->worker_path)
        return -ENOMEM;
    p->python_path = absolute_path_list(o->python_path);
    p->ring_bytes = round_pow2(o->ring_bytes ? o->ring_bytes : DEFAULT_RING_BYTES);
    p->max_msg = o->max_msg_bytes ? o->max_msg_bytes : DEFAULT_MAX_MSG;
    p->start_timeout_ms = o->start_timeout_ms ? o->start_timeout_ms : DEFAULT_START_TIMEOUT_MS;
    if (o->call_timeout_ms < 0)
        return -EINVAL;
    p->call_timeout_ns = (int64_t)o->call_timeout_ms * 1000000;
    p->callback = o->callback;
    p->callback_data = o->callback_data;
    p->spin_ns = o->spin_us == -1 ? 0 : (int64_t)(o->spin_us ? o->spin_us : DEFAULT_SPIN_US) * 1000;
    if (o->map_window < 0 || o->map_window > MAX_MAP_WINDOW)
        return -EINVAL;
    p->map_window = o->map_window ? (uint32_t)o->map_window : DEFAULT_MAP_WINDOW;
    err = apply_start(p, o->start);
    return err < 0 ? err : apply_process_opts(p, o);
}

/* ---- the pools of this process, for their shared buffers ---- */

/*
 * A buffer knows its pool by number, not by address, since it may outlive
 * it; the last pyproc_buf_free() of one finds the pool here, if it still
 * lives, and tells its workers to unmap the buffer.  pools_lock comes
 * before pool->lock (forget() takes both); pools come and go under it.
 */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static pyproc_pool *pools;

/* Each worker that may have mapped buffer buf_id drops its mapping.  A
 * FORGET that finds a full ring is not sent: that worker keeps the
 * mapping until it needs the room (it keeps a bounded number). */
static void forget(uint64_t pool_id, uint64_t buf_id)
{
    char note[PYPROC__WIRE_SMALL];
    size_t n = pyproc__wire_forget(note, buf_id);
    struct pp_worker *w;

    pthread_mutex_lock(&pools_lock);
    for (pyproc_pool *p = pools; p; p = p->next_pool) {
        if (p->id != pool_id)
            continue;
        for (int i = 0; (w = pyproc__pick_worker(p, i)); i++) {
            pyproc__send_try(w, SHM_FRAME_FORGET, 0, note, n);
            pyproc__worker_unref(w);
        }
    }
    pthread_mutex_unlock(&pools_lock);
}

static void pools_add(pyproc_pool *p)
{
    static uint64_t next_id = 1;

    pthread_mutex_lock(&pools_lock);
    if (!pools && next_id == 1)
        pyproc__buf_set_forget(forget);
    p->id = next_id++;
    p->next_pool = pools;
    pools = p;
    pthread_mutex_unlock(&pools_lock);
}

static void pools_remove(pyproc_pool *p)
{
    pthread_mutex_lock(&pools_lock);
    for (pyproc_pool **q = &pools; *q; q = &(*q)->next_pool) {
        if (*q == p) {
            *q = p->next_pool;
            break;
        }
    }
    pthread_mutex_unlock(&pools_lock);
}

/* ---- start and stop ---- */

static void pool_destroy(pyproc_pool *p)
{
    pools_remove(p);
    pyproc__respawn_wait(p);
    if (p->service_running)
        pyproc__workers_stop(p);
    pyproc__callback_stop(p);
    pyproc__service_stop(p);
    pyproc__template_free(p);
    pyproc__deadlines_clear(p);
    /* While the pool is whole: a transport's threads may still pass on
     * its workers' last lines (p->name, p->output) as they stop. */
    if (p->remote)
        p->remote->fini(p);
    for (int i = 0; p->workers && i < p->nworkers; i++)
        pyproc__worker_unref(p->workers[i]);
    for (size_t i = 0; i < p->nhistory; i++)
        shm_buf_free(&p->history[i].payload);
    free(p->history);
    if (p->done_fd >= 0)
        close(p->done_fd);
    if (p->loop_fd >= 0)
        close(p->loop_fd);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->grow_lock);
    pthread_mutex_destroy(&p->history_lock);
    pthread_mutex_destroy(&p->done_lock);
    pthread_mutex_destroy(&p->deadline_lock);
    pthread_cond_destroy(&p->changed);
    pthread_cond_destroy(&p->cb_cond);
    free(p->workers);
    pyproc__slot_stats_free(p);
    free_env(p->env);
    free(p->cwd);
    free(p->worker_path);
    free(p->python_path);
    free(p->venv);
    free(p->name);
    free(p);
}

/* What the service thread's events mean, wired here so that it calls
 * nothing above its floor. */
static void worker_died(pyproc_pool *p, struct pp_worker *w)
{
    pyproc__worker_reap(w);
    pyproc__respawn_later(p, w);
}

static int sooner(int a, int b)
{
    if (a < 0)
        return b;
    return b < 0 || a < b ? a : b;
}

/* Time's work: the pool's call timeout, calls' own deadlines, and the
 * workers' limits; the wait until the soonest (-1: none). */
static int tick(pyproc_pool *p)
{
    int timeouts = pyproc__expire_calls(p), deadlines = pyproc__deadlines_expire(p);

    return sooner(sooner(timeouts, deadlines), pyproc__recycle_tick(p));
}

/* The pool's fd for event loops: done_fd now, the workers' doorbells as
 * they are watched (service.c); all edge-triggered (async.c). */
static int loop_fd_open(pyproc_pool *p)
{
    struct epoll_event done = {.events = EPOLLIN | EPOLLET, .data.u64 = PYPROC__LOOP_DONE};

    if (p->done_fd < 0)
        return -errno;
    p->loop_fd = epoll_create1(EPOLL_CLOEXEC);
    if (p->loop_fd < 0 || epoll_ctl(p->loop_fd, EPOLL_CTL_ADD, p->done_fd, &done) < 0)
        return -errno;
    return 0;
}

static const struct pp_service_ops service_ops = {
    .drain = pyproc__drain_batch,
    .died = worker_died,
    .tick = tick,
    .template_died = pyproc__template_died,
};

PYPROC_EXPORT int pyproc_pool_new(pyproc_pool **ret, const char *name, const pyproc_opts *opts)
{
    return pyproc__pool_new_remote(ret, name, opts, NULL, NULL);
}

int pyproc__pool_new_remote(pyproc_pool **ret, const char *name, const pyproc_opts *opts,
                            const struct pp_remote *remote, void *remote_data)
{
    pthread_condattr_t ca;
    pyproc_pool *p;
    int err;

    if (!ret || !name || !*name)
        return -EINVAL;
    p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->epfd = p->control_fd = p->loop_fd = -1;
    p->closing = true; /* no respawns until every worker has started once */
    p->fork_gen = pyproc__fork_track();
    p->owner_pid = getpid();
    p->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->grow_lock, NULL);
    pthread_mutex_init(&p->history_lock, NULL);
    pthread_mutex_init(&p->done_lock, NULL);
    pthread_mutex_init(&p->deadline_lock, NULL);
    pthread_cond_init(&p->cb_cond, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->changed, &ca);
    pthread_condattr_destroy(&ca);
    p->remote = remote;
    p->remote_data = remote_data;
    p->name = strdup(name);
    err = p->name ? apply_opts(p, opts) : -ENOMEM;
    if (err == 0 && !(p->workers = calloc((size_t)p->nworkers, sizeof *p->workers)))
        err = -ENOMEM;
    if (err == 0)
        err = loop_fd_open(p);
    if (err == 0)
        err = pyproc__service_start(p, &service_ops);
    if (err == 0)
        err = pyproc__callback_start(p);
    if (err == 0 && p->tmpl) {
        p->preload = pyproc__template_preload;
        pyproc__template_begin(p);
    }
    if (err == 0)
        err = pyproc__workers_start(p);
    if (err < 0) {
        pool_destroy(p);
        return err;
    }
    pthread_mutex_lock(&p->lock);
    p->closing = false;
    pthread_mutex_unlock(&p->lock);
    pyproc__template_pool_opened(p);
    pools_add(p); /* whole now: its buffers may find it */
    *ret = p;
    return 0;
}

PYPROC_EXPORT void pyproc_pool_free(pyproc_pool *p)
{
    if (pyproc__pool_check(p) < 0)
        return;
    /* From here on no respawn puts a worker in a slot (publish() in
     * workers.c), so the workers whose calls fail below are the last. */
    pthread_mutex_lock(&p->lock);
    p->closing = true;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    /* Read under the lock, with references: a respawn that placed its
     * worker before we closed drops the one it replaced.  Retired workers
     * too, whose threads wait for their calls to end (recycle.c). */
    struct pp_worker **ws;
    int n = pyproc__workers_ref(p, &ws);
    for (int i = 0; i < n; i++)
        pyproc__fail_calls(ws[i], -ECANCELED, "the pool was freed");
    if (n >= 0)
        pyproc__workers_unref(ws, n);
    /* Asynchronous calls hear of it now: after this they could not. */
    pyproc__async_run(p);
    pool_destroy(p);
}

/* Requests the pool's workers (retired ones too) have not answered
 * yet, and calls still starting; UINT_MAX when it cannot tell. */
static unsigned in_flight(pyproc_pool *p)
{
    struct pp_worker **ws;
    /* Calls past the check, on their way to a table: seq_cst (start.c). */
    unsigned n = (unsigned)atomic_load_explicit(&p->starting, memory_order_seq_cst);
    int nw = pyproc__workers_ref(p, &ws);

    if (nw < 0)
        return UINT_MAX;
    for (int i = 0; i < nw; i++)
        n += atomic_load_explicit(&ws[i]->in_flight, memory_order_relaxed);
    pyproc__workers_unref(ws, nw);
    return n;
}

PYPROC_EXPORT int pyproc_drain(pyproc_pool *p, int timeout_ms)
{
    int64_t deadline = shm_now_ns() + (int64_t)timeout_ms * 1000000;
    int err = pyproc__pool_check(p);
    unsigned n;

    if (err < 0)
        return err;
    if (timeout_ms < -1)
        return -EINVAL;
    /* Seq_cst: pairs with the acquire load in pyproc__pool_accepting(),
     * and with the calls' count of starting (pyproc__call_start_ex()). */
    atomic_store_explicit(&p->draining, true, memory_order_seq_cst);
    /* Draining is rare and ends in at most timeout_ms: a millisecond's
     * poll is simpler than a signal from every call's end. */
    while ((n = in_flight(p)) > 0 && (timeout_ms < 0 || shm_now_ns() < deadline)) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* Blind round robin instead of the least loaded worker: for pyproc-bench's
 * comparison (bench/mixed.c) only, which links the static library; not in
 * the header, not exported.  Set before calls start. */
void pyproc__pool_dispatch_blind(pyproc_pool *p, bool on);
void pyproc__pool_dispatch_blind(pyproc_pool *p, bool on)
{
    pthread_mutex_lock(&p->lock);
    p->dispatch_blind = on;
    pthread_mutex_unlock(&p->lock);
}

PYPROC_EXPORT int pyproc_workers(pyproc_pool *p)
{
    int n = pyproc__pool_check(p);

    if (n < 0)
        return n;
    /* pyproc_add_proc() may be growing it on another thread. */
    pthread_mutex_lock(&p->lock);
    n = p->nworkers;
    pthread_mutex_unlock(&p->lock);
    return n;
}

PYPROC_EXPORT const char *pyproc_pool_name(pyproc_pool *p)
{
    return p ? p->name : NULL;
}

/* ---- add_sub ---- */
