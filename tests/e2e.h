/*
 * Shared set-up for end-to-end tests: pools of real workers from the build
 * tree with the test package tests/py/e2e mounted as sub "t".
 * Tests run from the repository root (make check does).
 */
#ifndef PYPROC_TESTS_E2E_H
#define PYPROC_TESTS_E2E_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#ifdef PYPROC_E2E_MPI
/*
 * A test program built with PYPROC_E2E_MPI runs under mpirun as the host
 * rank (tests/mpi.sh), its e2e pools made by pyproc_pool_new_mpi(): MPI
 * starts before main() and ends, with every agent, at exit.
 */
#include "pyproc-mpi.h"

static void e2e_mpi_end(void)
{
    int err = pyproc_mpi_shutdown(MPI_COMM_WORLD);
    if (err < 0)
        fprintf(stderr, "pyproc_mpi_shutdown: %s\n", strerror(-err));
    MPI_Finalize();
}

__attribute__((constructor)) static void e2e_mpi_start(void)
{
    const char *single = getenv("PYPROC_E2E_MPI_SINGLE"); /* to test the refusal */
    int level;
    MPI_Init_thread(NULL, NULL, single ? MPI_THREAD_SINGLE : MPI_THREAD_MULTIPLE, &level);
    atexit(e2e_mpi_end);
}
#else
#include "pyproc.h"
#endif

/* Whether the list of strings that ref (on worker ind) returns holds s:
 * what the test module recorded as seen. */
static inline bool e2e_saw(pyproc_pool *p, int ind, const char *ref, const char *s)
{
    pyproc_msg *m = NULL, *item;
    bool found = false;

    assert_int_equal(pyproc_ind_func(p, ind, ref, &m, NULL), 0);
    for (int i = 0; i < pyproc_msg_len(m); i++) {
        const char *got;
        pyproc_msg_at(m, (size_t)i, &item, NULL);
        if (pyproc_msg_read(item, "s", &got) == 0 && strcmp(got, s) == 0)
            found = true;
        pyproc_msg_free(item);
    }
    pyproc_msg_free(m);
    return found;
}

/* Call ref and read its int result. */
static inline int64_t e2e_int(pyproc_pool *p, const char *ref)
{
    pyproc_msg *m = NULL;
    int64_t v = 0;
    int rc = pyproc_func(p, ref, &m, NULL);
    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    return v;
}

/* As e2e_pool(), with the caller's options (python_path is set here). */
static inline pyproc_pool *e2e_pool_opts(pyproc_opts opts)
{
    pyproc_pool *p = NULL;
    pyproc_msg *err = NULL;

    opts.python_path = "tests/py";
#ifdef PYPROC_E2E_MPI /* the same tests against a pool over MPI (tests/mpi.sh) */
    assert_int_equal(pyproc_pool_new_mpi(&p, "test", &opts, MPI_COMM_WORLD), 0);
#else
    assert_int_equal(pyproc_pool_new(&p, "test", &opts), 0);
#endif
    int rc = pyproc_add_sub_err(p, "t", "e2e", PYPROC_SUB_INIT, &err);
    if (rc < 0 && err)
        fprintf(stderr, "%s\n", pyproc_msg_error(err));
    assert_int_equal(rc, 0);
    return p;
}

/* A pool of `workers` with the test package mounted as "t". */
static inline pyproc_pool *e2e_pool(int workers)
{
    return e2e_pool_opts((pyproc_opts){.workers = workers});
}

/* The pid of worker ind, or -1 when it does not answer. */
static inline int e2e_pid_of(pyproc_pool *p, int ind)
{
    pyproc_msg *m = NULL;
    int pid = -1;
    if (pyproc_ind_func(p, ind, "t.basic.pid", &m, NULL) == 0)
        pyproc_msg_read(m, "i", &pid);
    pyproc_msg_free(m);
    return pid;
}

static inline double e2e_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until worker ind answers from a process other than old_pid. */
static inline int e2e_wait_respawned(pyproc_pool *p, int ind, int old_pid)
{
    for (int i = 0; i < 500; i++) {
        int pid = e2e_pid_of(p, ind);
        if (pid > 0 && pid != old_pid)
            return pid;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("worker %d did not come back", ind);
    return -1;
}

#endif
