#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char *shm_buf_reserve(struct shm_buf *b, size_t n, int *err)
{
    size_t limit = b->limit ? b->limit : SIZE_MAX;

    if (n > limit || b->len > limit - n) {
        *err = -EMSGSIZE;
        return NULL;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            *err = -ENOMEM;
            return NULL;
        }
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

int shm_buf_append(struct shm_buf *b, const void *p, size_t n)
{
    int err = 0;
    char *w = shm_buf_reserve(b, n, &err);

    if (!w)
        return err;
    if (n)
        memcpy(w, p, n);
    b->len += n;
    return 0;
}

void shm_buf_free(struct shm_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
