/*
 * callcost: the host's instructions per call, counted by callgrind.
 *
 *   callcost MODE WORKERS N [PYPATH]
 *
 * MODE sync: N calls of bench.calls.noop one at a time (pyproc_func).
 * MODE tput: N windows of 256 tracked calls, each window sent and then
 * waited for and freed, as bench/calls.c's pipelined rows do.
 *
 * Only the measured loop is counted: run it under
 *   valgrind --tool=callgrind --instr-atstart=no --trace-children=no
 * with tests/valgrind/pidfd_shim.c preloaded (Valgrind 3.19 knows no
 * pidfd call), as run.sh beside it does; the workers run natively.  Outside valgrind
 * the client requests do nothing, and it prints ns per call.  Build:
 *   cc -std=c11 -D_GNU_SOURCE -O2 -g -Iinclude -o build/cg/callcost \
 *      bench/callgrind/callcost.c build/lib/libpyproc.a -lpthread -ldl
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <valgrind/callgrind.h>

#include "pyproc.h"

#define WINDOW 256

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int sync_calls(pyproc_pool *p, long n)
{
    for (long i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        int err = pyproc_func(p, "bench.calls.noop", &m, NULL);
        if (err < 0) {
            fprintf(stderr, "call: %s %s\n", pyproc_strerror(err), m ? pyproc_msg_error(m) : "");
            return err;
        }
        pyproc_msg_free(m);
    }
    return 0;
}

static int window(pyproc_pool *p)
{
    pyproc_call *calls[WINDOW];
    int n, err = 0;

    for (n = 0; n < WINDOW; n++)
        if ((err = pyproc_track_func(p, NULL, &calls[n], "bench.calls.noop", NULL)) < 0)
            break;
    for (int i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        int rc = pyproc_wait(calls[i], &m, -1);
        if (rc < 0 && !err)
            err = rc;
        pyproc_msg_free(m);
        pyproc_call_free(calls[i]);
    }
    return err;
}

static int windows(pyproc_pool *p, long n)
{
    int err = 0;

    for (long i = 0; i < n && !err; i++)
        err = window(p);
    return err;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: callcost sync|tput WORKERS N [PYPATH]\n");
        return 2;
    }
    int tput = !strcmp(argv[1], "tput");
    long n = atol(argv[3]);
    pyproc_opts opts = {.workers = atoi(argv[2]), .python_path = argc > 4 ? argv[4] : "bench/py"};
    pyproc_msg *m = NULL;
    pyproc_pool *p;
    int err = pyproc_pool_new(&p, "callcost", &opts);

    if (err < 0) {
        fprintf(stderr, "pool: %s\n", pyproc_strerror(err));
        return 1;
    }
    if ((err = pyproc_add_sub_err(p, "bench", "benchmods", 0, &m)) < 0) {
        fprintf(stderr, "add_sub: %s\n", m ? pyproc_msg_error(m) : pyproc_strerror(err));
        return 1;
    }
    pyproc_msg_free(m);
    /* Warm: every buffer, table and free list at its steady size. */
    err = tput ? windows(p, 4) : sync_calls(p, 2000);
    int64_t t0 = now_ns();
    CALLGRIND_ZERO_STATS;
    CALLGRIND_START_INSTRUMENTATION;
    if (!err)
        err = tput ? windows(p, n) : sync_calls(p, n);
    CALLGRIND_STOP_INSTRUMENTATION;
    CALLGRIND_DUMP_STATS_AT("measured");
    int64_t t1 = now_ns();
    long calls = tput ? n * WINDOW : n;
    if (!err)
        printf("%s %s workers=%d calls=%ld ns/call=%.1f\n", argv[0], argv[1], opts.workers, calls,
               (double)(t1 - t0) / (double)calls);
    pyproc_pool_free(p);
    return err < 0 ? 1 : 0;
}
