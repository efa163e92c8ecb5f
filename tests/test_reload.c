/*
 * End to end: pyproc_reload().  A module written into a temporary
 * directory on python_path is rewritten between reloads, and the new code
 * answers afterwards on every index, while threads keep calling it and
 * no call fails; a module that no longer imports stops the reload at the
 * first worker, the old workers serve on, and the error comes back.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "life.h"

/* Every version of the module answers its pid too. */
#define MOD_PID "import os\ndef pid():\n    return os.getpid()\n"

struct moddir {
    char dir[64];
    char file[96];
};

static void mod_write(struct moddir *d, const char *text)
{
    FILE *f = fopen(d->file, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mod_remove(struct moddir *d)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
    assert_int_equal(system(cmd), 0);
}

/* A pool of n on a fresh module "lifemod" answering `version`, added
 * with flags, its workers started as start says. */
static pyproc_pool *mod_pool_ex(struct moddir *d, int n, int version, unsigned flags, int start)
{
    pyproc_pool *p = NULL;
    char text[128];

    strcpy(d->dir, "/tmp/pyproc-reload-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->file, sizeof d->file, "%s/lifemod.py", d->dir);
    snprintf(text, sizeof text, "%sdef version():\n    return %d\n", MOD_PID, version);
    mod_write(d, text);
    assert_int_equal(
        pyproc_pool_new(&p, "reload",
                        &(pyproc_opts){.workers = n, .python_path = d->dir, .start = start}),
        0);
    assert_int_equal(pyproc_add_sub(p, "m", "lifemod", flags), 0);
    return p;
}

static pyproc_pool *mod_pool(struct moddir *d, int n, int version)
{
    return mod_pool_ex(d, n, version, 0, 0);
}

static int64_t version_at(pyproc_pool *p, int ind)
{
    pyproc_msg *m = NULL;
    int64_t v = -1;

    assert_int_equal(pyproc_ind_func(p, ind, "m.version", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &v), 0);
    pyproc_msg_free(m);
    return v;
}

/* Worker ind's pid, or -1 while its calls fail (it died). */
static int pid_or_dead(pyproc_pool *p, int ind)
{
    pyproc_msg *m = NULL;
    int pid = -1;
    int rc = pyproc_ind_func(p, ind, "m.pid", &m, NULL);

    if (rc == 0)
        assert_int_equal(pyproc_msg_read(m, "i", &pid), 0);
    pyproc_msg_free(m);
    return rc == 0 ? pid : -1;
}

static int pid_at(pyproc_pool *p, int ind)
{
    int pid = pid_or_dead(p, ind);

    assert_true(pid > 0);
    return pid;
}

static void reload_imports_new_code_under_load(void **state)
{
    struct moddir d;
    pyproc_pool *p = mod_pool(&d, 3, 1);
    struct life_load l = {.pool = p, .ref = "m.version", .pinned_every = 2};
    int pids[3];
    (void)state;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(version_at(p, i), 1);
        pids[i] = pid_at(p, i);
    }
    /* A longer text each time: the cached bytecode is keyed by the
     * source's size and second of modification. */
    mod_write(&d, MOD_PID "def version():\n    return 22\n");
    life_start(&l);
    life_sleep(0.1);
    assert_int_equal(pyproc_reload(p), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(version_at(p, i), 22);
        assert_true(pid_at(p, i) != pids[i]);
        pyproc_worker_stats st = life_stats(p, i);
        assert_int_equal(st.recycles, 1);
        assert_int_equal(st.restarts, 0);
    }
    mod_write(&d, MOD_PID "def version():\n    return 333\n");
    assert_int_equal(pyproc_reload(p), 0);
    life_sleep(0.1);
    life_stop(&l);
    for (int i = 0; i < 3; i++)
        assert_int_equal(version_at(p, i), 333);
    pyproc_pool_free(p);
    mod_remove(&d);
}

static void broken_module_keeps_old_workers(void **state)
{
    struct moddir d;
    pyproc_pool *p = mod_pool(&d, 2, 1);
    struct life_load l = {.pool = p, .ref = "m.version", .pinned_every = 2};
    pyproc_msg *err = NULL;
    int pids[2];
    (void)state;

    for (int i = 0; i < 2; i++)
        pids[i] = pid_at(p, i);
    mod_write(&d, MOD_PID "def version(:\n    return 4444\n");
    life_start(&l);
    assert_int_equal(pyproc_reload_err(p, &err), PYPROC_EREMOTE);
    assert_non_null(err);
    assert_non_null(strstr(pyproc_msg_error(err), "SyntaxError"));
    pyproc_msg_free(err);
    /* Nothing was replaced, and the old code answers. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pid_at(p, i), pids[i]);
        assert_int_equal(version_at(p, i), 1);
        assert_int_equal(life_stats(p, i).recycles, 0);
    }
    assert_int_equal(pyproc_reload(p), PYPROC_EREMOTE);
    /* Fixed, it goes through. */
    mod_write(&d, MOD_PID "def version():\n    return 55555\n");
    assert_int_equal(pyproc_reload(p), 0);
    life_stop(&l);
    for (int i = 0; i < 2; i++)
        assert_int_equal(version_at(p, i), 55555);
    pyproc_pool_free(p);
    mod_remove(&d);
}

static void reload_waits_for_calls_in_flight(void **state)
{
    pyproc_pool *p = e2e_pool(2);
    pyproc_call *slow[2], *s;
    pyproc_msg *m = NULL;
    (void)state;

    /* Calls and a stream running on the old workers end normally. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(pyproc_ind_call(p, i, &slow[i], "t.life.work", "d", 0.5), 0);
    assert_int_equal(pyproc_ind_gen(p, 0, "t.life.count", &s, "id", 5, 0.1), 0);
    assert_int_equal(pyproc_reload(p), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pyproc_wait(slow[i], &m, 10000), 0);
        pyproc_msg_free(m);
        pyproc_call_free(slow[i]);
    }
    int n = 0, rc;
    while ((rc = pyproc_next(s, &m)) == 1) {
        pyproc_msg_free(m);
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 5);
    pyproc_call_free(s);
    /* Refused once the pool drains. */
    assert_int_equal(pyproc_drain(p, 1000), 0);
    assert_int_equal(pyproc_reload(p), -ESHUTDOWN);
    assert_int_equal(pyproc_reload(NULL), -EINVAL);
    pyproc_pool_free(p);
}

/* A sub preloaded in the template: the reload starts a new template,
 * whose forks import the module's new text. */
static void preloaded_module_is_reloaded(void **state)
{
    struct moddir d;
    pyproc_pool *p = mod_pool_ex(&d, 2, 1, PYPROC_SUB_PRELOAD, PYPROC_START_TEMPLATE);
    (void)state;

    for (int i = 0; i < 2; i++)
        assert_int_equal(version_at(p, i), 1);
    mod_write(&d, MOD_PID "def version():\n    return 22\n");
    assert_int_equal(pyproc_reload(p), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(version_at(p, i), 22);
    /* Workers forked later (a respawn) get the new text too. */
    mod_write(&d, MOD_PID "def version():\n    return 333\n");
    assert_int_equal(pyproc_reload(p), 0);
    int pid = pid_at(p, 1);
    assert_int_equal(kill(pid, SIGKILL), 0);
    for (int i = 0, now = pid; i < 200 && (now == pid || now < 0); i++) {
        life_sleep(0.05);
        now = pid_or_dead(p, 1);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(version_at(p, i), 333);
    pyproc_pool_free(p);
    mod_remove(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reload_imports_new_code_under_load),
        cmocka_unit_test(broken_module_keeps_old_workers),
        cmocka_unit_test(reload_waits_for_calls_in_flight),
        cmocka_unit_test(preloaded_module_is_reloaded),
    };
    alarm(180);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
