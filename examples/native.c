/*
 * native: C functions of a plugin run in workers, so that its crashes do
 * not take the host down.
 *
 * It starts a pool of 2 workers and loads into each, with
 * pyproc_add_native(), two shared libraries: the plugin of
 * examples/plugin/ (built as libpyproc-example-plugin.so beside this
 * program), which declares its functions itself, and libm, whose functions
 * the host declares ({"cos", "d(d)"}).  It then calls them by reference
 * like Python functions: a checksum of bytes, a codec that fills an output
 * buffer, cos and pow; shows that a call with an argument of the wrong type
 * is refused before any native code runs; and calls the plugin's buggy
 * function, which crashes one worker: the call fails with PYPROC_EWORKER
 * and the other worker goes on serving.
 *
 * Run it with `make && build/examples/native`, or give the plugin's path
 * as the first argument.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyproc.h"

static void die(const char *what, int err, pyproc_msg *m)
{
    fprintf(stderr, "native: %s: %s\n", what, pyproc_strerror(err));
    if (m && pyproc_msg_error(m))
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    exit(1);
}

/* The plugin beside this program, where `make` builds it. */
static void default_plugin(char *path, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", path, size - 1);
    char *slash;

    path[n > 0 ? n : 0] = 0;
    slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, size - (size_t)(slash ? slash + 1 - path : 0),
             "libpyproc-example-plugin.so");
}

int main(int argc, char **argv)
{
    static const pyproc_native_decl libm[] = {
        {"cos", "d(d)"},
        {"pow", "d(dd)"},
        {NULL, NULL},
    };
    pyproc_opts opts = {.workers = 2};
    char plugin[PATH_MAX];
    pyproc_pool *pool;
    pyproc_msg *m = NULL;
    const void *bytes;
    const char *s;
    size_t len;
    double d;
    int err, n;

    if (argc > 1)
        snprintf(plugin, sizeof plugin, "%s", argv[1]);
    else
        default_plugin(plugin, sizeof plugin);
    err = pyproc_pool_new(&pool, "Plugins", &opts);
    if (err < 0)
        die("pyproc_pool_new", err, NULL);

    /* decls NULL: the plugin's own pyproc_native_exports table. */
    err = pyproc_add_native_err(pool, "plugin", plugin, NULL, &m);
    if (err < 0)
        die(plugin, err, m);
    err = pyproc_add_native_err(pool, "m", "libm.so.6", libm, &m);
    if (err < 0)
        die("libm.so.6", err, m);
    printf("loaded %s and libm into %d workers\n", plugin, pyproc_workers(pool));

    err = pyproc_func(pool, "plugin.plugin_version", &m, NULL);
    if (err < 0 || pyproc_msg_read(m, "s", &s) < 0)
        die("plugin.plugin_version", err, m);
    printf("plugin.plugin_version() -> \"%s\"\n", s);
    pyproc_msg_free(m);

    /* "I(y)": bytes go in as a pointer and a length. */
    err = pyproc_func(pool, "plugin.adler32", &m, "y", "Wikipedia", (size_t)9);
    if (err < 0 || pyproc_msg_read(m, "i", &n) < 0)
        die("plugin.adler32", err, m);
    printf("plugin.adler32(b\"Wikipedia\") -> 0x%08x\n", (unsigned)n);
    pyproc_msg_free(m);

    /* "i(sw4096)": the return value and the output buffer, as a list. */
    err = pyproc_func(pool, "plugin.rot13", &m, "s", "Hello, pyproc!");
    if (err < 0 || pyproc_msg_read(m, "[iy]", &n, &bytes, &len) < 0)
        die("plugin.rot13", err, m);
    printf("plugin.rot13(\"Hello, pyproc!\") -> [%d, \"%.*s\"]\n", n, (int)len,
           (const char *)bytes);
    pyproc_msg_free(m);

    err = pyproc_func(pool, "m.cos", &m, "d", 0.0);
    if (err < 0 || pyproc_msg_read(m, "d", &d) < 0)
        die("m.cos", err, m);
    printf("m.cos(0.0) -> %g\n", d);
    pyproc_msg_free(m);
    err = pyproc_func(pool, "m.pow", &m, "dd", 2.0, 10.0);
    if (err < 0 || pyproc_msg_read(m, "d", &d) < 0)
        die("m.pow", err, m);
    printf("m.pow(2.0, 10.0) -> %g\n", d);
    pyproc_msg_free(m);

    /* A str where bytes belong: refused, and the worker is fine. */
    err = pyproc_func(pool, "plugin.adler32", &m, "s", "not bytes");
    printf("plugin.adler32(\"not bytes\") -> %s: %.*s\n", pyproc_strerror(err),
           (int)strcspn(pyproc_msg_error(m), "\n"), pyproc_msg_error(m));
    pyproc_msg_free(m);

    /* The bug: worker 0 dies of it, the host does not. */
    err = pyproc_ind_func(pool, 0, "plugin.buggy_parse", &m, "s", "!boom");
    printf("plugin.buggy_parse(\"!boom\") on worker 0 -> %s: %s\n", pyproc_strerror(err),
           m ? pyproc_msg_error(m) : "");
    pyproc_msg_free(m);
    err = pyproc_ind_func(pool, 1, "plugin.buggy_parse", &m, "s", "ok");
    if (err < 0 || pyproc_msg_read(m, "i", &n) < 0)
        die("plugin.buggy_parse on worker 1", err, m);
    printf("plugin.buggy_parse(\"ok\") on worker 1 -> %d ('%c')\n", n, n);
    pyproc_msg_free(m);

    pyproc_pool_free(pool);
    return 0;
}
