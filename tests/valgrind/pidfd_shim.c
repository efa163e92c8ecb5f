/*
 * pidfds for a test that runs under Valgrind.
 *
 * Debian 12's Valgrind (3.19) knows neither pidfd_open() nor
 * pidfd_send_signal() and refuses waitid(P_PIDFD), so under it no pool
 * could start.  Preloaded into the test (make check-valgrind), this library
 * stands in for the three with calls that Valgrind does know, once the real
 * pidfd_open() has failed with ENOSYS:
 *
 * - pidfd_open() returns an eventfd, and a thread waits for the child's
 *   exit with waitid(WNOWAIT), which leaves the child to be reaped by its
 *   owner, then makes the eventfd readable: what polling a pidfd says.
 * - pidfd_send_signal() and waitid(P_PIDFD) on such an eventfd act on the
 *   pid behind it.  A child that has not been reaped keeps its pid, so the
 *   pid names it as surely as the pidfd would.
 *
 * close() of such an eventfd is seen here too, so that a waiting thread
 * never writes to a number that has been reused.  The workers (and
 * Valgrind's launcher) inherit LD_PRELOAD and load this library as well;
 * where the real calls work, it only passes them on.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PIDFDS 256

/* An emulated pidfd; fd -1 when the slot is free. */
struct fake_pidfd {
    int fd;
    pid_t pid;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake_pidfd fakes[MAX_PIDFDS] = {[0 ... MAX_PIDFDS - 1] = {-1, 0}};

static pid_t pid_of(int fd)
{
    pid_t pid = 0;

    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_PIDFDS && fd >= 0; i++)
        if (fakes[i].fd == fd)
            pid = fakes[i].pid;
    pthread_mutex_unlock(&lock);
    return pid;
}

struct watch {
    int fd;
    pid_t pid;
};

/* Wait for the exit without reaping, then make the fd readable unless it
 * was closed meanwhile. */
static void *watch_exit(void *arg)
{
    struct watch w = *(struct watch *)arg;
    siginfo_t si;
    uint64_t one = 1;

    free(arg);
    while (waitid(P_PID, (id_t)w.pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_PIDFDS; i++)
        if (fakes[i].fd == w.fd && fakes[i].pid == w.pid && write(w.fd, &one, sizeof one) < 0)
            break; /* an eventfd cannot be full after one write */
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int fake_open(pid_t pid, unsigned flags)
{
    int fd = eventfd(0, EFD_CLOEXEC | (flags & PIDFD_NONBLOCK ? EFD_NONBLOCK : 0));
    struct watch *w = malloc(sizeof *w);
    pthread_attr_t attr;
    pthread_t t;
    int slot = -1;

    if (fd < 0 || !w || kill(pid, 0) < 0) {
        int err = fd < 0 ? errno : !w ? ENOMEM : errno;
        if (fd >= 0)
            close(fd);
        free(w);
        errno = err;
        return -1;
    }
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_PIDFDS && slot < 0; i++)
        if (fakes[i].fd < 0)
            slot = i;
    if (slot >= 0)
        fakes[slot] = (struct fake_pidfd){fd, pid};
    pthread_mutex_unlock(&lock);
    *w = (struct watch){fd, pid};
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (slot < 0 || pthread_create(&t, &attr, watch_exit, w) != 0) {
        pthread_attr_destroy(&attr);
        free(w);
        close(fd); /* frees the slot through our close() */
        errno = EMFILE;
        return -1;
    }
    pthread_attr_destroy(&attr);
    return fd;
}

int pidfd_open(pid_t pid, unsigned int flags)
{
    static int (*real)(pid_t, unsigned int);
    static _Atomic bool missing; /* asked once: Valgrind warns each time */
    int fd;

    if (!real)
        real = (int (*)(pid_t, unsigned int))dlsym(RTLD_NEXT, "pidfd_open");
    if (!missing) {
        fd = real ? real(pid, flags) : (errno = ENOSYS, -1);
        if (fd >= 0 || errno != ENOSYS)
            return fd;
        missing = true;
    }
    return fake_open(pid, flags);
}

static long send_signal(int fd, int sig)
{
    pid_t pid = pid_of(fd);

    if (!pid) {
        errno = EBADF;
        return -1;
    }
    return kill(pid, sig);
}

int pidfd_send_signal(int fd, int sig, siginfo_t *info, unsigned int flags)
{
    long r = syscall(SYS_pidfd_send_signal, fd, sig, info, flags);
    return (int)r;
}

long syscall(long n, ...)
{
    static long (*real)(long, ...);
    long a[6];
    va_list ap;
    long r;

    /* Like glibc's own, this takes six arguments whatever the call. */
    va_start(ap, n);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (!real)
        real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    /* Only emulated pidfds are ours; the kernel knows the real ones. */
    if (n == SYS_pidfd_send_signal && pid_of((int)a[0]))
        return send_signal((int)a[0], (int)a[1]);
    r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    return r;
}

int waitid(idtype_t type, id_t id, siginfo_t *info, int options)
{
    static int (*real)(idtype_t, id_t, siginfo_t *, int);
    pid_t pid = type == P_PIDFD ? pid_of((int)id) : 0;

    if (!real)
        real = (int (*)(idtype_t, id_t, siginfo_t *, int))dlsym(RTLD_NEXT, "waitid");
    if (pid)
        return real(P_PID, (id_t)pid, info, options);
    return real(type, id, info, options);
}

int close(int fd)
{
    static int (*real)(int);

    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "close");
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_PIDFDS && fd >= 0; i++)
        if (fakes[i].fd == fd)
            fakes[i].fd = -1;
    /* Closed under the lock: no waiting thread can write to it meanwhile,
     * nor to the next file that gets its number. */
    int r = real(fd);
    pthread_mutex_unlock(&lock);
    return r;
}
