/*
 * CPU-bound Python: the same pure-Python loop (bench/py/benchmods/cpu.py)
 * in a worker, timed inside the worker and as a round trip, and under
 * /usr/bin/python3 (bench/cpu_peer.py).  The two take turns, sample by
 * sample, and which goes first alternates: a loop of 30 ms is at the
 * mercy of what else the machine runs, and turns give both sides the same
 * load, so the ratio says what running in a worker costs Python code.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"

#define PYTHON "/usr/bin/python3"

extern char **environ;

/* Calls of spin() on each side after one untimed call, by level. */
static const size_t samples[] = {2, 10, 30};

/* /usr/bin/python3 running bench/cpu_peer.py, a line in, a time out. */
struct peer {
    pid_t pid;
    FILE *in, *out; /* its stdin, its stdout */
};

static int peer_start(struct peer *pe)
{
    char path[PATH_MAX + 32];
    char *argv[] = {PYTHON, path, bench.py_path, NULL};
    posix_spawn_file_actions_t fa;
    int to[2], from[2], err;

    snprintf(path, sizeof path, "%s/bench/cpu_peer.py", bench.root);
    if (pipe2(to, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(from, O_CLOEXEC) < 0) {
        err = -errno;
        close(to[0]);
        close(to[1]);
        return err;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, from[1], STDOUT_FILENO);
    err = -posix_spawn(&pe->pid, PYTHON, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(to[0]);
    close(from[1]);
    if (!err && (!(pe->in = fdopen(to[1], "w")) || !(pe->out = fdopen(from[0], "r"))))
        err = -ENOMEM;
    if (!err)
        return 0;
    /* Closing its stdin (or never having started it) ends it. */
    if (pe->in)
        fclose(pe->in);
    else
        close(to[1]);
    close(from[0]);
    if (pe->pid > 0)
        waitpid(pe->pid, NULL, 0);
    return err;
}

/* One timed spin() under python3, in ms. */
static int peer_spin(struct peer *pe, struct series *s)
{
    double ms;

    if (fputs("\n", pe->in) == EOF || fflush(pe->in) == EOF)
        return -EPIPE;
    if (fscanf(pe->out, "%lf", &ms) != 1)
        return -EBADMSG;
    return series_push(s, ms);
}

/* Close its stdin (it exits at EOF) and reap it. */
static int peer_stop(struct peer *pe)
{
    int status;

    fclose(pe->in);
    fclose(pe->out);
    while (waitpid(pe->pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* One timed spin() in the worker: inside (ms) and round trip (ms). */
static int worker_spin(pyproc_pool *p, struct series *inside, struct series *rtt)
{
    pyproc_msg *m = NULL;
    double secs = 0;
    int64_t t0 = bench_now_ns();
    int err = pyproc_func(p, "bench.cpu.spin", &m, NULL);
    int64_t t1 = bench_now_ns();

    if (!err)
        err = pyproc_msg_read(m, "d", &secs);
    if (err < 0)
        bench_fail("bench.cpu.spin", err, m);
    else if (inside &&
             (series_push(inside, secs * 1e3) < 0 || series_push(rtt, (double)(t1 - t0) / 1e6) < 0))
        err = -ENOMEM;
    pyproc_msg_free(m);
    return err;
}

static int cpu_rows(pyproc_pool *p, struct peer *pe)
{
    struct series inside = {0}, rtt = {0}, py = {0};
    int err = worker_spin(p, NULL, NULL); /* untimed, as in the peer */

    for (size_t i = 0; !err && i < samples[bench.level]; i++) {
        if (i % 2 == 0 && !(err = worker_spin(p, &inside, &rtt)))
            err = peer_spin(pe, &py);
        else if (i % 2 == 1 && !(err = peer_spin(pe, &py)))
            err = worker_spin(p, &inside, &rtt);
    }
    if (err < 0 && err != -ENOMEM)
        fprintf(stderr, "pyproc-bench: cpu: %s\n", pyproc_strerror(err));
    if (!err)
        err = bench_row_add("cpu", "pure-Python loop in a worker, timed inside", "ms", ROW_COST,
                            ROW_P99, &inside,
                            "time.perf_counter() around the loop; pool of 1 worker");
    if (!err)
        err = bench_row_add("cpu-rtt", "pure-Python loop in a worker, round trip", "ms", ROW_COST,
                            ROW_P99, &rtt, "pyproc_func() of the same loop");
    if (!err)
        err = bench_row_add("py-cpu", "pure-Python loop under " PYTHON, "ms", ROW_COST, ROW_P99,
                            &py, "benchmods.cpu.spin(), timed as in the worker, in turns with it");
    series_free(&inside);
    series_free(&rtt);
    series_free(&py);
    return err;
}

int bench_cpu(void)
{
    pyproc_pool *p = NULL;
    struct peer pe = {0};
    int err = bench_pool(&p, 1);

    if (err < 0)
        return err;
    if ((err = peer_start(&pe)) < 0) {
        pyproc_pool_free(p);
        return bench_fail(PYTHON " bench/cpu_peer.py", err, NULL);
    }
    err = cpu_rows(p, &pe);
    int stopped = peer_stop(&pe);
    pyproc_pool_free(p);
    return err < 0 ? err : stopped;
}
