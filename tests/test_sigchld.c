/*
 * End to end: a host application that handles SIGCHLD its own way.  With
 * its own handler, with SIGCHLD ignored (the kernel reaps children at
 * once) and with a thread reaping every child with waitpid(-1), calls work,
 * a killed worker is noticed, its calls fail with a message that names it,
 * it is respawned, and pyproc_pool_free() returns.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

static volatile sig_atomic_t sigchld_seen;

static void counting_handler(int sig)
{
    (void)sig;
    sigchld_seen++;
}

static void reaping_handler(int sig)
{
    int saved = errno;

    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    sigchld_seen++;
    errno = saved;
}

static void set_sigchld(void (*handler)(int), int flags)
{
    struct sigaction sa = {.sa_handler = handler, .sa_flags = flags};

    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGCHLD, &sa, NULL), 0);
}

/*
 * Worker 1 is killed while it has calls in flight and worker 0 answers a
 * call that the application thread waits for as SIGCHLD arrives.  Returns
 * the death message of worker 1's calls (free it).
 */
static char *kill_and_recover(void)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *slow[4], *other;
    pyproc_msg *m = NULL;
    char *why = NULL;

    for (int i = 0; i < 10; i++)
        e2e_int(p, "t.basic.pid");
    int old = e2e_pid_of(p, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pyproc_ind_call(p, 1, &slow[i], "t.crash.nap", "d", 30.0), 0);
    assert_int_equal(pyproc_ind_call(p, 0, &other, "t.crash.nap", "d", 0.5), 0);
    double t0 = e2e_now();
    assert_int_equal(kill(old, SIGKILL), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pyproc_wait(slow[i], &m, 5000), PYPROC_EWORKER);
        if (i == 0)
            why = strdup(pyproc_msg_error(m));
        pyproc_msg_free(m);
        pyproc_call_free(slow[i]);
    }
    assert_true(e2e_now() - t0 < 2.0);
    assert_non_null(strstr(why, "worker 1"));
    /* The signal interrupted nothing of ours. */
    assert_int_equal(pyproc_wait(other, &m, 5000), 0);
    pyproc_msg_free(m);
    pyproc_call_free(other);
    int pid = e2e_wait_respawned(p, 1, old);
    assert_true(pid > 0);
    assert_int_equal(e2e_pid_of(p, 0) > 0, 1);
    t0 = e2e_now();
    pyproc_pool_free(p);
    printf("pool freed in %.3f s; the death said: %s\n", e2e_now() - t0, why);
    assert_true(e2e_now() - t0 < 5.0);
    return why;
}

static void own_handler(void **state)
{
    (void)state;
    /* No SA_RESTART: any slow system call of the library that the signal
     * hits in an application thread returns EINTR. */
    sigchld_seen = 0;
    set_sigchld(counting_handler, 0);
    char *why = kill_and_recover();
    assert_non_null(strstr(why, "signal 9"));
    assert_true(sigchld_seen > 0);
    free(why);
    set_sigchld(SIG_DFL, 0);
}

static void own_handler_that_reaps(void **state)
{
    (void)state;
    sigchld_seen = 0;
    set_sigchld(reaping_handler, SA_RESTART);
    char *why = kill_and_recover();
    assert_true(sigchld_seen > 0);
    free(why);
    set_sigchld(SIG_DFL, 0);
}

static void sigchld_ignored(void **state)
{
    (void)state;
    set_sigchld(SIG_IGN, 0);
    char *why = kill_and_recover();
    /* The kernel reaped it: how it died is lost, that it died is not. */
    assert_non_null(strstr(why, "how is unknown"));
    free(why);
    set_sigchld(SIG_DFL, 0);
}

static _Atomic bool reaper_stop;
static _Atomic int reaped;

static void *reaper(void *arg)
{
    (void)arg;
    while (!atomic_load(&reaper_stop)) {
        if (waitpid(-1, NULL, 0) > 0)
            atomic_fetch_add(&reaped, 1);
        else
            usleep(1000); /* no children right now */
    }
    return NULL;
}

static void another_thread_reaps(void **state)
{
    pthread_t t;

    (void)state;
    atomic_store(&reaper_stop, false);
    atomic_store(&reaped, 0);
    assert_int_equal(pthread_create(&t, NULL, reaper, NULL), 0);
    char *why = kill_and_recover();
    free(why);
    atomic_store(&reaper_stop, true);
    pthread_join(t, NULL);
    printf("the application's thread reaped %d workers\n", atomic_load(&reaped));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_handler),
        cmocka_unit_test(own_handler_that_reaps),
        cmocka_unit_test(sigchld_ignored),
        cmocka_unit_test(another_thread_reaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
