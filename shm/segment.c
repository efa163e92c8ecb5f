#include "segment.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(sizeof(struct shm_seg_header) <= SHM_SEG_DATA_OFFSET,
              "the segment header fits before the ring data");
static_assert(SHM_SEG_DATA_OFFSET % 64 == 0, "ring data starts on a cache line");

static bool ring_bytes_ok(uint64_t n)
{
    return n >= SHM_RING_MIN_BYTES && n <= SHM_RING_MAX_BYTES && (n & (n - 1)) == 0;
}

static uint64_t seg_total(uint64_t ring_bytes)
{
    return SHM_SEG_DATA_OFFSET + 2 * ring_bytes;
}

/*
 * Fill the view of a mapped segment whose header has been checked.  The
 * ring size comes from the mapping's size, which the peer cannot change,
 * rather than from the header, which it can.
 */
static void seg_view(struct shm_seg *s, int fd, void *base, size_t size)
{
    s->fd = fd;
    s->base = base;
    s->size = size;
    s->hdr = base;
    s->request_data = s->base + SHM_SEG_DATA_OFFSET;
    s->reply_data = s->request_data + (size - SHM_SEG_DATA_OFFSET) / 2;
}

int shm_seg_create(struct shm_seg *s, uint64_t ring_bytes, uint32_t index, uint64_t max_msg_bytes)
{
    uint64_t total = seg_total(ring_bytes);
    struct shm_seg_header *h;
    void *base;
    int fd, err;

    if (!s || !ring_bytes_ok(ring_bytes) || max_msg_bytes == 0)
        return -EINVAL;

    fd = memfd_create("pyproc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)total) < 0)
        goto fail;
    /* The worker holds the fd too: neither side may resize under the other. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail;
    /* Populated: the rings' pages exist from the start, so no page fault
     * lands on a call's path and resident memory does not creep up as the
     * rings wrap for the first time. */
    base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (base == MAP_FAILED)
        goto fail;

    /* A fresh memfd reads as zeros, which is the initial state of both rings. */
    h = base;
    h->magic = SHM_SEG_MAGIC;
    h->version = SHM_SEG_VERSION;
    h->index = index;
    h->ring_bytes = ring_bytes;
    h->total_bytes = total;
    h->max_msg_bytes = max_msg_bytes;
    h->creator_pid = (int32_t)getpid();
    seg_view(s, fd, base, total);
    return 0;

fail:
    err = -errno;
    close(fd);
    return err;
}

/* Check a mapped header against the fd's real size and the caller's word. */
static bool seg_header_ok(const struct shm_seg_header *h, uint64_t size, pid_t creator,
                          uint32_t index)
{
    return h->magic == SHM_SEG_MAGIC && h->version == SHM_SEG_VERSION &&
           h->creator_pid == (int32_t)creator && h->index == index &&
           ring_bytes_ok(h->ring_bytes) && h->max_msg_bytes != 0 && h->total_bytes == size &&
           h->total_bytes == seg_total(h->ring_bytes);
}

int shm_seg_map(struct shm_seg *s, int fd, pid_t creator, uint32_t index)
{
    struct stat st;
    int seals;
    void *base;

    if (!s || fd < 0)
        return -EINVAL;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_size < (off_t)SHM_SEG_DATA_OFFSET ||
        (uint64_t)st.st_size > seg_total(SHM_RING_MAX_BYTES))
        return -EPROTO;
    /* Without this seal the peer could shrink the file and fault our reads. */
    seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return -EPROTO;

    base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (base == MAP_FAILED)
        return -errno;
    if (!seg_header_ok(base, (uint64_t)st.st_size, creator, index)) {
        munmap(base, (size_t)st.st_size);
        return -EPROTO;
    }
    seg_view(s, fd, base, (size_t)st.st_size);
    return 0;
}

uint64_t shm_seg_stop_post(struct shm_seg_header *h, unsigned slot, uint64_t id, uint32_t why)
{
    struct shm_stop *e = &h->stops[slot];
    uint64_t seq;

    assert(slot < SHM_STOP_SLOTS && id != 0);
    atomic_store_explicit(&e->why, why, memory_order_relaxed);
    /* Pairs with the acquire load in shm_seg_stop_lookup(): the reason is
     * there before the id that makes the entry count. */
    atomic_store_explicit(&e->call, id, memory_order_release);
    /* Pairs with the worker's acquire load of stop_seq: a worker that sees
     * the new value finds this entry in its scan. */
    seq = atomic_fetch_add_explicit(&h->stop_seq, 1, memory_order_release) + 1;
    /* Pairs with the fence the worker puts between its store of
     * running_call and its look-up of that id: either it finds this entry,
     * or our caller's load of running_call sees the id and signals. */
    atomic_thread_fence(memory_order_seq_cst);
    return seq;
}

void shm_seg_stop_clear(struct shm_seg_header *h, unsigned slot)
{
    assert(slot < SHM_STOP_SLOTS);
    atomic_store_explicit(&h->stops[slot].call, 0, memory_order_relaxed);
    /* Pairs with the acquire fence in shm_seg_stop_lookup(): a reader that
     * sees a reason stored after this point also sees this 0 when it
     * looks at the id again. */
    atomic_thread_fence(memory_order_release);
}

uint64_t shm_seg_stop_seen(const struct shm_seg_header *h)
{
    /* Pairs with the release store in the worker's stop scan. */
    return atomic_load_explicit(&h->stop_seen, memory_order_acquire);
}

uint32_t shm_seg_stop_lookup(const struct shm_seg_header *h, uint64_t id)
{
    if (id == 0)
        return 0;
    for (unsigned i = 0; i < SHM_STOP_SLOTS; i++) {
        const struct shm_stop *e = &h->stops[i];
        /* Pairs with the release store in shm_seg_stop_post(). */
        if (atomic_load_explicit(&e->call, memory_order_acquire) != id)
            continue;
        uint32_t why = atomic_load_explicit(&e->why, memory_order_relaxed);
        /* Pairs with the release fence in shm_seg_stop_clear(): if the
         * slot was freed and reused meanwhile, the id reads differently. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->call, memory_order_relaxed) == id)
            return why ? why : SHM_INTERRUPT_CANCEL;
    }
    return 0;
}

void shm_seg_release(struct shm_seg *s)
{
    if (!s)
        return;
    /* Only a mapped segment owns its fd: a zeroed one holds fd 0 by accident. */
    if (s->base) {
        munmap(s->base, s->size);
        close(s->fd);
    }
    *s = (struct shm_seg){.fd = -1};
}
