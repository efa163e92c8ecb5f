/*
 * msgpack validation without decoding (see mpvalid.h).
 *
 * Every first byte of a msgpack value says how long its head is, and
 * whether a body of stated length (str, bin, ext) or a number of nested
 * values (array, map) follows.  head_of() turns the first byte and the
 * length bytes after it into those three numbers; shm_mp_next() walks.
 */
#include "mpvalid.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

/* What one value's head says. */
struct mp_head {
    size_t head;     /* bytes of the head itself, first byte included */
    uint64_t body;   /* bytes that follow the head and belong to it */
    uint64_t nested; /* values that follow it and belong to it */
};

/* The big-endian unsigned integer of n (1, 2 or 4) bytes at p. */
static uint64_t load_be(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * Heads whose size depends on a length field of `lenb` bytes (1, 2 or 4)
 * right after the first byte; `extra` bytes of head follow the length
 * (the type byte of an ext).  false when the head does not fit.
 */
static bool sized(const unsigned char *s, size_t left, unsigned lenb, unsigned extra,
                  struct mp_head *h)
{
    if (left < 1 + (size_t)lenb + extra)
        return false;
    h->head = 1 + lenb + extra;
    h->body = load_be(s + 1, lenb);
    return true;
}

/* Decode the head at s (left > 0 bytes there).  false for 0xc1 or a
 * head cut short. */
static bool head_of(const unsigned char *s, size_t left, struct mp_head *h)
{
    unsigned char c = s[0];

    *h = (struct mp_head){.head = 1};
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return true; /* fixint, nil, bool */
    if (c <= 0x8f) {
        h->nested = 2 * (uint64_t)(c & 0x0f); /* fixmap */
        return true;
    }
    if (c <= 0x9f) {
        h->nested = c & 0x0f; /* fixarray */
        return true;
    }
    if (c <= 0xbf) {
        h->body = c & 0x1f; /* fixstr */
        return true;
    }
    switch (c) {
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
        return sized(s, left, 1u << (c - 0xc4), 0, h);
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32: length, type, body */
        return sized(s, left, 1u << (c - 0xc7), 1, h);
    case 0xca:
    case 0xcb: /* float 32/64 */
        h->head = c == 0xca ? 5 : 9;
        return left >= h->head;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: /* uint 8..64 */
        h->head = 1 + (1u << (c - 0xcc));
        return left >= h->head;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: /* int 8..64 */
        h->head = 1 + (1u << (c - 0xd0));
        return left >= h->head;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: /* fixext */
        h->head = 2;
        h->body = 1u << (c - 0xd4);
        return left >= h->head;
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8/16/32 */
        return sized(s, left, 1u << (c - 0xd9), 0, h);
    case 0xdc:
    case 0xdd: /* array 16/32 */
        if (!sized(s, left, c == 0xdc ? 2 : 4, 0, h))
            return false;
        h->nested = h->body;
        h->body = 0;
        return true;
    case 0xde:
    case 0xdf: /* map 16/32 */
        if (!sized(s, left, c == 0xde ? 2 : 4, 0, h))
            return false;
        h->nested = 2 * h->body;
        h->body = 0;
        return true;
    }
    return false; /* 0xc1: never used */
}

int shm_mp_next(const char **p, const char *end)
{
    const unsigned char *s = (const unsigned char *)*p, *e = (const unsigned char *)end;
    size_t pending = 1;
    struct mp_head h;

    if (!s || s > e)
        return -EBADMSG;
    while (pending) {
        size_t left = (size_t)(e - s);
        if (left == 0 || !head_of(s, left, &h))
            return -EBADMSG;
        left -= h.head;
        if (h.body > left)
            return -EBADMSG;
        s += h.head + h.body;
        left -= (size_t)h.body;
        pending--;
        /* Each pending value needs a byte: more than are left is a lie. */
        if (h.nested > left || pending > left - h.nested)
            return -EBADMSG;
        pending += (size_t)h.nested;
    }
    *p = (const char *)s;
    return 0;
}

int shm_mp_check(const void *data, size_t len)
{
    const char *p = data;

    if (!data || len == 0)
        return -EBADMSG;
    if (shm_mp_next(&p, p + len) < 0 || p != (const char *)data + len)
        return -EBADMSG;
    return 0;
}
