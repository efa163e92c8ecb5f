/*
 * A growable byte buffer with a size limit, for encoding messages before
 * they go into a ring.  Both the host and the worker use it.
 */
#ifndef PYPROC_SHM_BUF_H
#define PYPROC_SHM_BUF_H

#include <stddef.h>
#include <stdint.h>

struct shm_buf {
    char *data;
    size_t len;   /* bytes written */
    size_t cap;   /* bytes allocated */
    size_t limit; /* len may never exceed this; 0 means SIZE_MAX */
};

/*
 * Make room for n more bytes and return where they go, or NULL when the
 * limit would be passed (*err = -EMSGSIZE) or memory ran out (-ENOMEM).
 * The caller advances len itself after writing.
 */
char *shm_buf_reserve(struct shm_buf *b, size_t n, int *err);

/* Append n bytes.  Returns 0, -EMSGSIZE or -ENOMEM. */
int shm_buf_append(struct shm_buf *b, const void *p, size_t n);

/* Forget the contents, keep the allocation. */
static inline void shm_buf_reset(struct shm_buf *b)
{
    b->len = 0;
}

/* Free the allocation.  The buffer may be used again afterwards. */
void shm_buf_free(struct shm_buf *b);

#endif
