/*
 * The template of a pool (pyproc_opts.start = PYPROC_START_TEMPLATE): a
 * pyproc-worker that starts Python, imports the hub (and with it asyncio)
 * and then, while it is the only thread of its process, forks a worker
 * for each TMPL_FORK the host sends (shm/template.h).  A worker forked so
 * skips the interpreter's start-up and the hub's imports, and shares their
 * memory with the template and its siblings copy-on-write.
 *
 * The fork is clone3(CLONE_PARENT): the new worker is the host's child,
 * as an exec'd worker is, so the host holds a real pidfd, reaps it with
 * waitid() and reads its exit status, and its PR_SET_PDEATHSIG follows
 * the host's service thread (the template's parent thread).  A raw clone
 * leaves glibc's record of the thread id stale, so the kernel writes the
 * child's there (CLONE_CHILD_SETTID) at the place libthread_db is told
 * of; where that place cannot be found, the template says so at READY and
 * the host execs its workers instead.  Nothing but this thread runs, so
 * no lock can be held across the fork.
 *
 * The template itself gets fds 0 (/dev/null), 1 and 2 (from the host) and
 * 3 (this socket), and holds 4 to 7 free of its own files; it dies with the host by PR_SET_PDEATHSIG and, with
 * no thread to watch a pipe, by the socket's EOF.  Its resource limits,
 * no_new_privs, environment and working directory are the workers', set
 * before Python starts, and forked workers inherit them.
 */
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../shm/fdpass.h"
#include "../shm/template.h"
#include "buffers.h"
#include "worker.h"

static PyObject *hub_module; /* the hub, loaded once in the template */

/*
 * Hold fds 4 to 7 (/dev/null) before any Python code runs, so that no fd
 * the template opens (a preloaded module's file) takes a number that a
 * forked worker's dup2() then puts another file on: in the worker, such an
 * fd is closed instead (EBADF), never silently someone else's.
 */
static void reserve_worker_fds(void)
{
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (null < 0)
        _exit(1);
    for (int fd = 4; fd <= SHM_TMPL_FORK_FDS; fd++)
        if (fd != null && dup3(null, fd, O_CLOEXEC) < 0)
            _exit(1);
    if (null > SHM_TMPL_FORK_FDS)
        close(null);
}

void worker_template_prepare(void)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != the_worker.host_pid)
        _exit(0);
    reserve_worker_fds();
}

/* The threads of this process, or -1. */
static int thread_count(void)
{
    char line[128];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "re");

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/*
 * Where glibc keeps this thread's id, found as libthread_db finds it; NULL
 * when that is not known here or does not hold our id.
 */
static pid_t *thread_id_slot(void)
{
    const uint32_t *desc = dlvsym(RTLD_DEFAULT, "_thread_db_pthread_tid", "GLIBC_PRIVATE");
    pid_t *slot;

    /* The descriptor: size in bits, count, offset in struct pthread. */
    if (!desc || desc[0] != 8 * sizeof(pid_t) || desc[1] != 1)
        return NULL;
    slot = (pid_t *)((char *)pthread_self() + desc[2]);
    return *slot == (pid_t)syscall(SYS_gettid) ? slot : NULL;
}

/* Fork a sibling (a child of our parent); as fork() returns. */
static pid_t fork_sibling(pid_t *tid_slot)
{
    /* exit_signal stays 0: CLONE_PARENT takes ours, SIGCHLD. */
    struct clone_args a = {
        .flags = CLONE_PARENT | CLONE_CHILD_SETTID,
        .child_tid = (uint64_t)(uintptr_t)tid_slot,
    };
    long pid = syscall(SYS_clone3, &a, sizeof a);

#ifdef __x86_64__
    /* Kernels (or seccomp filters) without clone3. */
    if (pid < 0 && errno == ENOSYS)
        pid = syscall(SYS_clone, CLONE_PARENT | CLONE_CHILD_SETTID | SIGCHLD, NULL, NULL, tid_slot,
                      NULL);
#endif
    return (pid_t)pid;
}

/* A fork that did not happen: why, as a negative errno. */
static void fork_failed(const struct shm_tmpl_msg *req, int err)
{
    struct shm_tmpl_msg m = {.kind = SHM_TMPL_FORKED, .index = req->index, .value = err};

    shm_fds_send(the_worker.template_fd, &m, sizeof m, NULL, 0);
}

/*
 * The 7 fds received, as fds 1 to 7 (what an exec'd worker is started
 * with, see host/spawn.c), and nothing else above 0: copies go above 7
 * first (not far above: RLIMIT_NOFILE may be low) so that no dup2
 * overwrites a source a later one needs.
 */
static void take_worker_fds(const int *fds)
{
    int hi[SHM_TMPL_FORK_FDS];

    for (int i = 0; i < SHM_TMPL_FORK_FDS; i++) {
        hi[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 1 + SHM_TMPL_FORK_FDS);
        if (hi[i] < 0)
            _exit(1);
    }
    for (int i = 0; i < SHM_TMPL_FORK_FDS; i++)
        if (dup2(hi[i], 1 + i) < 0)
            _exit(1);
    if (syscall(SYS_close_range, 1 + SHM_TMPL_FORK_FDS, ~0U, 0) < 0)
        _exit(1);
}

/* The names the hub was loaded with, now this worker's. */
static int take_identity(void)
{
    PyObject *bridge = PyImport_ImportModule("_pyproc"); /* new ref */
    int err = -1;

    if (bridge && PyModule_AddIntConstant(bridge, "index", the_worker.index) == 0 &&
        PyModule_AddIntConstant(bridge, "doorbell", the_worker.requests.doorbell_fd) == 0 &&
        PyModule_AddIntConstant(hub_module, "index", the_worker.index) == 0)
        err = 0;
    Py_XDECREF(bridge);
    return err;
}

/* In the forked child: become worker req->index and serve; never returns. */
static void become_worker(const int *fds, const struct shm_tmpl_msg *req)
{
    struct shm_tmpl_msg m = {.kind = SHM_TMPL_FORKED, .index = req->index};
    struct worker_args a = {.seg_fd = 3, .request_bell = 4, .reply_bell = 5, .buffer_fd = 7};
    int rc;

    /* Said by the child, so that a template that dies now loses nothing;
     * first, since the host waits for it before its next fork. */
    m.value = getpid();
    if (shm_fds_send(the_worker.template_fd, &m, sizeof m, NULL, 0) < 0)
        _exit(1);
    /* The worker's fds before Python's after-fork hooks run, so that
     * what they open stays open and what they print is the worker's. */
    take_worker_fds(fds);
    the_worker.template_fd = -1;
    the_worker.index = req->index;
    the_worker.spin_ns = req->value * 1000;
    the_worker.death_fd = 6;
    worker_die_with_host();
    PyOS_AfterFork_Child();
    worker_attach_rings(&a);
    if (worker_buffers_init(a.buffer_fd) != 0 || take_identity() < 0) {
        if (PyErr_Occurred())
            PyErr_Print();
        _exit(1);
    }
    rc = worker_run_main(hub_module);
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
}

static void do_fork(const int *fds, const struct shm_tmpl_msg *req, pid_t *tid_slot)
{
    int err = 0;

    /* A thread that preloaded code started would be lost in the child
     * with whatever lock it holds. */
    if (thread_count() != 1) {
        fork_failed(req, -EBUSY);
        return;
    }
    PyOS_BeforeFork();
    pid_t pid = fork_sibling(tid_slot);
    if (pid == 0)
        become_worker(fds, req);
    if (pid < 0)
        err = -errno;
    PyOS_AfterFork_Parent();
    if (err < 0)
        fork_failed(req, err);
}

/* Import a sub's modules (body: name '\0' pypath '\0') for the workers
 * forked from now on to share. */
static void do_preload(const char *body, size_t len)
{
    struct shm_tmpl_msg m = {.kind = SHM_TMPL_PRELOADED};
    const char *name = body, *pypath;
    PyObject *res = NULL;

    if (len < 4 || body[len - 1] || !(pypath = memchr(body, 0, len - 1))) {
        m.value = -EINVAL;
    } else {
        res = PyObject_CallMethod(hub_module, "preload", "ss", name, pypath + 1); /* new ref */
        /* Its workers will say why, each as it imports the sub. */
        if (!res)
            PyErr_Clear();
        m.value = !res ? -EIO : thread_count() != 1 ? -EBUSY : 0;
        Py_XDECREF(res);
    }
    shm_fds_send(the_worker.template_fd, &m, sizeof m, NULL, 0);
}

int worker_template_serve(void)
{
    struct shm_tmpl_msg ready = {.kind = SHM_TMPL_READY};
    pid_t *tid_slot = thread_id_slot();
    char body[SHM_TMPL_MAX_BODY];
    int fds[SHM_FDS_MAX], nfds;
    PyObject *warm = NULL;

    hub_module = worker_load_hub(); /* new ref, kept for the children */
    if (hub_module)
        warm = PyObject_CallMethod(hub_module, "warm", NULL); /* new ref */
    if (!warm)
        Py_CLEAR(hub_module);
    Py_XDECREF(warm);
    if (!hub_module) {
        PyErr_Print();
        return 1;
    }
    ready.value = tid_slot ? getpid() : -ENOTSUP;
    if (shm_fds_send(the_worker.template_fd, &ready, sizeof ready, NULL, 0) < 0)
        return 0;
    for (;;) {
        int n = shm_fds_recv(the_worker.template_fd, body, sizeof body, fds, &nfds, -1);
        struct shm_tmpl_msg req;

        if (n == -EBADMSG)
            continue;
        if (n <= 0)
            return 0; /* the host is gone */
        if ((size_t)n >= sizeof req) {
            memcpy(&req, body, sizeof req);
            if (req.kind == SHM_TMPL_FORK && nfds == SHM_TMPL_FORK_FDS && tid_slot)
                do_fork(fds, &req, tid_slot);
            else if (req.kind == SHM_TMPL_FORK)
                fork_failed(&req, -EINVAL);
            else if (req.kind == SHM_TMPL_PRELOAD)
                do_preload(body + sizeof req, (size_t)n - sizeof req);
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}
