/*
 * pyproc-worker: one worker of a pool.  The host execs it with its segment's
 * fd already open; it puts the host's limits on itself, then runs Python:
 * as /usr/bin/python3 with the worker's code as an extension module when
 * that module is installed beside it (see boot.c), else embedded in this
 * program.  Either way it maps the segment, arranges to die with the host
 * and hands control to the hub (embed/python/hub.py), which serves the
 * request ring on an asyncio loop until told to stop.
 */
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buffers.h"
#include "worker.h"

#ifndef PYPROC_PYTHON_EXE
#define PYPROC_PYTHON_EXE "/usr/bin/python3"
#endif

/* program: the interpreter Python should believe it is (a venv's). */
static void start_python(const char *program)
{
    PyConfig config;
    PyStatus status;

    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    config.install_signal_handlers = 1;
    /* stdout and stderr are pipes to the host, which passes lines on as
     * they come: buffering would hold print() output back until exit. */
    config.buffered_stdio = 0;
    /* Without a program name the interpreter looks for `python3` on PATH
     * and may report someone else's interpreter as sys.executable. */
    status = PyConfig_SetBytesString(&config, &config.program_name, program);
    if (PyStatus_Exception(status))
        goto fail;
    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status))
        goto fail;
    PyConfig_Clear(&config);
    /* Ctrl-C at the host's terminal reaches the whole process group; the
     * host decides when its workers stop. */
    signal(SIGINT, SIG_IGN);
    return;
fail:
    PyConfig_Clear(&config);
    Py_ExitStatusException(status);
}

#ifdef PYPROC_WORKER_SO
/*
 * Loads the worker's module from the file given first, then leaves
 * sys.argv as an embedded worker has it, and serves (boot.c).
 */
static const char boot_source[] =
    "import sys\n"
    "from importlib.machinery import ExtensionFileLoader, ModuleSpec\n"
    "loader = ExtensionFileLoader('_pyproc', sys.argv[1])\n"
    "del sys.argv[1]\n"
    "mod = loader.create_module(ModuleSpec('_pyproc', loader, origin=loader.path))\n"
    "sys.modules['_pyproc'] = mod\n"
    "sys.argv[:] = ['']\n"
    "del sys, ExtensionFileLoader, ModuleSpec, loader\n"
    "mod.run()\n";

/*
 * Become /usr/bin/python3 serving as this worker, when the worker's
 * module is beside this program.  Returns only when it is not, or the
 * exec failed: then Python runs embedded here.  -P: the working directory
 * is not put on sys.path (an embedded worker has no script directory
 * either); -u: stdout and stderr unbuffered, as the host reads them line
 * by line.
 */
static void exec_python(int argc, char **argv, const char *python)
{
    char self[PATH_MAX], so[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char **args = calloc((size_t)argc + 8, sizeof *args);
    int k = 0;

    if (n <= 0 || !args || !memchr(self, '/', (size_t)n)) {
        free(args);
        return;
    }
    self[n] = 0;
    *strrchr(self, '/') = 0;
    snprintf(so, sizeof so, "%s/%s", self, PYPROC_WORKER_SO);
    if (access(so, R_OK) < 0) {
        free(args);
        return;
    }
    args[k++] = (char *)python;
    args[k++] = "-P";
    args[k++] = "-u";
    args[k++] = "-c";
    args[k++] = (char *)boot_source;
    args[k++] = so;
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = NULL;
    execv(python, args);
    free(args);
}
#endif

int main(int argc, char **argv)
{
    struct worker_args a;
    char *venv_python = NULL;
    int rc;

    worker_keep_freed_memory();
    worker_parse_args(argc, argv, &a);
    worker_restrict(&a);
    /* In a venv, Python is the venv's interpreter: site finds the venv
     * from where that program lives. */
    if (a.venv && !(venv_python = worker_venv_program(a.venv)))
        return 1;
#ifdef PYPROC_WORKER_SO
    exec_python(argc, argv, venv_python ? venv_python : PYPROC_PYTHON_EXE);
#endif
    if (the_worker.template_fd >= 0) {
        worker_template_prepare();
    } else {
        worker_die_with_host();
        worker_attach_rings(&a);
    }
    if (pyproc_bridge_register() < 0) {
        fprintf(stderr, "pyproc-worker: cannot register the bridge module\n");
        return 1;
    }
    start_python(venv_python ? venv_python : PYPROC_PYTHON_EXE);
    free(venv_python);
    if (a.buffer_fd >= 0 && worker_buffers_init(a.buffer_fd) != 0) {
        fprintf(stderr, "pyproc-worker: cannot take shared buffers on fd %d\n", a.buffer_fd);
        return 1;
    }
    rc = the_worker.template_fd >= 0 ? worker_template_serve() : worker_run_hub();
    /* User threads (executors, libraries) may still run; finalising the
     * interpreter would wait for them.  The host has what it needs. */
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
}
