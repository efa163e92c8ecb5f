/*
 * Shared buffers: making one, its memory, its references (see shared.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include "shared.h"

/*
 * Every live buffer, hashed by address, so that a call naming a buffer
 * that was freed (or never made) is refused rather than followed.  One
 * lock for all: taken once per buffer made, freed, or passed.
 */
#define LIVE_BUCKETS 1024
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pyproc_buf *live[LIVE_BUCKETS];

static size_t bucket(const pyproc_buf *b)
{
    return ((uintptr_t)b >> 4) % LIVE_BUCKETS;
}

static void live_add(pyproc_buf *b)
{
    pthread_mutex_lock(&live_lock);
    b->next_live = live[bucket(b)];
    live[bucket(b)] = b;
    pthread_mutex_unlock(&live_lock);
}

static void live_remove(pyproc_buf *b)
{
    pthread_mutex_lock(&live_lock);
    for (pyproc_buf **p = &live[bucket(b)]; *p; p = &(*p)->next_live) {
        if (*p == b) {
            *p = b->next_live;
            break;
        }
    }
    pthread_mutex_unlock(&live_lock);
}

bool pyproc__buf_alive(const pyproc_buf *b)
{
    bool found = false;

    pthread_mutex_lock(&live_lock);
    for (const pyproc_buf *q = live[bucket(b)]; q && !found; q = q->next_live)
        found = q == b;
    pthread_mutex_unlock(&live_lock);
    return found;
}

/* Set once, before any buffer exists (the first pyproc_pool_new()). */
static void (*_Atomic forget_fn)(uint64_t pool_id, uint64_t buf_id);

void pyproc__buf_set_forget(void (*forget)(uint64_t pool_id, uint64_t buf_id))
{
    /* Release: pairs with the acquire load in pyproc_buf_free(). */
    atomic_store_explicit(&forget_fn, forget, memory_order_release);
}

static uint64_t next_id(void)
{
    static _Atomic uint64_t next = 1;

    /* Only uniqueness matters: relaxed. */
    return atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
}

uint64_t pyproc__buf_token(void)
{
    return next_id();
}

int pyproc__buf_create(uint64_t pool_id, size_t size, pyproc_buf **ret)
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
    b->id = next_id();
    b->pool_id = pool_id;
    atomic_init(&b->refs, 1);
    live_add(b);
    *ret = b;
    return 0;
fail:
    err = -errno;
    if (b->fd >= 0)
        close(b->fd);
    free(b);
    return err;
}

int pyproc__buf_adopt(uint64_t pool_id, int fd, uint64_t off, uint64_t len, pyproc_buf **ret)
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
    b->id = next_id();
    b->pool_id = pool_id;
    atomic_init(&b->refs, 1);
    live_add(b);
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
    void (*forget)(uint64_t, uint64_t);

    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    live_remove(b);
    /* Workers that mapped it keep the mapping for the next call that
     * passes it, until told it is gone. */
    forget = atomic_load_explicit(&forget_fn, memory_order_acquire);
    if (forget)
        forget(b->pool_id, b->id);
    munmap(b->data, b->size);
    close(b->fd);
    free(b);
}
