/*
 * track: keep talking to the worker that holds your state.
 *
 * pyproc_track_func() starts a call on the next worker and says which one
 * took it; pyproc_ind_func() sends later calls to that same worker, where
 * the Python state the first call left lives.  Run from examples/:
 * ../build/examples/track
 */
#include <stdio.h>

#include "pyproc.h"

int main(void)
{
    pyproc_opts opts = {.workers = 3, .python_path = "mods"};
    pyproc_pool *pool;
    pyproc_call *call;
    pyproc_msg *m;
    int rc, ind, worker, n;

    if ((rc = pyproc_pool_new(&pool, "track", &opts)) < 0 ||
        (rc = pyproc_add_sub(pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "track: %s\n", pyproc_strerror(rc));
        return 1;
    }
    /* Returns at once; the call runs while we do other things. */
    pyproc_track_func(pool, &ind, &call, "act.test.count", NULL);
    printf("the call went to worker %d\n", ind);
    if (pyproc_wait(call, &m, -1) == 0) {
        pyproc_msg_read(m, "[ii]", &worker, &n);
        printf("worker %d has counted %d\n", worker, n);
        pyproc_msg_free(m);
    }
    pyproc_call_free(call);

    for (int i = 0; i < 3; i++) {
        pyproc_ind_func(pool, ind, "act.test.count", &m, NULL);
        pyproc_msg_read(m, "[ii]", &worker, &n);
        printf("worker %d has counted %d\n", worker, n);
        pyproc_msg_free(m);
    }
    pyproc_pool_free(pool);
    return 0;
}
