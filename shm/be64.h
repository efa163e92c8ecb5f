/*
 * Big-endian 64-bit numbers in byte buffers: the order msgpack uses, and
 * the one the shared buffers' ext values and socket datagrams use too.
 */
#ifndef PYPROC_SHM_BE64_H
#define PYPROC_SHM_BE64_H

#include <stdint.h>

static inline void shm_be64_put(void *p, uint64_t v)
{
    unsigned char *b = p;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (56 - 8 * i));
}

static inline uint64_t shm_be64_get(const void *p)
{
    const unsigned char *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

#endif
