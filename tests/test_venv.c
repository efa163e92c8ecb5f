/*
 * End to end: workers in a virtual environment.  A venv made by
 * `python3 -m venv` holds a module of its own, which workers import only
 * when pyproc_opts.venv names the venv; its pyvenv.cfg decides whether the
 * system's packages are visible; a venv made for another Python version
 * stops the pool from starting, with a message that says so; a directory
 * that is no venv is -ENOENT.
 */
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"

static char root[256]; /* a scratch directory for the venvs */

/* Make a venv at root/name (with the system's packages or without) that
 * holds the module venvmod.  Returns its path in buf. */
static const char *make_venv(const char *name, bool system_site, char *buf, size_t size)
{
    char cmd[PATH_MAX * 3], mod[PATH_MAX * 2];
    glob_t g;
    FILE *f;

    snprintf(buf, size, "%s/%s", root, name);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -m venv --without-pip %s %s",
             system_site ? "--system-site-packages" : "", buf);
    assert_int_equal(system(cmd), 0);
    /* lib/pythonX.Y/site-packages: the one the venv made. */
    snprintf(mod, sizeof mod, "%s/lib/python*/site-packages", buf);
    assert_int_equal(glob(mod, 0, NULL, &g), 0);
    assert_int_equal(g.gl_pathc, 1);
    snprintf(mod, sizeof mod, "%s/venvmod.py", g.gl_pathv[0]);
    globfree(&g);
    f = fopen(mod, "w");
    assert_non_null(f);
    fputs(
        "import sys\n"
        "def where():\n"
        "    return [sys.prefix, __file__]\n"
        "def has(name):\n"
        "    import importlib.util\n"
        "    return importlib.util.find_spec(name) is not None\n",
        f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static pyproc_pool *venv_pool(const char *venv)
{
    pyproc_opts opts = {.workers = 1, .venv = venv};
    pyproc_pool *p = NULL;

    assert_int_equal(pyproc_pool_new(&p, "venv", &opts), 0);
    assert_int_equal(pyproc_add_sub(p, "v", "venvmod", 0), 0);
    return p;
}

static bool worker_has(pyproc_pool *p, const char *module)
{
    pyproc_msg *m = NULL;
    int has = -1;

    assert_int_equal(pyproc_func(p, "v.has", &m, "s", module), 0);
    assert_int_equal(pyproc_msg_read(m, "b", &has), 0);
    pyproc_msg_free(m);
    return has;
}

static void venv_module_is_found_and_prefix_is_the_venv(void **state)
{
    char venv[PATH_MAX];
    pyproc_msg *m = NULL;
    const char *prefix, *file;
    (void)state;

    make_venv("with-system", true, venv, sizeof venv);
    pyproc_pool *p = venv_pool(venv);
    assert_int_equal(pyproc_func(p, "v.where", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[ss]", &prefix, &file), 0);
    assert_string_equal(prefix, venv);
    assert_non_null(strstr(file, "/site-packages/venvmod.py"));
    /* include-system-site-packages = true: Debian's packages too. */
    assert_true(worker_has(p, "msgpack"));
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void venv_without_system_site_hides_system_packages(void **state)
{
    char venv[PATH_MAX];
    (void)state;

    make_venv("isolated", false, venv, sizeof venv);
    pyproc_pool *p = venv_pool(venv);
    assert_false(worker_has(p, "msgpack"));
    assert_true(worker_has(p, "json")); /* the standard library stays */
    pyproc_pool_free(p);
}

static void no_venv_no_venv_module(void **state)
{
    pyproc_opts opts = {.workers = 1};
    pyproc_pool *p = NULL;
    pyproc_msg *err = NULL;
    (void)state;

    assert_int_equal(pyproc_pool_new(&p, "plain", &opts), 0);
    assert_int_equal(pyproc_add_sub_err(p, "v", "venvmod", 0, &err), PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(err), "venvmod"));
    pyproc_msg_free(err);
    pyproc_pool_free(p);
}

struct said {
    char text[4096];
    size_t len;
};

static void keep_output(pyproc_pool *pool, int ind, int fd, const char *line, size_t len,
                        void *data)
{
    struct said *s = data;
    (void)pool, (void)ind, (void)fd;
    if (s->len + len + 1 < sizeof s->text) {
        memcpy(s->text + s->len, line, len);
        s->len += len;
        s->text[s->len++] = '\n';
        s->text[s->len] = '\0';
    }
}

static void venv_of_another_version_is_refused(void **state)
{
    char venv[PATH_MAX], cfg[PATH_MAX + 16], cmd[PATH_MAX * 2];
    struct said said = {0};
    pyproc_pool *p = NULL;
    (void)state;

    make_venv("other-version", true, venv, sizeof venv);
    snprintf(cfg, sizeof cfg, "%s/pyvenv.cfg", venv);
    snprintf(cmd, sizeof cmd, "sed -i 's/^version = .*/version = 3.9.2/' %s", cfg);
    assert_int_equal(system(cmd), 0);
    pyproc_opts opts = {.workers = 1, .venv = venv, .output = keep_output, .output_data = &said};
    assert_true(pyproc_pool_new(&p, "old", &opts) < 0);
    assert_null(p);
    assert_non_null(strstr(said.text, "made for Python 3.9"));
}

static void a_directory_without_pyvenv_cfg_is_enoent(void **state)
{
    pyproc_opts opts = {.workers = 1, .venv = root};
    pyproc_pool *p = NULL;
    (void)state;

    assert_int_equal(pyproc_pool_new(&p, "none", &opts), -ENOENT);
    opts.venv = "";
    assert_int_equal(pyproc_pool_new(&p, "empty", &opts), -EINVAL);
}

static int make_root(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/pyproc-test-venv.%d", (int)getpid());
    return mkdir(root, 0700);
}

static int remove_root(void **state)
{
    char cmd[PATH_MAX + 16];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    return system(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(venv_module_is_found_and_prefix_is_the_venv),
        cmocka_unit_test(venv_without_system_site_hides_system_packages),
        cmocka_unit_test(no_venv_no_venv_module),
        cmocka_unit_test(venv_of_another_version_is_refused),
        cmocka_unit_test(a_directory_without_pyvenv_cfg_is_enoent),
    };
    alarm(120);
    return cmocka_run_group_tests(tests, make_root, remove_root);
}
