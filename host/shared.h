/*
 * Shared buffers (pyproc_buf): memory a call hands to a worker by
 * reference, not by copy.
 *
 * A buffer is a memfd, mapped here, sealed against shrinking and growing
 * before any worker sees it, so that no worker can pull pages from under
 * our mapping (touching them would kill the host with SIGBUS).  A call
 * that passes one sends the worker the fd itself (over the worker's
 * socket, SCM_RIGHTS) with a token, and the argument in the frame names
 * that token; the worker maps the fd for as long as its Python objects use
 * it.  Memory goes back to the system when the last fd and mapping are
 * gone, in whichever process: the kernel keeps that count, so a worker
 * that dies drops its references with everything else it held.
 *
 * Floor 0 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_SHARED_H
#define PYPROC_HOST_SHARED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pyproc.h"

struct pyproc_buf {
    /* References: the application's (each pyproc_buf_new(), each 'B' read
     * of a message) and each message holding it.  A new one is taken from
     * one held (relaxed); the decrement is acq_rel so that the last one,
     * which unmaps, sees every other holder's writes. */
    _Atomic int refs;
    int fd;
    void *data;
    size_t size;
    /* Constant: this buffer's number (workers keep their mapping of it
     * under it until told to forget it), and its pool's. */
    uint64_t id, pool_id;
    struct pyproc_buf *next_live; /* in the live set, under its lock */
};

/* The most buffers one call may pass. */
#define PYPROC__MAX_ATTACH 16

/* The buffers an encoded call passes, each with the token that names it
 * in the frame. */
struct pyproc__attach {
    uint64_t pool_id; /* the pool of the call: its buffers must be its own */
    int n;
    pyproc_buf *buf[PYPROC__MAX_ATTACH];
    uint64_t token[PYPROC__MAX_ATTACH];
};

/* msgpack ext type of a buffer argument: token, offset and length, each a
 * big-endian uint64. */
#define PYPROC__EXT_BUF 0x42
#define PYPROC__EXT_BUF_LEN 24

/* A new sealed buffer of size bytes for pool pool_id, one reference;
 * -EINVAL, -ENOMEM, or an errno of memfd_create(), ftruncate() or mmap(). */
int pyproc__buf_create(uint64_t pool_id, size_t size, pyproc_buf **ret);
/* Whether b is a buffer that lives (not freed, not made up): its address
 * is compared, never followed. */
bool pyproc__buf_alive(const pyproc_buf *b);
/*
 * Who tells a pool's workers that a buffer is gone, so that they drop
 * their mapping of it: set once by the first pool (pool.c), called by the
 * last pyproc_buf_free() with the buffer's pool and number.
 */
void pyproc__buf_set_forget(void (*forget)(uint64_t pool_id, uint64_t buf_id));
/*
 * A buffer a worker made, from the fd it sent (taken over on success),
 * checked before it is mapped: sealed against shrinking, and holding the
 * range [off, off + len).  -EBADF when it is not, -ENOMEM, or mmap()'s
 * errno.
 */
int pyproc__buf_adopt(uint64_t pool_id, int fd, uint64_t off, uint64_t len, pyproc_buf **ret);
/* One more reference to b. */
void pyproc__buf_ref(pyproc_buf *b);
/* A token no other send of this process has used. */
uint64_t pyproc__buf_token(void);

#endif
