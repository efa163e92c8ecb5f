/*
 * End to end: workers that die.  Their calls end promptly with
 * PYPROC_EWORKER naming the worker and how it died; other workers are
 * untouched; the dead worker comes back at the same index with the pool's
 * history replayed; a worker that keeps dying at start-up is given up on
 * with back-off; workers die with their host.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

static char marker[4096];

static pyproc_pool *crash_pool(int workers)
{
    pyproc_pool *p = e2e_pool(workers);
    assert_int_equal(pyproc_set_attr(p, "t.FLAVOUR", "s", "mint"), 0);
    return p;
}

/* Wait until worker ind answers from a process other than old_pid. */
static int wait_respawned(pyproc_pool *p, int ind, int old_pid)
{
    for (int i = 0; i < 500; i++) {
        int pid = e2e_pid_of(p, ind);
        if (pid > 0 && pid != old_pid)
            return pid;
        usleep(10000);
    }
    fail_msg("worker %d did not come back", ind);
    return -1;
}

static void expect_history(pyproc_pool *p, int ind)
{
    pyproc_msg *m;
    const char *s;
    int n;

    assert_int_equal(pyproc_ind_func(p, ind, "t.basic.inits", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &n), 0);
    assert_int_equal(n, 1);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_ind_func(p, ind, "t.proc.get_attr", &m, "s", "t.FLAVOUR"), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "mint");
    pyproc_msg_free(m);
}

/* Kill worker 1 by `how` while it and worker 0 have calls in flight. */
static void death_fails_only_its_calls(const char *ref, const char *fmt, int arg,
                                       const char *expect)
{
    pyproc_pool *p = crash_pool(2);
    pyproc_call *slow[8], *other[4], *killer;
    pyproc_msg *m = NULL;
    int old = e2e_pid_of(p, 1);

    for (int i = 0; i < 8; i++)
        assert_int_equal(pyproc_ind_call(p, 1, &slow[i], "t.crash.nap", "d", 30.0), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pyproc_ind_call(p, 0, &other[i], "t.crash.nap", "d", 0.3), 0);
    double t0 = e2e_now();
    if (ref)
        assert_int_equal(pyproc_ind_call(p, 1, &killer, ref, fmt, arg), 0);
    else
        assert_int_equal(kill(old, arg), 0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pyproc_wait(slow[i], &m, 5000), PYPROC_EWORKER);
        assert_non_null(strstr(pyproc_msg_error(m), "worker 1"));
        assert_non_null(strstr(pyproc_msg_error(m), expect));
        pyproc_msg_free(m);
        pyproc_call_free(slow[i]);
    }
    assert_true(e2e_now() - t0 < 2.0);
    if (ref) {
        assert_int_equal(pyproc_wait(killer, &m, 5000), PYPROC_EWORKER);
        pyproc_msg_free(m);
        pyproc_call_free(killer);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pyproc_wait(other[i], &m, 5000), 0);
        pyproc_msg_free(m);
        pyproc_call_free(other[i]);
    }
    wait_respawned(p, 1, old);
    expect_history(p, 1);
    pyproc_pool_free(p);
}

static void sigkill(void **state)
{
    (void)state;
    death_fails_only_its_calls(NULL, NULL, SIGKILL, "signal 9");
}

static void segfault(void **state)
{
    (void)state;
    death_fails_only_its_calls("t.crash.segfault", NULL, 0, "signal 11");
}

static void os_exit(void **state)
{
    (void)state;
    death_fails_only_its_calls("t.crash.exit_now", "i", 3, "exited with status 3");
}

static void fatal_python_error(void **state)
{
    (void)state;
    death_fails_only_its_calls("t.crash.fatal", NULL, 0, "signal 6");
}

static void streams_of_a_dead_worker_fail(void **state)
{
    pyproc_pool *p = crash_pool(1);
    pyproc_call *s;
    pyproc_msg *item;
    int old = e2e_pid_of(p, 0);

    (void)state;
    assert_int_equal(pyproc_gen(p, "t.proc.closing_gen", &s, NULL), 0);
    assert_int_equal(pyproc_next(s, &item), 1);
    pyproc_msg_free(item);
    assert_int_equal(kill(old, SIGKILL), 0);
    int rc;
    while ((rc = pyproc_next(s, &item)) == 1)
        pyproc_msg_free(item);
    assert_int_equal(rc, PYPROC_EWORKER);
    assert_non_null(strstr(pyproc_msg_error(item), "signal 9"));
    pyproc_msg_free(item);
    pyproc_call_free(s);
    wait_respawned(p, 0, old);
    pyproc_pool_free(p);
}

static void crash_loop_is_given_up(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_msg *m = NULL;
    int fd, old;

    (void)state;
    assert_int_equal(pyproc_add_sub(p, "crashy", "crashy", PYPROC_SUB_INIT), 0);
    old = e2e_pid_of(p, 1);
    fd = open(marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    double t0 = e2e_now();
    assert_int_equal(kill(old, SIGKILL), 0);
    /* Every respawn now dies replaying the sub: after a few tries with
     * growing pauses, the slot is given up and says why. */
    const char *e = NULL;
    for (int i = 0; i < 300; i++) {
        pyproc_msg_free(m);
        m = NULL;
        assert_int_equal(pyproc_ind_func(p, 1, "t.basic.pid", &m, NULL), PYPROC_EWORKER);
        e = pyproc_msg_error(m);
        if (strstr(e, "gave up"))
            break;
        usleep(50000);
    }
    double took = e2e_now() - t0;
    printf("slot given up after %.2f s: %s\n", took, e);
    assert_non_null(strstr(e, "gave up"));
    assert_non_null(strstr(e, "status 7"));
    assert_true(took > 0.5); /* back-off: not a tight loop */
    pyproc_msg_free(m);
    unlink(marker);
    /* The other worker is fine, and round robin passes over the dead one. */
    for (int i = 0; i < 4; i++) {
        int index, pid;
        assert_int_equal(pyproc_func(p, "t.basic.where", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "[ii]", &index, &pid), 0);
        assert_int_equal(index, 0);
        pyproc_msg_free(m);
    }
    pyproc_pool_free(p);
}

/* ---- the host dies ---- */

/* Not against MPI pools: it starts this program again as a host, outside
 * mpirun; tests/mpi.sh's "the host dies" is an MPI pool's. */
#ifndef PYPROC_E2E_MPI

static int host_child(void)
{
    pyproc_pool *p = e2e_pool(2);
    int pids[2] = {e2e_pid_of(p, 0), e2e_pid_of(p, 1)};
    if (write(STDOUT_FILENO, pids, sizeof pids) != sizeof pids)
        return 1;
    pause();
    return 0;
}

static bool gone(int pid)
{
    char path[64], state = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    int n = fscanf(f, "%*d %*s %c", &state);
    fclose(f);
    return n == 1 && (state == 'Z' || state == 'X');
}

static void workers_die_with_their_host(void **state)
{
    int fds[2], pids[2];
    pid_t host;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    host = fork();
    assert_true(host >= 0);
    if (host == 0) {
        dup2(fds[1], STDOUT_FILENO);
        execl("/proc/self/exe", "test_crash", "host-child", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], pids, sizeof pids), (ssize_t)sizeof pids);
    close(fds[0]);
    assert_false(gone(pids[0]));
    assert_int_equal(kill(host, SIGKILL), 0);
    waitpid(host, NULL, 0);
    double t0 = e2e_now();
    while (!(gone(pids[0]) && gone(pids[1])) && e2e_now() - t0 < 1.0)
        usleep(5000);
    printf("workers gone %.3f s after their host was killed\n", e2e_now() - t0);
    assert_true(gone(pids[0]) && gone(pids[1]));
}
#endif

int main(int argc, char **argv)
{
#ifndef PYPROC_E2E_MPI
    if (argc > 1 && strcmp(argv[1], "host-child") == 0)
        return host_child();
#endif
    /* The workers see the marker's name in their environment: this
     * process's, or, when their agents' (an MPI pool), the one that
     * tests/mpi.sh gives this process and the agents alike (mpirun -x). */
    const char *given = getenv("PYPROC_TEST_CRASH_MARKER");
    if (given && *given)
        snprintf(marker, sizeof marker, "%s", given);
    else
        snprintf(marker, sizeof marker, "/tmp/pyproc-crash-marker-%d", (int)getpid());
    setenv("PYPROC_TEST_CRASH_MARKER", marker, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigkill),
        cmocka_unit_test(segfault),
        cmocka_unit_test(os_exit),
        cmocka_unit_test(fatal_python_error),
        cmocka_unit_test(streams_of_a_dead_worker_fail),
        cmocka_unit_test(crash_loop_is_given_up),
#ifndef PYPROC_E2E_MPI
        cmocka_unit_test(workers_die_with_their_host),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
