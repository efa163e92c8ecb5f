/*
 * Dying with the host: the worker, and any child that user code forks.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "worker.h"

/*
 * PR_SET_PDEATHSIG follows the host thread that spawned us, not the host
 * process, and misses a host that died before the prctl.  The pipe is the
 * second signal that cannot misfire: only the host holds its write end, so
 * read() returns 0 exactly when the host is gone.
 */
static void *death_watch(void *arg)
{
    char c;
    (void)arg;
    while (read(the_worker.death_fd, &c, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
    return NULL;
}

/* Die with `parent` (PR_SET_PDEATHSIG) and with the host (the pipe). */
static void die_with(pid_t parent)
{
    pthread_t t;
    sigset_t all, old;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(0);
    /* The watcher blocks every signal so Python's handlers run on the main
     * thread, where they can interrupt its wait. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&t, NULL, death_watch, NULL) != 0) {
        fprintf(stderr, "pyproc-worker: cannot start a thread\n");
        _exit(1);
    }
    pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/*
 * Any fork of this process, by Python or by C: the child must leave the
 * rings to its parent.  Only a flag here (async-signal-safe); a child of
 * os.fork() also runs worker_forked_child_setup().
 */
static void on_fork_child(void)
{
    the_worker.forked = 1;
}

/* A forked child lives on its own only as long as the worker that forked
 * it, and the host, do; the watcher thread did not survive the fork. */
void worker_forked_child_setup(void)
{
    die_with(the_worker.pid);
}

void worker_die_with_host(void)
{
    the_worker.pid = getpid();
    die_with(the_worker.host_pid);
    pthread_atfork(NULL, NULL, on_fork_child);
}
