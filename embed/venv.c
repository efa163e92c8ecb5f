/*
 * Running inside a virtual environment, as `<venv>/bin/python3` would.
 *
 * Python decides it runs in a venv from where its executable lives: site
 * finds pyvenv.cfg beside or above sys.executable, then puts the venv's
 * site-packages on sys.path (and the system's too when the file says
 * include-system-site-packages = true).  So the worker only has to name
 * the venv's interpreter as its program, after checking that the venv was
 * made for the Python this worker embeds: packages built for another
 * version would fail to import in confusing ways, or crash.
 */
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

/* The value of `key = value` in an open pyvenv.cfg, or NULL. */
static char *cfg_value(FILE *f, const char *key, char *line, size_t size)
{
    rewind(f);
    while (fgets(line, (int)size, f)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        char *k = line, *v = eq + 1, *end = eq;
        while (*k == ' ' || *k == '\t')
            k++;
        while (end > k && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - k) != strlen(key) || strncmp(k, key, (size_t)(end - k)))
            continue;
        v += strspn(v, " \t");
        v[strcspn(v, "\r\n")] = '\0';
        return v;
    }
    return NULL;
}

/* Fails unless the venv's "version" (or "version_info") is ours, X.Y. */
static int check_version(const char *venv, FILE *f)
{
    char line[512];
    const char *v = cfg_value(f, "version", line, sizeof line);
    int major = -1, minor = -1;

    if (!v)
        v = cfg_value(f, "version_info", line, sizeof line);
    if (!v || sscanf(v, "%d.%d", &major, &minor) != 2) {
        fprintf(stderr, "pyproc-worker: %s/pyvenv.cfg says no Python version\n", venv);
        return -1;
    }
    if (major != PY_MAJOR_VERSION || minor != PY_MINOR_VERSION) {
        fprintf(stderr,
                "pyproc-worker: the virtual environment %s was made for Python %d.%d, "
                "but this worker runs Python %d.%d; make the venv with python%d.%d\n",
                venv, major, minor, PY_MAJOR_VERSION, PY_MINOR_VERSION, PY_MAJOR_VERSION,
                PY_MINOR_VERSION);
        return -1;
    }
    return 0;
}

char *worker_venv_program(const char *venv)
{
    char cfg[4096], *exe = NULL;
    FILE *f;

    snprintf(cfg, sizeof cfg, "%s/pyvenv.cfg", venv);
    f = fopen(cfg, "re");
    if (!f) {
        fprintf(stderr, "pyproc-worker: cannot read %s: %m\n", cfg);
        return NULL;
    }
    if (check_version(venv, f) == 0) {
        /* python3 is what every venv has; the venv's own name for it. */
        if (asprintf(&exe, "%s/bin/python3", venv) < 0)
            exe = NULL;
        else if (access(exe, X_OK) != 0) {
            fprintf(stderr, "pyproc-worker: %s is not an interpreter: %m\n", exe);
            free(exe);
            exe = NULL;
        }
    }
    fclose(f);
    return exe;
}
