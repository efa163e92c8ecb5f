/*
 * pyproc-bench-mpi: the MPI rows of the bench (bench/mpi.sh runs it).
 *
 *   mpirun -n 2 pyproc-bench-mpi pingpong
 *       the raw round trip of a 1-byte MPI message between two ranks
 *   mpirun -n 1 pyproc-bench-mpi rtt : -n 1 pyproc-agent
 *       a sync no-op call's round trip through an MPI pool of one worker,
 *       and through a local pool of one worker in the same process
 *   mpirun -n 1 pyproc-bench-mpi throughput : -n 2 pyproc-agent
 *       no-op calls per second with 4000 in flight, and a generator's
 *       items per second, through two agents with a worker each
 *
 * Each prints "NAME MEDIAN_US" lines: the median of ROUNDS rounds, each
 * the mean of N round trips, after a warm-up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pyproc-mpi.h"

enum { ROUNDS = 15, N = 400 };

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v)
{
    qsort(v, ROUNDS, sizeof *v, cmp);
    return v[ROUNDS / 2];
}

static void pingpong(void)
{
    int me;
    char c = 0;
    double r[ROUNDS];

    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    for (int k = -1; k < ROUNDS; k++) {
        double t0 = now_us();
        for (int i = 0; i < N; i++) {
            if (me == 0) {
                MPI_Send(&c, 1, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
                MPI_Recv(&c, 1, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(&c, 1, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(&c, 1, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
            }
        }
        if (k >= 0)
            r[k] = (now_us() - t0) / N;
    }
    if (me == 0)
        printf("mpi-pingpong-tcp %.1f\n", median(r));
}

static double pool_rtt(pyproc_pool *p)
{
    double r[ROUNDS];

    for (int k = -1; k < ROUNDS; k++) {
        double t0 = now_us();
        for (int i = 0; i < N; i++) {
            pyproc_msg *m = NULL;
            if (pyproc_func(p, "b.ping", &m, NULL) != 0) {
                fprintf(stderr, "pyproc-bench-mpi: call failed: %s\n",
                        m ? pyproc_msg_error(m) : "");
                exit(1);
            }
            pyproc_msg_free(m);
        }
        if (k >= 0)
            r[k] = (now_us() - t0) / N;
    }
    return median(r);
}

static void rtt(void)
{
    pyproc_opts o = {.workers = 1, .python_path = "tests/py"};
    pyproc_pool *remote = NULL, *local = NULL;

    if (pyproc_pool_new_mpi(&remote, "bench", &o, MPI_COMM_WORLD) != 0 ||
        pyproc_pool_new(&local, "bench", &o) != 0 ||
        pyproc_add_sub(remote, "b", "e2e.calls", 0) != 0 ||
        pyproc_add_sub(local, "b", "e2e.calls", 0) != 0) {
        fprintf(stderr, "pyproc-bench-mpi: no pools\n");
        exit(1);
    }
    printf("mpi-sync-rtt-tcp %.1f\n", pool_rtt(remote));
    printf("local-sync-rtt %.1f\n", pool_rtt(local));
    pyproc_pool_free(remote);
    pyproc_pool_free(local);
    pyproc_mpi_shutdown(MPI_COMM_WORLD);
}

/* Calls in flight at once, IN_FLIGHT at a time: calls per second. */
static double pipelined(pyproc_pool *p)
{
    enum { IN_FLIGHT = 4000 };
    static pyproc_call *c[IN_FLIGHT];
    double r[ROUNDS];

    for (int k = -1; k < ROUNDS; k++) {
        double t0 = now_us();
        for (int i = 0; i < IN_FLIGHT; i++)
            if (pyproc_track_func(p, NULL, &c[i], "b.ping", NULL) != 0)
                exit(1);
        for (int i = 0; i < IN_FLIGHT; i++) {
            pyproc_msg *m = NULL;
            if (pyproc_wait(c[i], &m, -1) != 0)
                exit(1);
            pyproc_msg_free(m);
            pyproc_call_free(c[i]);
        }
        if (k >= 0)
            r[k] = IN_FLIGHT / ((now_us() - t0) / 1e6);
    }
    return median(r);
}

/* One generator's items per second, read as they come. */
static double gen_items(pyproc_pool *p)
{
    enum { ITEMS = 200000 };
    double r[ROUNDS];

    for (int k = -1; k < ROUNDS; k++) {
        pyproc_call *s = NULL;
        pyproc_msg *item = NULL;
        long n = 0;
        double t0 = now_us();
        if (pyproc_gen(p, "m.items", &s, "i", ITEMS) != 0)
            exit(1);
        while (pyproc_next(s, &item) == 1) {
            pyproc_msg_free(item);
            item = NULL;
            n++;
        }
        pyproc_msg_free(item);
        pyproc_call_free(s);
        if (n != ITEMS)
            exit(1);
        if (k >= 0)
            r[k] = ITEMS / ((now_us() - t0) / 1e6);
    }
    return median(r);
}

/* Through two agents, a worker on each. */
static void throughput(void)
{
    pyproc_opts o = {.workers = 2, .python_path = "tests/py"};
    pyproc_pool *p = NULL;

    if (pyproc_pool_new_mpi(&p, "bench", &o, MPI_COMM_WORLD) != 0 ||
        pyproc_add_sub(p, "b", "e2e.calls", 0) != 0 || pyproc_add_sub(p, "m", "e2e.mpi", 0) != 0) {
        fprintf(stderr, "pyproc-bench-mpi: no pool\n");
        exit(1);
    }
    printf("mpi-pipelined-calls-per-s %.0f\n", pipelined(p));
    printf("mpi-gen-items-per-s %.0f\n", gen_items(p));
    pyproc_pool_free(p);
    pyproc_mpi_shutdown(MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
    int level;

    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &level);
    if (argc > 1 && strcmp(argv[1], "pingpong") == 0)
        pingpong();
    else if (argc > 1 && strcmp(argv[1], "rtt") == 0)
        rtt();
    else if (argc > 1 && strcmp(argv[1], "throughput") == 0)
        throughput();
    MPI_Finalize();
    return 0;
}
