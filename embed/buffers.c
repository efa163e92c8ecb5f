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
 *
 * The other way, pyproc.buffer(n) makes a new buffer here (a memfd sealed
 * against shrinking and growing before anyone else sees it, as the host
 * demands).  Every mapping, ours or the host's, keeps its fd and is listed
 * while it lives, so that a value packed for the host that lies inside
 * one (the mapping, a memoryview of it, a numpy array over it) travels as
 * a reference: the fd goes to the host on the socket with a token, then
 * the reply names the token, an offset and a length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../shm/be64.h"
#include "../shm/fdpass.h"
#include "convert.h"
#include "buffers.h"
#include "worker.h"

#define PENDING_MAX 64

static int sock = -1;
static struct {
    uint64_t token, buf_id;
    int fd;
} pending[PENDING_MAX];
static int npending;

/*
 * The host's buffers this worker has mapped, kept mapped across calls (a
 * buffer passed again costs neither a mapping nor page faults) until the
 * host frees it (FORGET) or, should that note be lost, until CACHE_MAX
 * newer ones push the least recently used out.  Each call still brings
 * its fd, so a mapping dropped here is simply made again.
 */
#define CACHE_MAX 64
static int cache_max = CACHE_MAX; /* fewer under a tight fd limit: each keeps its fd */
static struct {
    uint64_t buf_id, used;
    PyObject *mapping; /* a Mapping, one reference */
} cache[CACHE_MAX];
static int ncache;
static uint64_t cache_clock;

/* ---- the mapping object ---- */

typedef struct {
    PyObject_HEAD
    void *data;
    size_t size;
    int fd; /* kept, to send the host when a value names this memory */
} Mapping;

/* Every live mapping, for the packer's question "is this memory ours?". */
static Mapping **live;
static size_t nlive, live_cap;

static int live_add(Mapping *m)
{
    if (nlive == live_cap) {
        size_t cap = live_cap ? 2 * live_cap : 16;
        Mapping **l = PyMem_Realloc(live, cap * sizeof *l);
        if (!l)
            return -1;
        live = l;
        live_cap = cap;
    }
    live[nlive++] = m;
    return 0;
}

static void live_remove(Mapping *m)
{
    for (size_t i = 0; i < nlive; i++) {
        if (live[i] == m) {
            live[i] = live[--nlive];
            return;
        }
    }
}

static int mapping_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    Mapping *m = (Mapping *)self;
    return PyBuffer_FillInfo(view, self, m->data, (Py_ssize_t)m->size, 0, flags);
}

static void mapping_dealloc(PyObject *self)
{
    Mapping *m = (Mapping *)self;
    live_remove(m);
    munmap(m->data, m->size);
    close(m->fd);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs mapping_as_buffer = {.bf_getbuffer = mapping_getbuffer};

static PyTypeObject mapping_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyproc.SharedMapping",
    .tp_basicsize = sizeof(Mapping),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc =
        "A shared buffer mapped into this worker (pyproc.buffer() makes one).\n\n"
        "It exports its memory with the buffer protocol: memoryview(b),\n"
        "numpy.frombuffer(b, dtype).  Returned to the host, it and any view\n"
        "of it travel as a reference, not as bytes.",
    .tp_dealloc = mapping_dealloc,
    .tp_as_buffer = &mapping_as_buffer,
};

/* ---- fds from the host ---- */

/* One datagram from the socket into the table; 0, or -1 when none waits. */
static int receive_one(void)
{
    unsigned char body[16];
    int fd, r = shm_fd_recv(sock, body, sizeof body, &fd);

    if (r == -EBADMSG)
        return 0; /* not what the host sends: dropped */
    if (r <= 0)
        return -1;
    if (npending == PENDING_MAX) {
        close(pending[0].fd);
        memmove(pending, pending + 1, (PENDING_MAX - 1) * sizeof pending[0]);
        npending--;
    }
    pending[npending].token = shm_be64_get(body);
    pending[npending].buf_id = shm_be64_get(body + 8);
    pending[npending++].fd = fd;
    return 0;
}

/* The fd sent with token, and its buffer's number, taken out of the
 * table; -1 if it never came. */
static int take_fd(uint64_t token, uint64_t *buf_id)
{
    for (;;) {
        for (int i = 0; i < npending; i++) {
            if (pending[i].token == token) {
                int fd = pending[i].fd;
                *buf_id = pending[i].buf_id;
                pending[i] = pending[--npending];
                return fd;
            }
        }
        if (receive_one() < 0)
            return -1;
    }
}

/* ---- the argument ---- */

/* A mapping of the whole of fd, which it takes over (closed on failure). */
static PyObject *map_whole(int fd)
{
    struct stat st;
    void *data;
    Mapping *m;

    if (fstat(fd, &st) < 0 || st.st_size <= 0) {
        close(fd);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* Not populated: a function that reads a few bytes of a large buffer
     * pays for those pages only (MAP_POPULATE made a 16 MiB argument cost
     * 4 ms instead of 80 us on this path). */
    data = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED) {
        close(fd);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    m = PyObject_New(Mapping, &mapping_type);
    if (!m || live_add(m) < 0) {
        if (m) {
            m->data = NULL; /* not listed: dealloc must not unmap twice */
            PyObject_Free(m);
        }
        munmap(data, (size_t)st.st_size);
        close(fd);
        return PyErr_NoMemory();
    }
    m->data = data;
    m->size = (size_t)st.st_size;
    m->fd = fd;
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

/* The kept mapping of buf_id, a new reference; NULL if none. */
static PyObject *cache_get(uint64_t buf_id)
{
    for (int i = 0; i < ncache; i++) {
        if (cache[i].buf_id == buf_id) {
            cache[i].used = ++cache_clock;
            return Py_NewRef(cache[i].mapping);
        }
    }
    return NULL;
}

static void cache_put(uint64_t buf_id, PyObject *mapping)
{
    int slot = ncache;

    if (ncache == cache_max) { /* the least recently used goes */
        slot = 0;
        for (int i = 1; i < ncache; i++)
            if (cache[i].used < cache[slot].used)
                slot = i;
        Py_DECREF(cache[slot].mapping);
    } else {
        ncache++;
    }
    cache[slot].buf_id = buf_id;
    cache[slot].used = ++cache_clock;
    cache[slot].mapping = Py_NewRef(mapping);
}

void worker_buffers_forget(uint64_t buf_id)
{
    for (int i = 0; i < ncache; i++) {
        if (cache[i].buf_id == buf_id) {
            PyObject *m = cache[i].mapping;
            cache[i] = cache[--ncache];
            Py_DECREF(m);
            return;
        }
    }
}

static PyObject *buffer_argument(uint64_t token, uint64_t off, uint64_t len)
{
    PyObject *whole, *view, *ret;
    uint64_t buf_id = 0;
    int fd = take_fd(token, &buf_id);

    if (fd < 0)
        return PyErr_Format(PyExc_RuntimeError, "shared buffer %llu was not received",
                            (unsigned long long)token);
    whole = cache_get(buf_id);
    if (whole) {
        close(fd); /* mapped already */
    } else {
        whole = map_whole(fd);
        if (!whole)
            return NULL;
        cache_put(buf_id, whole);
    }
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

/* ---- pyproc.buffer(n) ---- */

static PyObject *py_buffer(PyObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    int fd;

    (void)self;
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n <= 0)
        return PyErr_Format(PyExc_ValueError, "a buffer needs at least one byte, not %zd", n);
    fd = memfd_create("pyproc-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* Sealed before the host can see it: it maps only what cannot shrink. */
    if (ftruncate(fd, (off_t)n) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return NULL;
    }
    return map_whole(fd);
}

static PyMethodDef buffer_methods[] = {
    {"buffer", py_buffer, METH_O, "buffer(nbytes): a new shared buffer, zero-filled."},
    {NULL, NULL, 0, NULL},
};

/* ---- values for the host ---- */

static int send_fd(uint64_t token, int fd)
{
    unsigned char tok[8];

    shm_be64_put(tok, token);
    /* Waits while the host's socket is full: the host takes these fds as
     * it reads the replies that name them. */
    return shm_fd_send(sock, tok, sizeof tok, fd, true);
}

static Mapping *mapping_holding(const char *p, size_t len)
{
    for (size_t i = 0; i < nlive; i++) {
        const char *start = live[i]->data;
        if (p >= start && len <= live[i]->size && (size_t)(p - start) <= live[i]->size - len)
            return live[i];
    }
    return NULL;
}

/* o's memory lies in one of our mappings: send its fd and write the
 * reference.  1 when it did, 0 when o is other memory, -1 on error. */
static int pack_reference(struct shm_buf *b, PyObject *o)
{
    static uint64_t next_token = 1;
    Py_buffer view;
    Mapping *m;
    int ret = 0;

    if (PyObject_GetBuffer(o, &view, PyBUF_ANY_CONTIGUOUS) < 0) {
        PyErr_Clear(); /* not one contiguous block: not a reference */
        return 0;
    }
    m = mapping_holding(view.buf, (size_t)view.len);
    if (m) {
        uint64_t token = next_token++,
                 v[3] = {token, (uint64_t)((char *)view.buf - (char *)m->data), (uint64_t)view.len};
        char *w = shm_buf_reserve(b, 27, &ret);
        if (!w) {
            PyErr_NoMemory();
            ret = -1;
        } else if ((ret = send_fd(token, m->fd)) < 0) {
            errno = -ret;
            PyErr_SetFromErrno(PyExc_OSError);
            ret = -1;
        } else {
            *w++ = (char)0xc7, *w++ = 24, *w++ = 0x42;
            for (int k = 0; k < 3; k++)
                shm_be64_put(w + 8 * k, v[k]);
            b->len += 27;
            ret = 1;
        }
    }
    PyBuffer_Release(&view);
    return ret;
}

int worker_buffers_register(PyObject *module)
{
    if (PyModule_AddType(module, &mapping_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, buffer_methods);
}

int worker_buffers_init(int fd)
{
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    sock = fd;
    /* A kept mapping keeps its fd: under the pool's max_fds, keep no more
     * than a quarter of them, so Python code has the rest. */
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
        r.rlim_cur / 4 < CACHE_MAX)
        cache_max = r.rlim_cur / 4 > 0 ? (int)(r.rlim_cur / 4) : 1;
    pyproc_unpack_set_buffer_hook(buffer_argument);
    pyproc_pack_set_reference_hook(pack_reference);
    return 0;
}
