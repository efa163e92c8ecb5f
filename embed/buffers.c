/*
 * Shared buffers in the worker: the host passes a buffer's fd over our
 * socket (fd 7) with a token, then a call whose argument names the token
 * (see host/shared.h).  The argument becomes a writable memoryview of the
 * range it names, over a mapping of the whole buffer that lives as long as
 * any Python object still uses it: the mapping object is the memoryview's
 * exporter, and unmapping is its deallocation.
 *
 * fds may arrive in another order than their calls (two host threads
 * send at once), so those not asked for yet wait in a small table; a
 * table that fills drops its oldest (a call that was never sent after its
 * fds).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "worker.h"

#define PENDING_MAX 64

static int sock = -1;
static struct {
    uint64_t token;
    int fd;
} pending[PENDING_MAX];
static int npending;

/* ---- the mapping object ---- */

typedef struct {
    PyObject_HEAD
    void *data;
    size_t size;
} Mapping;

static int mapping_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    Mapping *m = (Mapping *)self;
    return PyBuffer_FillInfo(view, self, m->data, (Py_ssize_t)m->size, 0, flags);
}

static void mapping_dealloc(PyObject *self)
{
    Mapping *m = (Mapping *)self;
    munmap(m->data, m->size);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs mapping_as_buffer = {.bf_getbuffer = mapping_getbuffer};

static PyTypeObject mapping_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyproc.SharedMapping",
    .tp_basicsize = sizeof(Mapping),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A shared buffer mapped into this worker.",
    .tp_dealloc = mapping_dealloc,
    .tp_as_buffer = &mapping_as_buffer,
};

/* ---- fds from the host ---- */

/* One datagram from the socket into the table; 0, or -1 when none waits. */
static int receive_one(void)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    unsigned char tok[8];
    struct iovec iov = {tok, sizeof tok};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    ssize_t n;
    int fd = -1;

    do
        n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    if (n != sizeof tok || fd < 0) { /* not what the host sends */
        if (fd >= 0)
            close(fd);
        return 0;
    }
    if (npending == PENDING_MAX) {
        close(pending[0].fd);
        memmove(pending, pending + 1, (PENDING_MAX - 1) * sizeof pending[0]);
        npending--;
    }
    uint64_t token = 0;
    for (int i = 0; i < 8; i++)
        token = token << 8 | tok[i];
    pending[npending].token = token;
    pending[npending++].fd = fd;
    return 0;
}

/* The fd sent with token, taken out of the table; -1 if it never came. */
static int take_fd(uint64_t token)
{
    for (;;) {
        for (int i = 0; i < npending; i++) {
            if (pending[i].token == token) {
                int fd = pending[i].fd;
                pending[i] = pending[--npending];
                return fd;
            }
        }
        if (receive_one() < 0)
            return -1;
    }
}

/* ---- the argument ---- */

static PyObject *map_whole(int fd)
{
    struct stat st;
    void *data;
    Mapping *m;

    if (fstat(fd, &st) < 0 || st.st_size <= 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* Not populated: a function that reads a few bytes of a large buffer
     * pays for those pages only (MAP_POPULATE made a 16 MiB argument cost
     * 4 ms instead of 80 us on this path). */
    data = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    m = PyObject_New(Mapping, &mapping_type);
    if (!m) {
        munmap(data, (size_t)st.st_size);
        return NULL;
    }
    m->data = data;
    m->size = (size_t)st.st_size;
    return (PyObject *)m;
}

/* view[off:off + len] */
static PyObject *view_range(PyObject *view, uint64_t off, uint64_t len)
{
    PyObject *start = PyLong_FromUnsignedLongLong(off);
    PyObject *stop = PyLong_FromUnsignedLongLong(off + len);
    PyObject *slice = start && stop ? PySlice_New(start, stop, NULL) : NULL;
    PyObject *ret = slice ? PyObject_GetItem(view, slice) : NULL;

    Py_XDECREF(slice);
    Py_XDECREF(stop);
    Py_XDECREF(start);
    return ret;
}

static PyObject *buffer_argument(uint64_t token, uint64_t off, uint64_t len)
{
    PyObject *whole, *view, *ret;
    int fd = take_fd(token);

    if (fd < 0)
        return PyErr_Format(PyExc_RuntimeError, "shared buffer %llu was not received",
                            (unsigned long long)token);
    whole = map_whole(fd);
    close(fd);
    if (!whole)
        return NULL;
    if (off > ((Mapping *)whole)->size || len > ((Mapping *)whole)->size - off) {
        Py_DECREF(whole);
        return PyErr_Format(PyExc_ValueError, "range outside the shared buffer");
    }
    view = PyMemoryView_FromObject(whole); /* new ref; holds whole */
    Py_DECREF(whole);
    if (!view)
        return NULL;
    ret = view_range(view, off, len);
    Py_DECREF(view);
    return ret;
}

int worker_buffers_init(int fd)
{
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    if (PyType_Ready(&mapping_type) < 0)
        return -1;
    sock = fd;
    pyproc_unpack_set_buffer_hook(buffer_argument);
    return 0;
}
