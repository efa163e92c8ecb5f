/*
 * The worker run by /usr/bin/python3 itself.  Debian builds that program
 * with link-time optimisation, which no libpython it ships has: pure-Python
 * code runs 5-30% fewer instructions there than in any program that links
 * libpython (README, "What the worker links").  So pyproc-worker, once it
 * has put the host's limits on itself, execs the interpreter with this
 * code as extension module _pyproc (pyproc-worker.so, beside the worker):
 *
 *   python3 -P -u -c BOOT pyproc-worker.so --fd N ...   (see main.c)
 *
 * Loading the module reads the worker's command line from sys.argv, maps
 * the segment and attaches the rings, as main() does when it embeds
 * Python; run() then hands control to the hub.
 */
#include "bridge.h"
#include "buffers.h"

#include <marshal.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

/* The hub's source, and its code object marshalled at build time,
 * compiled in by embed/python_blob.S. */
extern const char pyproc_hub_source[];
extern const char pyproc_hub_code[];
extern const uint64_t pyproc_hub_code_size;

/* The hub as the build compiled it, if this Python is of the same major
 * and minor version; else NULL with no exception set. */
static PyObject *hub_code_built(void)
{
    uint32_t version;
    PyObject *code;

    memcpy(&version, pyproc_hub_code, sizeof version); /* little-endian, as x86 and arm64 */
    if (pyproc_hub_code_size <= sizeof version || version != (uint32_t)(Py_Version >> 16))
        return NULL;
    code = PyMarshal_ReadObjectFromString(pyproc_hub_code + sizeof version,
                                          (Py_ssize_t)(pyproc_hub_code_size - sizeof version));
    /* new ref */
    if (code && PyCode_Check(code))
        return code;
    Py_XDECREF(code);
    PyErr_Clear();
    return NULL;
}

PyObject *worker_load_hub(void)
{
    PyObject *code, *mod;

    code = hub_code_built(); /* new ref */
    if (!code)
        code = Py_CompileString(pyproc_hub_source, "<pyproc hub>", Py_file_input); /* new ref */
    if (!code)
        return NULL;
    mod = PyImport_ExecCodeModule("pyproc", code); /* new ref */
    Py_DECREF(code);
    return mod;
}

int worker_run_main(PyObject *hub)
{
    PyObject *res = PyObject_CallMethod(hub, "main", NULL); /* new ref */

    if (!res)
        PyErr_Print();
    Py_XDECREF(res);
    return res ? 0 : 1;
}

int worker_run_hub(void)
{
    PyObject *mod = worker_load_hub(); /* new ref */
    int rc;

    if (!mod) {
        PyErr_Print();
        return 1;
    }
    rc = worker_run_main(mod);
    Py_DECREF(mod);
    return rc;
}

/* run(): serve until the host says stop, then leave the process. */
static PyObject *py_run(PyObject *self, PyObject *unused)
{
    int rc;

    (void)self;
    (void)unused;
    rc = the_worker.template_fd >= 0 ? worker_template_serve() : worker_run_hub();
    /* As main() does: user threads may still run, and finalising would
     * wait for them.  The host has what it needs. */
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
}

static PyMethodDef boot_methods[] = {
    {"run", py_run, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* sys.argv as a C argv of copies that live as long as the process (the
 * worker keeps pointers to its pool's name and python path); argv[0] is
 * the -c that Python left there. */
static char **argv_of_sys(int *ret_argc)
{
    PyObject *list = PySys_GetObject("argv"); /* borrowed */
    Py_ssize_t n = list && PyList_Check(list) ? PyList_GET_SIZE(list) : 0;
    char **argv = n > 0 ? calloc((size_t)n + 1, sizeof *argv) : NULL;

    if (!argv)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *s = PyUnicode_AsUTF8(PyList_GET_ITEM(list, i));
        if (!s || !(argv[i] = strdup(s))) {
            if (s)
                PyErr_NoMemory();
            free(argv); /* and the copies so far: only at start-up */
            return NULL;
        }
    }
    *ret_argc = (int)n;
    return argv;
}

PyMODINIT_FUNC PyInit__pyproc(void)
{
    struct worker_args a;
    PyObject *m;
    char **argv;
    int argc;

    if (!(argv = argv_of_sys(&argc))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "pyproc-worker: no command line in sys.argv");
        return NULL;
    }
    worker_keep_freed_memory();
    /* The command line was checked, and the limits set, by pyproc-worker
     * before it exec'd us. */
    worker_parse_args(argc, argv, &a);
    free(argv); /* not the strings: the_worker points into them */
    if (the_worker.template_fd >= 0) {
        worker_template_prepare();
    } else {
        worker_die_with_host();
        worker_attach_rings(&a);
    }
    if (a.buffer_fd >= 0 && worker_buffers_init(a.buffer_fd) != 0) {
        PyErr_Format(PyExc_RuntimeError, "pyproc-worker: cannot take shared buffers on fd %d",
                     a.buffer_fd);
        return NULL;
    }
    /* Ctrl-C at the host's terminal reaches the whole process group; the
     * host decides when its workers stop. */
    signal(SIGINT, SIG_IGN);
    m = pyproc_bridge_module(); /* new ref */
    if (m && PyModule_AddFunctions(m, boot_methods) < 0)
        Py_CLEAR(m);
    return m;
}
