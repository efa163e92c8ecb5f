/*
 * Shared buffers: making one, its memory, its references (see shared.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared.h"

uint64_t pyproc__buf_token(void)
{
    static _Atomic uint64_t next = 1;

    /* Only uniqueness matters: relaxed. */
    return atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
}

int pyproc__buf_create(size_t size, pyproc_buf **ret)
{
    pyproc_buf *b;
    int err;

    if (!ret || size == 0 || size > (size_t)PTRDIFF_MAX)
        return -EINVAL;
    b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->fd = memfd_create("pyproc-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (b->fd < 0)
        goto fail;
    /* Sized, then sealed before anyone else can have the fd: no worker
     * can shrink it under our mapping, or grow it to fill the machine. */
    if (ftruncate(b->fd, (off_t)size) < 0 ||
        fcntl(b->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail;
    b->data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
    if (b->data == MAP_FAILED)
        goto fail;
    b->size = size;
    atomic_init(&b->refs, 1);
    *ret = b;
    return 0;
fail:
    err = -errno;
    if (b->fd >= 0)
        close(b->fd);
    free(b);
    return err;
}

int pyproc__buf_adopt(int fd, uint64_t off, uint64_t len, pyproc_buf **ret)
{
    struct stat st;
    pyproc_buf *b;
    int seals = fcntl(fd, F_GET_SEALS);

    /* Sealed against shrinking, or the sender could take pages from
     * under our mapping and kill us with SIGBUS when we touch them. */
    if (seals < 0 || !(seals & F_SEAL_SHRINK) || fstat(fd, &st) < 0 || st.st_size <= 0 ||
        off > (uint64_t)st.st_size || len > (uint64_t)st.st_size - off)
        return -EBADF;
    b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->data = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (b->data == MAP_FAILED) {
        int err = -errno;
        free(b);
        return err;
    }
    b->fd = fd;
    b->size = (size_t)st.st_size;
    atomic_init(&b->refs, 1);
    *ret = b;
    return 0;
}

void pyproc__buf_ref(pyproc_buf *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

PYPROC_EXPORT void *pyproc_buf_data(pyproc_buf *b)
{
    return b ? b->data : NULL;
}

PYPROC_EXPORT size_t pyproc_buf_size(pyproc_buf *b)
{
    return b ? b->size : 0;
}

PYPROC_EXPORT void pyproc_buf_free(pyproc_buf *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    munmap(b->data, b->size);
    close(b->fd);
    free(b);
}
