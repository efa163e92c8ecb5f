/*
 * pyproc-bench-mpi: the MPI rows of the bench (bench/mpi.sh runs it).
 *
 *   mpirun -n 2 pyproc-bench-mpi pingpong
 *       the raw round trip of a 1-byte MPI message between two ranks
 *   mpirun -n 1 pyproc-bench-mpi rtt : -n 1 pyproc-agent
 *       a sync no-op call's round trip through an MPI pool of one worker,
 *       and through a local pool of one worker in the same process
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

int main(int argc, char **argv)
{
    int level;

    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &level);
    if (argc > 1 && strcmp(argv[1], "pingpong") == 0)
        pingpong();
    else if (argc > 1 && strcmp(argv[1], "rtt") == 0)
        rtt();
    MPI_Finalize();
    return 0;
}
