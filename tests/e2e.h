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

#include "pyproc.h"

static inline pyproc_pool *e2e_pool(int workers)
{
    pyproc_opts opts = {.workers = workers, .python_path = "tests/py"};
    pyproc_pool *p = NULL;
    pyproc_msg *err = NULL;

    assert_int_equal(pyproc_pool_new(&p, "test", &opts), 0);
    int rc = pyproc_add_sub_err(p, "t", "e2e", PYPROC_SUB_INIT, &err);
    if (rc < 0 && err)
        fprintf(stderr, "%s\n", pyproc_msg_error(err));
    assert_int_equal(rc, 0);
    return p;
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

static inline double e2e_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
