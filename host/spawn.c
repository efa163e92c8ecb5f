/*
 * Starting, stopping and reaping one worker process.
 *
 * A worker gets exactly eight fds, at fixed numbers:
 *   0  /dev/null, so that no worker reads the host's terminal or input
 *   1  the write end of its stdout pipe  } read by the service thread
 *   2  the write end of its stderr pipe  } (output.c)
 *   3  its segment (a memfd: no name in /dev/shm or anywhere else)
 *   4  the eventfd it polls when it sleeps in epoll
 *   5  the eventfd it rings to wake our service thread
 *   6  the read end of a pipe whose write end only we hold, so EOF tells
 *      it we are gone
 *   7  its end of a socket pair over which we pass it the fds of shared
 *      buffers (see shared.h)
 * Every other fd of the host, close-on-exec or not, stays out
 * (posix_spawn_file_actions_addclosefrom_np).  The pipe ends that are its
 * alone are closed on our side once it runs, so that its exit is their EOF.
 *
 * What posix_spawn cannot do, the worker does to itself before Python
 * starts: its resource limits and PR_SET_NO_NEW_PRIVS travel on its
 * command line (see embed/main.c).  Its environment and working
 * directory are set here, by posix_spawn.
 *
 * A pool with a template (template.c) has the same fds passed to the
 * template, which forks the worker with them as its 1 to 7 and nothing
 * else; the template was exec'd here as a worker is, with the pool's
 * limits, environment and directory, and its children inherit them.  The
 * template's own fds are 0 (/dev/null), 1 (/dev/null), 2 (the host's
 * stderr, or /dev/null when the pool takes its workers' output) and 3
 * (its socket to us).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msg.h"
#include "chan.h"
#include "output.h"
#include "service.h"
#include "stats.h"
#include "drain.h"
#include "supervise.h"

extern char **environ;

enum {
    FD_STDOUT = 1,
    FD_STDERR,
    FD_SEG,
    FD_REQUEST_BELL,
    FD_REPLY_BELL,
    FD_DEATH,
    FD_BUFFERS,
    FD_FIRST_FREE,
    N_CHILD_FDS = FD_FIRST_FREE - FD_STDOUT, /* fds 1 to 7, in that order */
};

/* Segment, rings and doorbells, before the process exists. */
static int worker_setup(pyproc_pool *p, struct pp_worker *w)
{
    int err, request_bell, reply_bell;

    err = shm_seg_create(&w->seg, p->ring_bytes, (uint32_t)w->index, p->max_msg);
    if (err < 0)
        return err;
    request_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (request_bell < 0)
        return -errno;
    reply_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (reply_bell < 0) {
        err = -errno;
        close(request_bell);
        return err;
    }
    shm_ring_attach(&w->tx, &w->seg.hdr->request, w->seg.request_data, p->ring_bytes, p->max_msg,
                    request_bell, shm_frame_type_to_worker);
    shm_ring_attach(&w->rx, &w->seg.hdr->reply, w->seg.reply_data, p->ring_bytes, p->max_msg,
                    reply_bell, shm_frame_type_to_host);
    /* Nobody polls the reply ring yet: the worker's READY must ring. */
    atomic_store_explicit(&w->rx.ctl->consumer_wait, SHM_SLEEP_DOORBELL, memory_order_relaxed);
    return 0;
}

/*
 * Copies of the child's fds above the numbers they will get, so that no
 * dup2 in the file actions overwrites a source that a later one needs.
 */
static int high_copies(const int *src, int *dst, int n)
{
    for (int i = 0; i < n; i++) {
        dst[i] = fcntl(src[i], F_DUPFD_CLOEXEC, FD_FIRST_FREE + 16);
        if (dst[i] < 0) {
            int err = -errno;
            while (i-- > 0)
                close(dst[i]);
            return err;
        }
    }
    return 0;
}

/* The worker's command line, in strings that live in *a. */
struct worker_argv {
    char fd_s[16], pid_s[16], idx_s[16], spin_s[24], as_s[24], nofile_s[16];
    char *argv[32];
};

/* A worker's own options; a template (w NULL) has only its socket. */
static int worker_options(pyproc_pool *p, const struct pp_worker *w, struct worker_argv *a, int n)
{
    static char req_s[] = "4", rep_s[] = "5", death_s[] = "6", buffers_s[] = "7", tmpl_s[] = "3";
    char **v = a->argv;

    if (!w) {
        v[n++] = "--template", v[n++] = tmpl_s;
        return n;
    }
    snprintf(a->fd_s, sizeof a->fd_s, "%d", FD_SEG);
    snprintf(a->idx_s, sizeof a->idx_s, "%d", w->index);
    snprintf(a->spin_s, sizeof a->spin_s, "%lld", (long long)(p->spin_ns / 1000));
    v[n++] = "--fd", v[n++] = a->fd_s;
    v[n++] = "--index", v[n++] = a->idx_s;
    v[n++] = "--request-bell", v[n++] = req_s;
    v[n++] = "--reply-bell", v[n++] = rep_s;
    v[n++] = "--death-fd", v[n++] = death_s;
    v[n++] = "--buffer-fd", v[n++] = buffers_s;
    v[n++] = "--spin-us", v[n++] = a->spin_s;
    return n;
}

static void build_argv(pyproc_pool *p, const struct pp_worker *w, struct worker_argv *a)
{
    char **v = a->argv;
    int n = 0;

    snprintf(a->pid_s, sizeof a->pid_s, "%d", (int)getpid());
    v[n++] = "pyproc-worker";
    n = worker_options(p, w, a, n);
    v[n++] = "--host-pid", v[n++] = a->pid_s;
    v[n++] = "--pool", v[n++] = p->name;
    v[n++] = "--python-path", v[n++] = p->python_path ? p->python_path : "";
    if (p->mem_limit) {
        snprintf(a->as_s, sizeof a->as_s, "%llu", (unsigned long long)p->mem_limit);
        v[n++] = "--rlimit-as", v[n++] = a->as_s;
    }
    if (p->max_fds) {
        snprintf(a->nofile_s, sizeof a->nofile_s, "%d", p->max_fds);
        v[n++] = "--rlimit-nofile", v[n++] = a->nofile_s;
    }
    if (p->no_new_privs)
        v[n++] = "--no-new-privs";
    if (p->venv)
        v[n++] = "--venv", v[n++] = p->venv;
    v[n] = NULL;
}

/*
 * stdin from /dev/null, hi[i] as fd FD_STDOUT + i, nothing else.  Every
 * step is checked: on failure fa is destroyed again and the error
 * returned.
 */
static int file_actions(pyproc_pool *p, posix_spawn_file_actions_t *fa, const int *hi, int nfds)
{
    int err = posix_spawn_file_actions_init(fa);

    if (err)
        return -err;
    err = posix_spawn_file_actions_addopen(fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    for (int i = 0; !err && i < nfds; i++)
        err = posix_spawn_file_actions_adddup2(fa, hi[i], FD_STDOUT + i);
    if (!err)
        err = posix_spawn_file_actions_addclosefrom_np(fa, FD_STDOUT + nfds);
    if (!err && p->cwd)
        err = posix_spawn_file_actions_addchdir_np(fa, p->cwd);
    if (err) {
        posix_spawn_file_actions_destroy(fa);
        return -err;
    }
    return 0;
}

/*
 * The service thread blocks every signal, and the application may ignore
 * some: the worker starts with none blocked and all default.  On failure
 * attr is destroyed again and the error returned.
 */
static int spawn_attr(posix_spawnattr_t *attr)
{
    sigset_t none, all;
    int err = posix_spawnattr_init(attr);

    if (err)
        return -err;
    sigemptyset(&none);
    sigfillset(&all);
    err = posix_spawnattr_setsigmask(attr, &none);
    if (!err)
        err = posix_spawnattr_setsigdefault(attr, &all);
    if (!err)
        err = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (err) {
        posix_spawnattr_destroy(attr);
        return -err;
    }
    return 0;
}

/* posix_spawn with every step of its set-up checked; *pid on success. */
static int spawn_checked(pyproc_pool *p, pid_t *pid, const int *hi, int nfds, char **argv)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int err = file_actions(p, &fa, hi, nfds);

    if (err < 0)
        return err;
    err = spawn_attr(&attr);
    if (err == 0) {
        /* glibc's posix_spawn reports a failed exec (or chdir) as its
         * return value. */
        err = -posix_spawn(pid, p->worker_path, &fa, &attr, argv, p->env ? p->env : environ);
        posix_spawnattr_destroy(&attr);
    }
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

/* A pidfd for our child pid, or the error with the child gone. */
static int open_pidfd(pid_t pid, int *ret)
{
    int fd = pidfd_open(pid, 0);

    if (fd < 0) {
        int err = -errno;
        /* ESRCH: it died and was reaped by someone else (SIGCHLD ignored,
         * or the application's waitpid(-1)); its pid may be reused now,
         * so it must not be signalled. */
        if (err != -ESRCH) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return err;
    }
    *ret = fd;
    return 0;
}

/* Exec w (NULL: the template) with src as its fds 1 to nfds. */
static int spawn_process(pyproc_pool *p, const struct pp_worker *w, const int *src, int nfds,
                         pid_t *ret_pid, int *ret_pidfd)
{
    struct worker_argv a;
    int hi[N_CHILD_FDS];
    pid_t pid;
    int err;

    err = high_copies(src, hi, nfds);
    if (err < 0)
        return err;
    build_argv(p, w, &a);
    err = spawn_checked(p, &pid, hi, nfds, a.argv);
    for (int i = 0; i < nfds; i++)
        close(hi[i]);
    if (err == 0)
        err = open_pidfd(pid, ret_pidfd);
    if (err == 0)
        *ret_pid = pid;
    return err;
}

/* Forked by the pool's template when it has one up, else exec'd. */
static int start_process(pyproc_pool *p, struct pp_worker *w, const int *src)
{
    pid_t pid;
    int err = p->tmpl ? pyproc__template_fork(p, w->index, src, &pid) : -ENOTSUP;

    if (err == 0) {
        err = open_pidfd(pid, &w->pidfd);
        w->pid = err == 0 ? pid : -1;
        return err;
    }
    /* A child may hold the fds: they are for nobody else. */
    if (err == -ETIMEDOUT) {
        w->pid = -1;
        return err;
    }
    /* Otherwise the fork made no child: the fds are still unused. */
    err = spawn_process(p, w, src, N_CHILD_FDS, &w->pid, &w->pidfd);
    if (err < 0)
        w->pid = -1;
    return err;
}

int pyproc__template_spawn(pyproc_pool *p, int sock, pid_t *ret_pid, int *ret_pidfd)
{
    int src[3], err;

    /* Its stdout says nothing; its stderr (why it could not start) is
     * the host's, unless the application takes the workers' output. */
    src[0] = open("/dev/null", O_WRONLY | O_CLOEXEC);
    src[1] = p->output ? open("/dev/null", O_WRONLY | O_CLOEXEC) : fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (src[1] < 0)
        src[1] = open("/dev/null", O_WRONLY | O_CLOEXEC);
    src[2] = sock;
    err = src[0] < 0 || src[1] < 0 ? -EMFILE : spawn_process(p, NULL, src, 3, ret_pid, ret_pidfd);
    for (int i = 0; i < 2; i++)
        if (src[i] >= 0)
            close(src[i]);
    return err;
}

/* Pipes for the worker's stdout and stderr; we keep the read ends. */
static int output_pipes(struct pp_worker *w, int *write_ends)
{
    int fds[2];

    for (int k = 0; k < 2; k++) {
        if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
            return -errno;
        w->out[k].fd = fds[0];
        write_ends[k] = fds[1];
        /* The worker's end blocks: a worker that writes faster than the
         * host takes it waits rather than losing lines or failing. */
        if (fcntl(fds[1], F_SETFL, 0) < 0)
            return -errno;
    }
    return 0;
}

/* Close the child's ends that we still hold. */
static void spawn_close(struct pp_spawn *s)
{
    int *fds[] = {&s->out_w[0], &s->out_w[1], &s->death_r, &s->sock_w};

    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

void pyproc__spawn_abandon(struct pp_spawn *s)
{
    spawn_close(s);
    pyproc__worker_unref(s->w);
    s->w = NULL;
}

int pyproc__worker_prepare(pyproc_pool *p, int index, struct pp_spawn *s)
{
    int pipefd[2], sock[2], err;

    *s = (struct pp_spawn){.out_w = {-1, -1}, .death_r = -1, .sock_w = -1};
    if (!(s->w = pyproc__worker_alloc(p, index)))
        return -ENOMEM;
    s->w->stats = pyproc__slot_stats(p, index);
    err = s->w->stats ? worker_setup(p, s->w) : -ENOMEM;
    if (err == 0 && p->remote) /* not a local process (core.h): no fds */
        return 0;
    if (err == 0)
        err = output_pipes(s->w, s->out_w);
    if (err == 0 && pipe2(pipefd, O_CLOEXEC) < 0)
        err = -errno;
    if (err == 0) {
        s->w->death_w = pipefd[1];
        s->death_r = pipefd[0];
        /* Datagrams keep each fd with its token; ours never blocks. */
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock) < 0)
            err = -errno;
    }
    if (err < 0) {
        pyproc__spawn_abandon(s);
        return err;
    }
    s->w->fd_sock = sock[0];
    s->sock_w = sock[1];
    return 0;
}

/* Start s's worker with s's fds, which we then let go of. */
static int launch_once(pyproc_pool *p, struct pp_spawn *s)
{
    struct pp_worker *w = s->w;
    int src[N_CHILD_FDS] = {s->out_w[0],       s->out_w[1], w->seg.fd, w->tx.doorbell_fd,
                            w->rx.doorbell_fd, s->death_r,  s->sock_w};
    int err = p->remote ? p->remote->spawn(p, w) : start_process(p, w, src);

    /* Its exit is their EOF once we hold none of its ends; a child the
     * template may have made unknown to us (-ETIMEDOUT) exits on the
     * death pipe's EOF. */
    if (err < 0) {
        pyproc__spawn_abandon(s);
        return err;
    }
    spawn_close(s);
    return 0;
}

int pyproc__worker_launch(pyproc_pool *p, struct pp_spawn *s)
{
    int index = s->w->index;
    int err = launch_once(p, s);

    /* Once more with new fds: the template, killed, is down, so this
     * worker is exec'd (or forked by the next template). */
    if (err == -ETIMEDOUT && (err = pyproc__worker_prepare(p, index, s)) == 0)
        err = launch_once(p, s);
    return err;
}

int pyproc__worker_spawn(pyproc_pool *p, int index, struct pp_worker **ret)
{
    struct pp_spawn s;
    int err = pyproc__worker_prepare(p, index, &s);

    if (err == 0)
        err = pyproc__worker_launch(p, &s);
    if (err == 0)
        *ret = s.w;
    return err;
}

/* Describe how a reaped worker ended, for the error of its calls. */
char *pyproc__exit_text(int index, const siginfo_t *si)
{
    char *s = NULL;
    int n;

    if (si->si_code == CLD_EXITED)
        n = asprintf(&s, "worker %d exited with status %d", index, si->si_status);
    else if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
        n = asprintf(&s, "worker %d was killed by signal %d (%s)", index, si->si_status,
                     strsignal(si->si_status));
    else
        n = asprintf(&s, "worker %d ended (code %d)", index, si->si_code);
    return n < 0 ? NULL : s;
}

void pyproc__worker_reap(struct pp_worker *w)
{
    siginfo_t si = {0};
    char *why;

    if (w->pid <= 0)
        return;
    /* ECHILD: the kernel (SIGCHLD set to SIG_IGN) or the application
     * (waitpid(-1)) reaped it first and its status is gone; the pidfd
     * still told us it ended. */
    if (w->pool->remote)
        why = w->pool->remote->reap(w);
    else if (waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &si, WEXITED) == 0)
        why = pyproc__exit_text(w->index, &si);
    else if (asprintf(&why,
                      "worker %d died; how is unknown: its exit status was "
                      "collected outside the pool (SIGCHLD ignored, or reaped "
                      "by the application)",
                      w->index) < 0)
        why = NULL;
    /* Its last words (a traceback, a fatal error) before its calls fail. */
    pyproc__output_finish(w);
    shm_ring_close(&w->tx);
    shm_ring_close(&w->rx);
    pthread_mutex_lock(&w->pool->lock);
    w->pid = -1;
    free(w->death);
    w->death = why;
    /* Release after the rings are closed and death is set: pairs with the
     * acquire loads of dead (stop.c, workers.c, stats.c). */
    atomic_store_explicit(&w->dead, true, memory_order_release);
    pthread_cond_broadcast(&w->pool->changed);
    pthread_mutex_unlock(&w->pool->lock);
    /* Answers it managed to write before dying still count. */
    pthread_mutex_lock(&w->rx_lock);
    pyproc__drain(w);
    pthread_mutex_unlock(&w->rx_lock);
    pyproc__fail_calls(w, PYPROC_EWORKER, why ? why : "the worker died");
}

/*
 * Wait up to grace_ms for w to exit, passing its output on meanwhile: a
 * worker that says a lot on its way out must not stall on a full pipe.
 * Returns whether it exited.
 */
static bool wait_exit(struct pp_worker *w, int grace_ms)
{
    int64_t until = shm_now_ns() + (int64_t)grace_ms * 1000000;

    for (;;) {
        struct pollfd pfd[3] = {
            {.fd = w->pidfd, .events = POLLIN},
            {.fd = w->out[0].fd, .events = POLLIN},
            {.fd = w->out[1].fd, .events = POLLIN},
        };
        int64_t left = until - shm_now_ns();
        int n = poll(pfd, 3, left > 0 ? (int)((left + 999999) / 1000000) : 0);
        if (n < 0 && errno != EINTR)
            return false;
        if (pfd[0].revents & POLLIN)
            return true;
        for (int k = 0; k < 2; k++)
            if (pfd[k + 1].revents)
                pyproc__output_read(w, k);
        if (left <= 0)
            return false;
    }
}

/* Give an asked worker grace_ms to exit, then kill it; reap either way. */
void pyproc__worker_stop(struct pp_worker *w, int grace_ms)
{
    if (w->pid <= 0)
        return;
    if (!wait_exit(w, grace_ms))
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
    pyproc__worker_reap(w);
}
