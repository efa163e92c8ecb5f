/*
 * demo: pyproc's tour, the Python "proc" usage as a C program.
 *
 * It starts a pool named "Workers" of 3 fresh worker processes, loads the
 * Python package examples/mods/act into every one of them (running each
 * module's __init__(hub)), and then calls functions by reference:
 * a ping, a call with positional and keyword arguments, an async function,
 * and one that raises, whose error carries the Python traceback.
 *
 * Run it with `make demo` (from the examples/ folder, so that
 * python_path "mods" finds the package).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyproc.h"

static void die(const char *what, int err, pyproc_msg *m)
{
    fprintf(stderr, "demo: %s: %s\n", what, pyproc_strerror(err));
    if (m && pyproc_msg_error(m))
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    exit(1);
}

int main(void)
{
    pyproc_opts opts = {.workers = 3, .python_path = "mods"};
    pyproc_pool *pool;
    pyproc_msg *m = NULL;
    const char *s;
    double d;
    int err, n, index, pid;

    err = pyproc_pool_new(&pool, "Workers", &opts);
    if (err < 0)
        die("pyproc_pool_new", err, NULL);
    printf("pool %s: %d workers (pyproc %s)\n", pyproc_pool_name(pool), pyproc_workers(pool),
           pyproc_version());

    err = pyproc_add_sub_err(pool, "act", "act", PYPROC_SUB_INIT, &m);
    if (err < 0)
        die("pyproc_add_sub", err, m);
    printf("sub act loaded into every worker\n");

    /* act.test.ping returns {}: an empty map. */
    err = pyproc_func(pool, "act.test.ping", &m, NULL);
    if (err < 0)
        die("act.test.ping", err, m);
    printf("act.test.ping() -> map of %d items\n", pyproc_msg_len(m));
    pyproc_msg_free(m);

    /* Round robin: three calls reach the three workers. */
    for (int i = 0; i < 3; i++) {
        err = pyproc_func(pool, "act.test.whoami", &m, NULL);
        if (err < 0)
            die("act.test.whoami", err, m);
        if (pyproc_msg_read(m, "[iii]", &index, &pid, &n) < 0)
            die("reading whoami", -EBADMSG, NULL);
        printf("act.test.whoami() -> worker %d, pid %d\n", index, pid);
        pyproc_msg_free(m);
    }

    /* Positional and keyword arguments: scale(2, 3, factor=1.5). */
    err = pyproc_func(pool, "act.test.scale", &m, "ii|sd", 2, 3, "factor", 1.5);
    if (err < 0 || pyproc_msg_read(m, "d", &d) < 0)
        die("act.test.scale", err, m);
    printf("act.test.scale(2, 3, factor=1.5) -> %g\n", d);
    pyproc_msg_free(m);

    /* An async function runs on the worker's asyncio loop. */
    err = pyproc_func(pool, "act.test.later", &m, "i|sd", 21, "delay", 0.05);
    if (err < 0 || pyproc_msg_read(m, "i", &n) < 0)
        die("act.test.later", err, m);
    printf("await act.test.later(21, delay=0.05) -> %d\n", n);
    pyproc_msg_free(m);

    /* An exception comes back as an error with its traceback. */
    err = pyproc_func(pool, "act.test.divide", &m, "ii", 1, 0);
    printf("act.test.divide(1, 0) -> %s\n", pyproc_strerror(err));
    if (err == PYPROC_EREMOTE)
        printf("%s", pyproc_msg_error(m));
    pyproc_msg_free(m);

    /* So does a reference that names nothing. */
    err = pyproc_func(pool, "act.test.nothing", &m, NULL);
    printf("act.test.nothing() -> %s\n", pyproc_strerror(err));
    if (m && (s = pyproc_msg_error(m)))
        printf("%.*s\n", (int)strcspn(s, "\n"), s);
    pyproc_msg_free(m);

    pyproc_pool_free(pool);
    printf("pool freed\n");
    return 0;
}
