/*
 * The floors: two C processes handing one byte back and forth, through
 * pipes (the cost of a sleeping wake-up each way) and through spinning on
 * shared memory (the cost with no wake-up at all).  No Python transport can
 * beat the first while it sleeps, nor the second while it spins.  Two more
 * are the costs that some layouts of threads cannot avoid: the switch from
 * one process to another on one CPU, and the one poll() an event loop
 * makes per wake.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* ---- pipes ---- */

struct pipe_pair {
    int to, from; /* the parent's ends */
};

static int pipe_round_trip(void *arg)
{
    struct pipe_pair *p = arg;
    char c = 1;

    if (write(p->to, &c, 1) != 1)
        return -EPIPE;
    if (read(p->from, &c, 1) != 1)
        return -EPIPE;
    return 0;
}

static void pipe_echo(int in, int out)
{
    char c;

    while (read(in, &c, 1) == 1)
        if (write(out, &c, 1) != 1)
            break;
    _exit(0);
}

/* Fork a child that echoes each byte; *p gets the parent's ends. */
static pid_t pipe_child(struct pipe_pair *p)
{
    int down[2], up[2];
    pid_t pid;

    if (pipe2(down, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(up, O_CLOEXEC) < 0) {
        close(down[0]);
        close(down[1]);
        return -errno;
    }
    pid = fork();
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        pipe_echo(down[0], up[1]);
    }
    close(down[0]);
    close(up[1]);
    if (pid < 0) {
        close(down[1]);
        close(up[0]);
        return -errno;
    }
    *p = (struct pipe_pair){.to = down[1], .from = up[0]};
    return pid;
}

int bench_floor_pipe(void)
{
    struct series busy = {0}, idle = {0};
    struct pipe_pair p;
    pid_t pid = pipe_child(&p);
    int err;

    if (pid < 0)
        return bench_fail("fork", pid, NULL);
    err = bench_latency(&busy, bench_budget(BUDGET_FAST), 0, pipe_round_trip, &p);
    if (!err)
        err = bench_latency(&idle, bench_budget(BUDGET_IDLE), 50000000, pipe_round_trip, &p);
    close(p.to);
    close(p.from);
    waitpid(pid, NULL, 0);
    if (err < 0) {
        series_free(&busy);
        series_free(&idle);
        return bench_fail("pipe ping-pong", err, NULL);
    }
    bench_row_add("pipe", "pipe ping-pong, back to back", "us", ROW_COST, ROW_P99 | ROW_SAMPLES,
                  &busy, "1 byte each way, fork()ed peer");
    return bench_row_add("pipe-idle", "pipe ping-pong after 50 ms idle", "us", ROW_COST, ROW_P99,
                         &idle, NULL);
}

/* ---- spinning on shared memory ---- */

#define SPIN_STOP UINT64_MAX

/*
 * One cache line per direction.  The parent alone writes ping and the
 * child alone writes pong; each store is a release that pairs with the
 * acquire load of the other side.
 */
struct spin_pair {
    _Alignas(64) _Atomic uint64_t ping;
    _Alignas(64) _Atomic uint64_t pong;
    _Alignas(64) uint64_t seq; /* the parent's own counter */
    pid_t child;
    bool yield; /* both sides on one CPU: hand it over rather than spin */
};

static void spin_echo(struct spin_pair *sp)
{
    uint64_t seen = 0, v;
    unsigned idle = 0;

    for (;;) {
        v = atomic_load_explicit(&sp->ping, memory_order_acquire);
        if (v == SPIN_STOP)
            _exit(0);
        if (v != seen) {
            seen = v;
            atomic_store_explicit(&sp->pong, v, memory_order_release);
        } else if (sp->yield || !(++idle & 0xffff)) {
            /* Should the scheduler have put both sides on one CPU, give
             * the parent that CPU rather than spin through its slice. */
            sched_yield();
        } else {
            cpu_relax();
        }
    }
}

static int spin_round_trip(void *arg)
{
    struct spin_pair *sp = arg;
    uint64_t want = ++sp->seq;

    atomic_store_explicit(&sp->ping, want, memory_order_release);
    for (unsigned long i = 1;; i++) {
        if (atomic_load_explicit(&sp->pong, memory_order_acquire) == want)
            return 0;
        /* A dead peer would leave us spinning forever. */
        if (!(i & 0xffffff) && waitpid(sp->child, NULL, WNOHANG) != 0)
            return -ECHILD;
        if (sp->yield || !(i & 0xffff))
            sched_yield();
        cpu_relax();
    }
}

/* Fork the echoing child and measure; yield as in struct spin_pair. */
static int spin_measure(struct series *s, bool yield)
{
    struct spin_pair *sp = mmap(NULL, sizeof *sp, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int err;

    if (sp == MAP_FAILED)
        return bench_fail("mmap", -errno, NULL);
    sp->yield = yield;
    /* Stored by the parent alone: the page is shared with the child. */
    pid_t pid = fork();
    if (pid == 0)
        spin_echo(sp);
    if (pid < 0) {
        err = -errno;
        munmap(sp, sizeof *sp);
        return bench_fail("fork", err, NULL);
    }
    sp->child = pid;
    err = bench_latency(s, bench_budget(BUDGET_FAST), 0, spin_round_trip, sp);
    atomic_store_explicit(&sp->ping, SPIN_STOP, memory_order_release);
    waitpid(sp->child, NULL, 0);
    munmap(sp, sizeof *sp);
    return err < 0 ? bench_fail("shm spin ping-pong", err, NULL) : 0;
}

int bench_floor_shm(void)
{
    struct series s = {0};
    int err = spin_measure(&s, false);

    if (err < 0) {
        series_free(&s);
        return err;
    }
    return bench_row_add("shm", "shared-memory spin ping-pong", "us", ROW_COST,
                         ROW_P99 | ROW_SAMPLES, &s, "both sides spin on atomics, fork()ed peer");
}

/*
 * One switch from a process to another on one CPU: half a round trip of
 * the spinning hand-over with both processes pinned to the CPU we run on,
 * each yielding it as it waits.  One caller on a pool of 2 with 2 CPUs
 * pays one per call at the least: the caller and the two workers cannot
 * all have a CPU, and round robin wants the worker that is not running.
 */
int bench_floor_switch(void)
{
    cpu_set_t all, one;
    struct series s = {0};
    int cpu = sched_getcpu(), err;

    if (cpu < 0)
        return bench_fail("sched_getcpu", -errno, NULL);
    if (sched_getaffinity(0, sizeof all, &all) < 0)
        return bench_fail("sched_getaffinity", -errno, NULL);
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) < 0)
        return bench_fail("sched_setaffinity", -errno, NULL);
    err = spin_measure(&s, true); /* the child inherits the one CPU */
    /* The rest of the run must not stay on one CPU. */
    if (sched_setaffinity(0, sizeof all, &all) < 0) {
        series_free(&s);
        return bench_fail("sched_setaffinity back", -errno, NULL);
    }
    if (err < 0) {
        series_free(&s);
        return err;
    }
    for (size_t i = 0; i < s.n; i++)
        s.v[i] /= 2;
    return bench_row_add("switch", "a switch between processes on one CPU", "us", ROW_COST, ROW_P99,
                         &s, "half a yielding ping-pong, both pinned to one CPU");
}

/* ---- one poll() ---- */

static int poll_once(void *arg)
{
    struct pollfd pfd = {.fd = *(int *)arg, .events = POLLIN};

    return poll(&pfd, 1, 0) == 1 ? 0 : -EIO;
}

/*
 * poll() of an fd that is readable already, as an event loop polls the
 * pool's fd: the least an event loop's path adds to a call.
 */
int bench_floor_poll(void)
{
    struct series s = {0};
    int fd = eventfd(1, EFD_CLOEXEC), err;

    if (fd < 0)
        return bench_fail("eventfd", -errno, NULL);
    err = bench_latency(&s, bench_budget(BUDGET_FAST), 0, poll_once, &fd);
    close(fd);
    if (err < 0) {
        series_free(&s);
        return bench_fail("poll", err, NULL);
    }
    return bench_row_add("poll", "poll() of a readable eventfd", "us", ROW_COST, ROW_P99, &s,
                         "one system call");
}
