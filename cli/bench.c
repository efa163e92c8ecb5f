/*
 * `pyproc bench`: run pyproc-bench with the same arguments.
 *
 * pyproc-bench reads its Python side from the source tree, so it is found
 * where a build tree keeps it (../bench/ beside this program's bin/), or
 * wherever $PYPROC_BENCH says.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_bench(char **argv);

int cli_bench(char **argv)
{
    char exe[PATH_MAX], path[PATH_MAX + 32];
    const char *env = getenv("PYPROC_BENCH");
    ssize_t n;

    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n < 0) {
            perror("pyproc: /proc/self/exe");
            return 5;
        }
        exe[n] = '\0';
        snprintf(path, sizeof path, "%s/../bench/pyproc-bench", dirname(exe));
    }
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr,
            "pyproc: cannot run %s: %s\n"
            "pyproc: the bench runs from a build tree; set PYPROC_BENCH to its pyproc-bench\n",
            path, strerror(errno));
    return 5;
}
