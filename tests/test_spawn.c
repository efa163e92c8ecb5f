/*
 * Starting workers when a step of posix_spawn's set-up fails: the pool
 * start or add_proc fails with that step's error and leaves no fd (and,
 * under the sanitizers, no memory) behind.  This program defines two of
 * the set-up functions itself, failing on demand and passing on to libc's
 * otherwise; the library, linked in statically, calls these.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>

#include "pyproc.h"

static int fail_chdir, fail_flags; /* the error to return, or 0 */

int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *fa, const char *path)
{
    int (*real)(posix_spawn_file_actions_t *, const char *);

    if (fail_chdir)
        return fail_chdir;
    *(void **)&real = dlsym(RTLD_NEXT, "posix_spawn_file_actions_addchdir_np");
    return real(fa, path);
}

int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags)
{
    int (*real)(posix_spawnattr_t *, short);

    if (fail_flags)
        return fail_flags;
    *(void **)&real = dlsym(RTLD_NEXT, "posix_spawnattr_setflags");
    return real(attr, flags);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Exec'd workers: a template forks them without posix_spawn. */
static const pyproc_opts opts = {.workers = 1, .cwd = "/", .start = PYPROC_START_EXEC};

static void failed_setup_fails_the_pool(void **state)
{
    pyproc_pool *p = NULL;
    int before = open_fds();

    (void)state;
    fail_chdir = ENOMEM;
    assert_int_equal(pyproc_pool_new(&p, "spawn", &opts), -ENOMEM);
    fail_chdir = 0;
    assert_null(p);
    assert_int_equal(open_fds(), before);

    fail_flags = EINVAL;
    assert_int_equal(pyproc_pool_new(&p, "spawn", &opts), -EINVAL);
    fail_flags = 0;
    assert_null(p);
    assert_int_equal(open_fds(), before);

    /* Nothing failing, the same options start a pool. */
    assert_int_equal(pyproc_pool_new(&p, "spawn", &opts), 0);
    pyproc_pool_free(p);
    assert_int_equal(open_fds(), before);
}

static void failed_setup_fails_add_proc(void **state)
{
    pyproc_pool *p;
    int ind = -1;

    (void)state;
    assert_int_equal(pyproc_pool_new(&p, "spawn", &opts), 0);
    int before = open_fds();
    fail_chdir = ENOMEM;
    assert_int_equal(pyproc_add_proc(p, &ind), -ENOMEM);
    fail_chdir = 0;
    assert_int_equal(ind, -1);
    assert_int_equal(pyproc_workers(p), 1);
    assert_int_equal(open_fds(), before);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(ind, 1);
    pyproc_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(failed_setup_fails_the_pool),
        cmocka_unit_test(failed_setup_fails_add_proc),
    };
    alarm(120);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
