/*
 * soak: many calls from 4 host threads against 4 workers while a killer
 * thread SIGKILLs a random live worker every 500 ms.
 *
 * Checks that every call ends exactly once, with its own result or
 * PYPROC_EWORKER; that nothing hangs (every wait has a deadline); and that
 * the host's resident memory at the end is within 5% of what it was after
 * the first tenth of the calls.  Prints those figures; exits non-zero on
 * any failure.  Usage: soak [CALLS]  (default 1,000,000; run from the
 * repository root, as `make soak` does).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pyproc.h"

enum { THREADS = 4, WORKERS = 4, WINDOW = 32, WAIT_MS = 30000 };

static pyproc_pool *pool;
static long calls_per_thread;
static _Atomic long done_calls, ok_calls, dead_calls, bad_calls, kills;
static _Atomic bool stop_killer;
static long rss_tenth_kb;
static _Atomic bool tenth_taken;

static long rss_kb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One call ended: check it is its own answer, and count it once. */
static void account(int rc, pyproc_msg *m, long want, unsigned char *ended, long slot)
{
    int64_t got = -1;

    if (ended[slot]++)
        atomic_fetch_add(&bad_calls, 1); /* ended twice */
    if (rc == 0 && pyproc_msg_read(m, "I", &got) == 0 && got == want)
        atomic_fetch_add(&ok_calls, 1);
    else if (rc == PYPROC_EWORKER)
        atomic_fetch_add(&dead_calls, 1);
    else {
        if (atomic_fetch_add(&bad_calls, 1) < 5)
            fprintf(stderr, "soak: call %ld ended with %s: %s\n", want, pyproc_strerror(rc),
                    m && pyproc_msg_error(m) ? pyproc_msg_error(m) : "");
    }
    pyproc_msg_free(m);
    long n = atomic_fetch_add(&done_calls, 1) + 1;
    if (n >= calls_per_thread * THREADS / 10 && !atomic_exchange(&tenth_taken, true))
        rss_tenth_kb = rss_kb();
}

/* Pipelined: up to WINDOW tracked calls in flight, waited in order. */
static void *caller(void *arg)
{
    long base = (long)(intptr_t)arg * calls_per_thread;
    unsigned char *ended = calloc((size_t)calls_per_thread, 1);
    pyproc_call *inflight[WINDOW];
    long head = 0, tail = 0;

    while (tail < calls_per_thread) {
        while (head < calls_per_thread && head - tail < WINDOW) {
            pyproc_call *c;
            int rc = pyproc_track_func(pool, NULL, &c, "t.basic.echo_one", "I",
                                       (int64_t)(base + head));
            if (rc < 0) {
                fprintf(stderr, "soak: a call could not start: %s\n", pyproc_strerror(rc));
                atomic_fetch_add(&bad_calls, 1);
                c = NULL;
            }
            inflight[head % WINDOW] = c;
            head++;
        }
        pyproc_call *c = inflight[tail % WINDOW];
        pyproc_msg *m = NULL;
        int rc = c ? pyproc_wait(c, &m, WAIT_MS) : -EINVAL;
        if (rc == -ETIMEDOUT) {
            fprintf(stderr, "soak: call %ld hangs\n", base + tail);
            atomic_fetch_add(&bad_calls, 1);
        }
        account(rc, m, base + tail, ended, tail);
        pyproc_call_free(c);
        tail++;
    }
    for (long i = 0; i < calls_per_thread; i++)
        if (ended[i] != 1)
            atomic_fetch_add(&bad_calls, 1);
    free(ended);
    return NULL;
}

static void *killer(void *arg)
{
    (void)arg;
    srand(12345);
    while (!atomic_load(&stop_killer)) {
        usleep(500000);
        pyproc_msg *m = NULL;
        int pid = 0, ind = rand() % WORKERS;
        if (pyproc_ind_func(pool, ind, "t.basic.pid", &m, NULL) == 0 &&
            pyproc_msg_read(m, "i", &pid) == 0 && pid > 0 && !atomic_load(&stop_killer)) {
            kill(pid, SIGKILL);
            atomic_fetch_add(&kills, 1);
        }
        pyproc_msg_free(m);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pyproc_opts opts = {.workers = WORKERS, .python_path = "tests/py"};
    long total = argc > 1 ? atol(argv[1]) : 1000000;
    pthread_t threads[THREADS], kt;
    int rc;

    calls_per_thread = total / THREADS;
    if ((rc = pyproc_pool_new(&pool, "soak", &opts)) < 0 ||
        (rc = pyproc_add_sub(pool, "t", "e2e", 0)) < 0) {
        fprintf(stderr, "soak: %s\n", pyproc_strerror(rc));
        return 1;
    }
    double t0 = now();
    pthread_create(&kt, NULL, killer, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, caller, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&stop_killer, true);
    pthread_join(kt, NULL);
    double took = now() - t0;
    long rss_end = rss_kb();
    double growth = rss_tenth_kb ? 100.0 * (double)(rss_end - rss_tenth_kb) / rss_tenth_kb : 0;
    long n = calls_per_thread * THREADS;

    printf("soak: %ld calls from %d threads to %d workers in %.1f s (%.0f calls/s)\n", n, THREADS,
           WORKERS, took, (double)n / took);
    printf("soak: %ld answered, %ld ended with PYPROC_EWORKER, %ld wrong; %ld workers killed\n",
           atomic_load(&ok_calls), atomic_load(&dead_calls), atomic_load(&bad_calls),
           atomic_load(&kills));
    printf("soak: host RSS %ld KiB after a tenth, %ld KiB at the end (%+.1f%%)\n", rss_tenth_kb,
           rss_end, growth);
    pyproc_pool_free(pool);
    bool ok = atomic_load(&bad_calls) == 0 && atomic_load(&done_calls) == n &&
              atomic_load(&ok_calls) + atomic_load(&dead_calls) == n && growth <= 5.0 &&
              atomic_load(&kills) > 0;
    printf("soak: %s\n", ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
}
