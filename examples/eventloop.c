/*
 * eventloop: drive a pool from your own poll() loop.
 *
 * pyproc_func_async() starts a call and returns at once; when it ends, the
 * pool's fd (pyproc_pool_fd) becomes readable and pyproc_dispatch() runs
 * the completion callback on this thread.  Here the loop also serves a
 * timer (a timerfd) that starts a new call every 20 ms until 10 have
 * answered.
 *
 * Any handle can end the same way: pyproc_call_on_done() on a tracked
 * call.  Two slow ones show how a server drops work it no longer wants:
 * one gets a deadline (pyproc_call_deadline()), the other is cancelled
 * (pyproc_cancel(), as when a client goes away); both are stopped in the
 * worker, and their callbacks say so.
 * Run from examples/: ../build/examples/eventloop
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "pyproc.h"

static int answered;

static void done(pyproc_pool *pool, int result, pyproc_msg *ret, void *data)
{
    double v = 0;

    (void)pool;
    if (result == 0)
        pyproc_msg_read(ret, "d", &v);
    printf("call %ld: %s -> %g\n", (long)(intptr_t)data, pyproc_strerror(result), v);
    pyproc_msg_free(ret);
    answered++;
}

static void slow_done(pyproc_pool *pool, int result, pyproc_msg *ret, void *data)
{
    (void)pool;
    printf("%s: %s\n", (const char *)data, pyproc_strerror(result));
    pyproc_msg_free(ret);
    answered++;
}

int main(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "mods"};
    struct itimerspec every = {{0, 20000000}, {0, 20000000}};
    pyproc_pool *pool;
    long started = 0;
    int rc, tfd;

    if ((rc = pyproc_pool_new(&pool, "loop", &opts)) < 0 ||
        (rc = pyproc_add_sub(pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "eventloop: %s\n", pyproc_strerror(rc));
        return 1;
    }
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    timerfd_settime(tfd, 0, &every, NULL);
    struct pollfd fds[2] = {{.fd = pyproc_pool_fd(pool), .events = POLLIN},
                            {.fd = tfd, .events = POLLIN}};
    /* act.test.later(x, delay) sleeps for delay seconds: far too long. */
    pyproc_call *late, *unwanted;
    if ((rc = pyproc_track_func(pool, NULL, &late, "act.test.later", "i|sd", 1, "delay", 60.0)) <
            0 ||
        (rc = pyproc_track_func(pool, NULL, &unwanted, "act.test.later", "i|sd", 2, "delay",
                                60.0)) < 0) {
        fprintf(stderr, "eventloop: %s\n", pyproc_strerror(rc));
        return 1;
    }
    pyproc_call_on_done(late, slow_done, "slow call with a 100 ms deadline");
    pyproc_call_deadline(late, 100);
    pyproc_call_on_done(unwanted, slow_done, "slow call cancelled");
    pyproc_cancel(unwanted);
    while (answered < 12) {
        if (poll(fds, 2, -1) < 0)
            break;
        if (fds[0].revents & POLLIN)
            pyproc_dispatch(pool);
        if (fds[1].revents & POLLIN) {
            uint64_t ticks;
            if (read(tfd, &ticks, sizeof ticks) < 0)
                break;
            if (started < 10) {
                pyproc_func_async(pool, "act.test.scale", done, (void *)(intptr_t)started, "ii|sd",
                                  (int)started, 1, "factor", 0.5);
                started++;
            }
        }
    }
    close(tfd);
    pyproc_call_free(late);
    pyproc_call_free(unwanted);
    pyproc_pool_free(pool);
    return 0;
}
