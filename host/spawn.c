/*
 * Starting, stopping and reaping one worker process.
 *
 * A worker gets exactly four fds, at fixed numbers: its segment (3), the
 * eventfd it polls when it sleeps in epoll (4), the eventfd it rings to wake
 * our service thread (5), and the read end of a pipe whose write end only
 * we hold (6), so EOF tells it we are gone.  Every other fd of the host,
 * close-on-exec or not, stays out (posix_spawn_file_actions_addclosefrom_np).
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msg.h"
#include "pool.h"

extern char **environ;

enum { FD_SEG = 3, FD_REQUEST_BELL, FD_REPLY_BELL, FD_DEATH, FD_FIRST_FREE };

static struct pp_worker *worker_alloc(pyproc_pool *p, int index)
{
    struct pp_worker *w = calloc(1, sizeof *w);

    if (!w)
        return NULL;
    w->pool = p;
    atomic_init(&w->refs, 1);
    w->index = index;
    w->pid = -1;
    w->pidfd = w->death_w = -1;
    w->seg.fd = -1;
    w->tx.doorbell_fd = w->rx.doorbell_fd = -1;
    w->free_head = UINT32_MAX;
    pthread_mutex_init(&w->tx_lock, NULL);
    pthread_mutex_init(&w->rx_lock, NULL);
    pthread_mutex_init(&w->calls_lock, NULL);
    return w;
}

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
    shm_ring_attach(&w->tx, &w->seg.hdr->request, w->seg.request_data,
                    p->ring_bytes, p->max_msg, request_bell, shm_frame_type_to_worker);
    shm_ring_attach(&w->rx, &w->seg.hdr->reply, w->seg.reply_data,
                    p->ring_bytes, p->max_msg, reply_bell, shm_frame_type_to_host);
    /* Nobody polls the reply ring yet: the worker's READY must ring. */
    atomic_store(&w->rx.ctl->consumer_wait, SHM_SLEEP_DOORBELL);
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

static int spawn_process(pyproc_pool *p, struct pp_worker *w, int death_r)
{
    char fd_s[16], pid_s[16], idx_s[16], spin_s[24];
    int src[4] = {w->seg.fd, w->tx.doorbell_fd, w->rx.doorbell_fd, death_r};
    int hi[4];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int err;

    snprintf(fd_s, sizeof fd_s, "%d", FD_SEG);
    snprintf(pid_s, sizeof pid_s, "%d", (int)getpid());
    snprintf(idx_s, sizeof idx_s, "%d", w->index);
    snprintf(spin_s, sizeof spin_s, "%lld", (long long)(p->spin_ns / 1000));
    char req_s[] = "4", rep_s[] = "5", death_s[] = "6";
    char *argv[] = {
        "pyproc-worker", "--fd", fd_s, "--host-pid", pid_s, "--pool", p->name,
        "--index", idx_s, "--request-bell", req_s, "--reply-bell", rep_s,
        "--death-fd", death_s, "--spin-us", spin_s,
        "--python-path", p->python_path ? p->python_path : "", NULL,
    };

    err = high_copies(src, hi, 4);
    if (err < 0)
        return err;
    posix_spawn_file_actions_init(&fa);
    for (int i = 0; i < 4; i++)
        posix_spawn_file_actions_adddup2(&fa, hi[i], FD_SEG + i);
    posix_spawn_file_actions_addclosefrom_np(&fa, FD_FIRST_FREE);
    /* The service thread blocks every signal, and the application may
     * ignore some: the worker starts with none blocked and all default. */
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    /* glibc's posix_spawn reports a failed exec as its return value. */
    err = -posix_spawn(&w->pid, p->worker_path, &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 4; i++)
        close(hi[i]);
    if (err < 0) {
        w->pid = -1;
        return err;
    }
    w->pidfd = pidfd_open(w->pid, 0);
    if (w->pidfd < 0) {
        err = -errno;
        kill(w->pid, SIGKILL);
        waitpid(w->pid, NULL, 0);
        w->pid = -1;
        return err;
    }
    return 0;
}

int pyproc__worker_spawn(pyproc_pool *p, int index, struct pp_worker **ret)
{
    struct pp_worker *w = worker_alloc(p, index);
    int pipefd[2], err;

    if (!w)
        return -ENOMEM;
    err = worker_setup(p, w);
    if (err < 0)
        goto fail;
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        err = -errno;
        goto fail;
    }
    w->death_w = pipefd[1];
    err = spawn_process(p, w, pipefd[0]);
    close(pipefd[0]);
    if (err < 0)
        goto fail;
    *ret = w;
    return 0;
fail:
    pyproc__worker_unref(w);
    return err;
}

void pyproc__worker_ref(struct pp_worker *w)
{
    atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
}

void pyproc__worker_unref(struct pp_worker *w)
{
    if (w && atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
        pyproc__worker_free(w);
}

/* Describe how a reaped worker ended, for the error of its calls. */
static char *describe_exit(int index, const siginfo_t *si)
{
    char *s = NULL;
    int n;

    if (si->si_code == CLD_EXITED)
        n = asprintf(&s, "worker %d exited with status %d", index, si->si_status);
    else if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
        n = asprintf(&s, "worker %d was killed by signal %d (%s)", index,
                     si->si_status, strsignal(si->si_status));
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
    if (waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &si, WEXITED) == 0)
        why = describe_exit(w->index, &si);
    else if (asprintf(&why, "worker %d ended; its status was collected elsewhere",
                      w->index) < 0)
        why = NULL;
    w->pid = -1;
    shm_ring_close(&w->tx);
    shm_ring_close(&w->rx);
    pthread_mutex_lock(&w->pool->lock);
    free(w->death);
    w->death = why;
    atomic_store(&w->dead, true);
    pthread_cond_broadcast(&w->pool->changed);
    pthread_mutex_unlock(&w->pool->lock);
    /* Answers it managed to write before dying still count. */
    pthread_mutex_lock(&w->rx_lock);
    pyproc__drain(w);
    pthread_mutex_unlock(&w->rx_lock);
    pyproc__fail_calls(w, PYPROC_EWORKER, why ? why : "the worker died");
}

/* Ask the worker to stop.  Never waits for ring space: a worker too
 * stuck to read its ring is killed by pyproc__worker_stop(). */
void pyproc__worker_ask_stop(struct pp_worker *w)
{
    void *dst;

    if (w->pid <= 0 || atomic_load(&w->dead))
        return;
    pthread_mutex_lock(&w->tx_lock);
    if (shm_ring_reserve(&w->tx, 1, &dst) == 0) {
        *(unsigned char *)dst = 0xc0; /* msgpack nil */
        shm_ring_commit(&w->tx, SHM_FRAME_SHUTDOWN, 0, 0, 1);
        shm_ring_notify(&w->tx);
    }
    pthread_mutex_unlock(&w->tx_lock);
}

/* Give an asked worker grace_ms to exit, then kill it; reap either way. */
void pyproc__worker_stop(struct pp_worker *w, int grace_ms)
{
    struct pollfd pfd = {.fd = w->pidfd, .events = POLLIN};

    if (w->pid <= 0)
        return;
    while (poll(&pfd, 1, grace_ms) < 0 && errno == EINTR)
        ;
    if (!(pfd.revents & POLLIN))
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
    pyproc__worker_reap(w);
}

void pyproc__worker_free(struct pp_worker *w)
{
    if (!w)
        return;
    if (w->pid > 0) {
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
        waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &(siginfo_t){0}, WEXITED);
    }
    if (w->pidfd >= 0)
        close(w->pidfd);
    if (w->death_w >= 0)
        close(w->death_w);
    if (w->tx.doorbell_fd >= 0)
        close(w->tx.doorbell_fd);
    if (w->rx.doorbell_fd >= 0)
        close(w->rx.doorbell_fd);
    shm_ring_detach(&w->tx);
    shm_ring_detach(&w->rx);
    shm_seg_release(&w->seg);
    pthread_mutex_destroy(&w->tx_lock);
    pthread_mutex_destroy(&w->rx_lock);
    pthread_mutex_destroy(&w->calls_lock);
    free(w->slots);
    free(w->death);
    free(w);
}
