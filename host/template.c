/*
 * The pool's template (pyproc_opts.start = PYPROC_START_TEMPLATE): one
 * pyproc-worker that has started Python and imported the hub, and forks
 * the pool's workers on request (embed/template.c, shm/template.h), each
 * with the fds spawn.c made for it, as a child of this process.
 *
 * Exchanges with it go one at a time under t->lock: a fork (on the service
 * thread), a preload (pyproc_add_sub()'s thread), a start (pool_new() or
 * the restart thread).  The service thread only tries the lock: while
 * another exchange runs or the template is starting, it execs the worker
 * instead, so it never waits for a preload's imports or for Python to
 * start.  A fork waits at most FORK_TIMEOUT_MS for its answer; a template
 * that gives none is killed, as is any that goes down, so that its pidfd
 * fires and supervision starts another.
 *
 * Supervision: the service thread watches the template's pidfd (one
 * shot); when it fires, a restart thread, counted in p->respawning so
 * that pyproc_pool_free() waits for it, reaps the template and starts
 * another, after a backoff when it died soon after it came up.  After
 * MAX_FAST_DEATHS such deaths in a row, or a preload that left threads in
 * it (a fork would lose them, and any lock they hold), the pool execs
 * its workers for good.  Until a template is up again, workers are
 * exec'd.
 *
 * Locks: t->lock comes before pool->lock (the restart thread reads
 * p->closing and runs commands on the service thread while holding it);
 * the service thread never waits for t->lock.  restarting and died_again
 * are under pool->lock, so the service thread can set them.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../shm/fdpass.h"
#include "../shm/template.h"
#include "service.h"
#include "supervise.h"

#define FORK_TIMEOUT_MS 2000
#define KILLED_TIMEOUT_MS 1000 /* a killed template's last words */
#define STOP_GRACE_MS 1000
#define SLICE_MS 50 /* waits look at p->closing this often */
#define FAST_DEATH_NS (2000 * 1000000LL)
#define MAX_FAST_DEATHS 5
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

enum { TMPL_DOWN, TMPL_UP, TMPL_OFF };

struct preload {
    char *body; /* a whole TMPL_PRELOAD datagram */
    size_t len;
};

struct pp_template {
    pthread_mutex_t lock; /* one exchange at a time; guards what follows */
    int state;
    pid_t pid;
    int pidfd, sock; /* -1: none */
    int64_t up_ns;   /* when it last said READY */
    int fast_deaths;
    struct preload *preloads;
    size_t npreloads;
    /* Under pool->lock.  died_closed: it died while p->closing (during
     * pyproc_pool_new()), to be restarted once the pool is open. */
    bool restarting, died_again, died_closed;
};

int pyproc__template_new(pyproc_pool *p)
{
    struct pp_template *t = calloc(1, sizeof *t);

    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    t->state = TMPL_DOWN;
    t->pid = -1;
    t->pidfd = t->sock = -1;
    p->tmpl = t;
    return 0;
}

static bool closing(pyproc_pool *p)
{
    pthread_mutex_lock(&p->lock);
    bool c = p->closing;
    pthread_mutex_unlock(&p->lock);
    return c;
}

static void kill_template(struct pp_template *t)
{
    if (t->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, t->pidfd, SIGKILL, NULL, 0);
}

/* Kill and reap the template, if any, and close our ends (t->lock). */
static void reap(struct pp_template *t)
{
    siginfo_t si;

    if (t->sock >= 0)
        close(t->sock);
    if (t->pidfd >= 0) {
        kill_template(t);
        /* ECHILD: reaped outside the pool (SIGCHLD ignored). */
        waitid((idtype_t)P_PIDFD, (id_t)t->pidfd, &si, WEXITED);
        close(t->pidfd); /* which takes it out of the epoll set */
    }
    t->sock = t->pidfd = -1;
    t->pid = -1;
    if (t->state == TMPL_UP)
        t->state = TMPL_DOWN;
}

/* On the service thread, so that its PR_SET_PDEATHSIG (and that of the
 * workers it forks, children of this thread too) means the host. */
static int spawn_on_service(pyproc_pool *p, void *arg)
{
    struct pp_template *t = arg;
    int sv[2], err;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    err = pyproc__template_spawn(p, sv[1], &t->pid, &t->pidfd);
    close(sv[1]);
    if (err == 0 && (err = pyproc__service_watch_template(p, t->pidfd)) < 0)
        reap(t);
    if (err < 0) {
        close(sv[0]);
        return err;
    }
    t->sock = sv[0];
    return 0;
}

/*
 * The next message of kind `kind` within timeout_ms: its value, or
 * -EPIPE (the template and any child it forked have closed the socket),
 * -ETIMEDOUT, -ECANCELED (the pool closes; only with until_closing).
 */
static int await(pyproc_pool *p, struct pp_template *t, uint32_t kind, int timeout_ms,
                 bool until_closing, int64_t *value)
{
    int64_t until = shm_now_ns() + (int64_t)timeout_ms * 1000000;

    for (;;) {
        struct shm_tmpl_msg m;
        int fds[SHM_FDS_MAX], nfds = 0;
        int64_t left_ms = (until - shm_now_ns()) / 1000000;
        int n = shm_fds_recv(t->sock, &m, sizeof m, fds, &nfds,
                             left_ms < 0          ? 0
                             : left_ms < SLICE_MS ? (int)left_ms
                                                  : SLICE_MS);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (n == 0)
            return -EPIPE;
        if (n == (int)sizeof m && m.kind == kind) {
            *value = m.value;
            return 0;
        }
        if (n < 0 && n != -ETIMEDOUT && n != -EBADMSG)
            return n;
        if (until_closing && closing(p))
            return -ECANCELED;
        if (n == -ETIMEDOUT && left_ms <= 0)
            return -ETIMEDOUT;
    }
}

/* Send one preload and wait for its import (t->lock, template up). */
static int preload_one(pyproc_pool *p, struct pp_template *t, const struct preload *l)
{
    int64_t v = 0;
    int err = shm_fds_send(t->sock, l->body, l->len, NULL, 0);

    if (err == 0)
        err = await(p, t, SHM_TMPL_PRELOADED, p->start_timeout_ms, true, &v);
    if (err == 0 && v == -EBUSY) {
        fprintf(stderr,
                "pyproc %s: preloaded code started a thread in the template: "
                "workers are exec'd from now on\n",
                p->name);
        t->state = TMPL_OFF;
        kill_template(t);
        return -EBUSY;
    }
    /* An import that failed fails in each worker too, where its error
     * goes to the caller. */
    if (err < 0) {
        t->state = TMPL_DOWN;
        kill_template(t);
    }
    return err;
}

/* Wait for a template just exec'd to say READY, then preload what the
 * pool did (t->lock). */
static int await_ready(pyproc_pool *p, struct pp_template *t, bool until_closing)
{
    int64_t v = 0;
    int err = await(p, t, SHM_TMPL_READY, p->start_timeout_ms, until_closing, &v);

    if (err == 0 && v < 0) {
        /* -ENOTSUP: it cannot fork workers on this system. */
        t->state = TMPL_OFF;
        return (int)v;
    }
    if (err == 0) {
        t->state = TMPL_UP;
        t->up_ns = shm_now_ns();
    }
    for (size_t i = 0; err == 0 && i < t->npreloads; i++)
        err = preload_one(p, t, &t->preloads[i]);
    return err;
}

/* Exec a template and wait until it is up (t->lock). */
static int start_locked(pyproc_pool *p, struct pp_template *t, bool until_closing)
{
    int err = pyproc__service_run(p, spawn_on_service, t);

    return err < 0 ? err : await_ready(p, t, until_closing);
}

/* A template that did not start: the pool execs its workers (t->lock). */
static void give_up_start(struct pp_template *t)
{
    reap(t);
    t->state = TMPL_OFF;
}

void pyproc__template_begin(pyproc_pool *p)
{
    struct pp_template *t = p->tmpl;

    pthread_mutex_lock(&t->lock);
    if (pyproc__service_run(p, spawn_on_service, t) < 0)
        give_up_start(t);
    pthread_mutex_unlock(&t->lock);
}

void pyproc__template_finish(pyproc_pool *p)
{
    struct pp_template *t = p->tmpl;

    pthread_mutex_lock(&t->lock);
    if (t->state != TMPL_OFF && await_ready(p, t, false) < 0)
        give_up_start(t);
    pthread_mutex_unlock(&t->lock);
}

/* The answer to a fork: the child's pid (t->lock). */
static int await_fork(pyproc_pool *p, struct pp_template *t, pid_t *ret_pid)
{
    int64_t v = 0;
    int err = await(p, t, SHM_TMPL_FORKED, FORK_TIMEOUT_MS, false, &v);

    if (err == -ETIMEDOUT) {
        /* Killed, it has either forked (the child tells us) or not (the
         * socket reads EOF), unless the child is slow to say so. */
        kill_template(t);
        t->state = TMPL_DOWN;
        err = await(p, t, SHM_TMPL_FORKED, KILLED_TIMEOUT_MS, false, &v);
    }
    if (err < 0) {
        /* Killed, so that its pidfd fires and a new one is started. */
        t->state = TMPL_DOWN;
        kill_template(t);
        /* EOF: no child holds the socket, so none was made (a child
         * answers before it lets go of it). */
        return err == -EPIPE ? err : -ETIMEDOUT;
    }
    if (v == -EBUSY) {
        t->state = TMPL_OFF;
        kill_template(t);
    }
    if (v <= 0)
        return v < 0 ? (int)v : -EPROTO;
    *ret_pid = (pid_t)v;
    return 0;
}

int pyproc__template_fork(pyproc_pool *p, int index, const int *fds, pid_t *ret_pid)
{
    struct pp_template *t = p->tmpl;
    struct shm_tmpl_msg m = {.kind = SHM_TMPL_FORK, .index = index, .value = p->spin_ns / 1000};
    int err;

    if (pthread_mutex_trylock(&t->lock) != 0)
        return -EAGAIN;
    err = t->state == TMPL_UP ? shm_fds_send(t->sock, &m, sizeof m, fds, SHM_TMPL_FORK_FDS)
                              : -EAGAIN;
    if (err == 0)
        err = await_fork(p, t, ret_pid);
    else if (err != -EAGAIN) {
        t->state = TMPL_DOWN;
        kill_template(t);
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

void pyproc__template_preload(pyproc_pool *p, const char *name, const char *pypath)
{
    struct pp_template *t = p->tmpl;
    struct shm_tmpl_msg m = {.kind = SHM_TMPL_PRELOAD};
    size_t nn = strlen(name) + 1, np = strlen(pypath) + 1, len = sizeof m + nn + np;
    struct preload *more;
    char *body;

    if (!t || len > SHM_TMPL_MAX_BODY || !(body = malloc(len)))
        return;
    memcpy(body, &m, sizeof m);
    memcpy(body + sizeof m, name, nn);
    memcpy(body + sizeof m + nn, pypath, np);
    pthread_mutex_lock(&t->lock);
    more = realloc(t->preloads, (t->npreloads + 1) * sizeof *more);
    if (more) {
        t->preloads = more;
        t->preloads[t->npreloads++] = (struct preload){body, len};
        if (t->state == TMPL_UP)
            preload_one(p, t, &t->preloads[t->npreloads - 1]);
    } else {
        free(body);
    }
    pthread_mutex_unlock(&t->lock);
}

/* ---- supervision ---- */

static bool alive(struct pp_template *t)
{
    struct pollfd pfd = {.fd = t->pidfd, .events = POLLIN};

    return t->state == TMPL_UP && t->pidfd >= 0 && poll(&pfd, 1, 0) == 0;
}

/* Sleep ms in slices, unless the pool closes: false then. */
static bool backoff(pyproc_pool *p, int ms)
{
    for (int slept = 0; slept < ms; slept += SLICE_MS) {
        struct timespec ts = {0, SLICE_MS * 1000000L};
        if (closing(p))
            return false;
        nanosleep(&ts, NULL);
    }
    return !closing(p);
}

/* Reap a dead template and start another, until one is up (t->lock). */
static void restart_locked(pyproc_pool *p, struct pp_template *t)
{
    while (!alive(t) && t->state != TMPL_OFF && !closing(p)) {
        bool fast = t->up_ns == 0 || shm_now_ns() - t->up_ns < FAST_DEATH_NS;
        reap(t);
        t->fast_deaths = fast ? t->fast_deaths + 1 : 0;
        if (t->fast_deaths >= MAX_FAST_DEATHS) {
            fprintf(stderr, "pyproc %s: the template keeps dying; workers are exec'd from now on\n",
                    p->name);
            t->state = TMPL_OFF;
            break;
        }
        if (t->fast_deaths > 0) {
            int ms = BACKOFF_FIRST_MS << (t->fast_deaths - 1);
            if (!backoff(p, ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS))
                break;
        }
        t->up_ns = 0;
        start_locked(p, t, true);
    }
    if (t->state == TMPL_OFF)
        reap(t);
}

static void *restart_main(void *arg)
{
    pyproc_pool *p = arg;
    struct pp_template *t = p->tmpl;

    for (;;) {
        pthread_mutex_lock(&t->lock);
        restart_locked(p, t);
        pthread_mutex_unlock(&t->lock);
        pthread_mutex_lock(&p->lock);
        bool again = t->died_again && !p->closing;
        t->died_again = false;
        if (!again) {
            t->restarting = false;
            p->respawning--;
            pthread_cond_broadcast(&p->changed);
        }
        pthread_mutex_unlock(&p->lock);
        if (!again)
            return NULL;
    }
}

void pyproc__template_renew(pyproc_pool *p)
{
    struct pp_template *t = p->tmpl;

    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->state == TMPL_UP) {
        /* Not a death: the restart thread, should the service thread
         * have seen this one, finds the new one alive and leaves it. */
        reap(t);
        t->up_ns = 0;
        if (start_locked(p, t, true) < 0 && !alive(t))
            restart_locked(p, t);
    }
    pthread_mutex_unlock(&t->lock);
}

void pyproc__template_died(pyproc_pool *p)
{
    struct pp_template *t = p->tmpl;
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t th;

    pthread_mutex_lock(&p->lock);
    bool go = !p->closing && !t->restarting;
    if (t->restarting)
        t->died_again = true;
    if (p->closing)
        t->died_closed = true;
    if (go) {
        t->restarting = true;
        p->respawning++;
    }
    pthread_mutex_unlock(&p->lock);
    if (!go)
        return;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&th, &attr, restart_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        pthread_mutex_lock(&p->lock);
        t->restarting = false;
        p->respawning--;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
    }
}

void pyproc__template_pool_opened(pyproc_pool *p)
{
    struct pp_template *t = p->tmpl;

    if (!t)
        return;
    pthread_mutex_lock(&p->lock);
    bool died = t->died_closed;
    t->died_closed = false;
    pthread_mutex_unlock(&p->lock);
    if (died)
        pyproc__template_died(p);
}

void pyproc__template_free(pyproc_pool *p)
{
    struct pp_template *t = p->tmpl;

    if (!t)
        return;
    if (t->pidfd >= 0) {
        struct pollfd pfd = {.fd = t->pidfd, .events = POLLIN};
        /* EOF on its socket is its signal to go. */
        close(t->sock);
        t->sock = -1;
        while (poll(&pfd, 1, STOP_GRACE_MS) < 0 && errno == EINTR)
            ;
    }
    reap(t);
    for (size_t i = 0; i < t->npreloads; i++)
        free(t->preloads[i].body);
    free(t->preloads);
    pthread_mutex_destroy(&t->lock);
    free(t);
    p->tmpl = NULL;
}
