/*
 * Messages: building them from a format, reading them back, walking values
 * of unknown shape, and checking msgpack that comes from outside.
 *
 * A message's bytes never change after it is made, so any number of
 * threads may read one at once.  The two things reads add to a message,
 * the string copies that 's' hands out and the position pyproc_msg_at()
 * last reached, are published with atomics (see below).
 */
#define MP_SOURCE 1 /* msgpuck's out-of-line definitions live here */

#include "msg.h"

#include <limits.h>
#include <msgpuck.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/be64.h"
#include "../shm/mpvalid.h"
#include "fmt.h"
#include "freelist.h"
#include "shared.h"

/*
 * A NUL-terminated copy of one str value, made by the first 's' read of it
 * and freed with the message.  Nodes are pushed onto msg->strs with a
 * release CAS (msg_str()), which pairs with the acquire load that starts
 * each search, so a reader that finds a node sees its bytes.  Nodes never
 * leave the list before the message is freed.
 */
struct msg_str {
    struct msg_str *next;
    size_t off; /* where the str's bytes start in the message's data */
    char s[];
};

struct pyproc_msg {
    char *data; /* the encoding; NULL for an error message */
    size_t len;
    char *error; /* the text of an error message, else NULL */
    _Atomic(struct msg_str *) strs;
    /*
     * Where pyproc_msg_at() last found an item: its index in the top 32
     * bits, its offset in the low 32 (0: nothing yet).  Lets a walk over
     * every item cost linear time.  Any thread's value is right, because
     * the data never changes, so relaxed order is enough.
     */
    _Atomic uint64_t at_hint;
    pyproc_msg *link; /* the next item of a stream's queue (host/stream.c) */
    /* The shared buffers its value names, by index (see below); NULL for
     * a value without any.  Shared with the messages pyproc_msg_at()
     * makes of its parts. */
    struct msg_bufs *bufs;
    /* The block it lives in (see below), or NULL: a message of its own. */
    struct pyproc__msg_block *block;
    /* Its memory is a block of the free list (freelist.h), MSG_SMALL bytes
     * inline, which pyproc_msg_free() puts back. */
    bool small;
    char inl[]; /* data or error text, unless data was adopted */
};

/* Inline bytes of a message from the free list: a small answer (a
 * number, a short string or list) or error text fits, and a message of
 * either size is one allocation. */
#define MSG_SMALL 64
#define MSG_SMALL_SIZE (sizeof(struct pyproc_msg) + MSG_SMALL)

/*
 * Messages made in bulk (msg.h).  The maker fills msgs from the front,
 * alone; refs starts at n + 1, one for each message the block may give
 * out and one for the maker, which at the end also returns those of the
 * messages it did not make.  A message is freed by dropping one; the
 * last drop (acq_rel, as every count here) frees the block.
 */
struct pyproc__msg_block {
    _Atomic size_t refs;
    uint32_t n, used;
    char *bytes;
    _Alignas(pyproc_msg) char msgs[]; /* n of sizeof(pyproc_msg), then the bytes */
};

/*
 * A value's shared buffers.  In the data a buffer is an ext 8 of type
 * PYPROC__EXT_BUF whose 24 bytes hold an index into this set (the
 * worker's token is replaced when the buffer is taken in, see
 * pyproc__msg_take_buffers()), an offset and a length.  Immutable once
 * made; refs counts the messages that share it (acq_rel decrement, as
 * every count here).
 */
struct msg_bufs {
    _Atomic int refs;
    uint32_t n;
    pyproc_buf *buf[];
};

static void bufs_unref(struct msg_bufs *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < b->n; i++)
        pyproc_buf_free(b->buf[i]);
    free(b);
}

static struct msg_bufs *bufs_ref(struct msg_bufs *b)
{
    if (b)
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

pyproc_msg **pyproc__msg_link(pyproc_msg *m)
{
    return &m->link;
}

/* ---- msgpack, read with every length checked ---- */

/* The head of one value: a whole scalar, or a str/bin/ext with its bytes,
 * or the header of a list/map. */
struct mp_item {
    int type;         /* enum pyproc_type */
    int64_t i;        /* PYPROC_INT; 0 or 1 for PYPROC_BOOL */
    uint64_t u;       /* PYPROC_UINT, and PYPROC_INT when not negative */
    double d;         /* PYPROC_FLOAT */
    uint32_t n;       /* items of a list, pairs of a map, bytes otherwise */
    const char *body; /* the bytes of a str, bin or ext */
};

/* Check that n body bytes follow *p and step over them. */
static int mp_body(const char **p, const char *end, struct mp_item *it, uint32_t n)
{
    if (n > (size_t)(end - *p))
        return -EBADMSG;
    it->n = n;
    it->body = *p;
    *p += n;
    return 0;
}

/*
 * fixext 1..16 (0xd4..0xd8): first byte, type byte, body.  ext 8/16/32
 * (0xc7..0xc9): first byte, 1, 2 or 4 length bytes, type byte, body.
 */
static int mp_ext(const char **p, const char *end, struct mp_item *it)
{
    unsigned char c = (unsigned char)**p;
    const char *q = *p + 1;
    size_t left = (size_t)(end - *p);
    uint32_t n;

    it->type = PYPROC_EXT;
    if (c >= 0xd4 && c <= 0xd8) {
        if (left < 2)
            return -EBADMSG;
        *p += 2;
        return mp_body(p, end, it, 1u << (c - 0xd4));
    }
    if (c < 0xc7 || c > 0xc9 || left < 2 + (1u << (c - 0xc7)))
        return -EBADMSG; /* 0xc1 is never used */
    if (c == 0xc7)
        n = mp_load_u8(&q);
    else if (c == 0xc8)
        n = mp_load_u16(&q);
    else
        n = mp_load_u32(&q);
    if (c == 0xc7 && n == PYPROC__EXT_BUF_LEN && (unsigned char)*q == PYPROC__EXT_BUF)
        it->type = PYPROC_BUF;
    *p = q + 1;
    return mp_body(p, end, it, n);
}

/* Whether the fixed-size head at s fits before end; msgpuck's check
 * functions answer "bytes still missing" (> 0 means truncated). */
static bool fits(ptrdiff_t missing)
{
    return missing <= 0;
}

static int mp_number(const char **p, const char *end, struct mp_item *it)
{
    const char *s = *p;

    switch (mp_typeof(*s)) {
    case MP_UINT:
        if (!fits(mp_check_uint(s, end)))
            return -EBADMSG;
        it->u = mp_decode_uint(p);
        it->i = (int64_t)(it->u & INT64_MAX);
        it->type = it->u > INT64_MAX ? PYPROC_UINT : PYPROC_INT;
        return 0;
    case MP_INT:
        if (!fits(mp_check_int(s, end)))
            return -EBADMSG;
        it->i = mp_decode_int(p);
        it->u = (uint64_t)it->i;
        it->type = PYPROC_INT;
        return 0;
    case MP_FLOAT:
        if (!fits(mp_check_float(s, end)))
            return -EBADMSG;
        it->d = mp_decode_float(p);
        it->type = PYPROC_FLOAT;
        return 0;
    default:
        if (!fits(mp_check_double(s, end)))
            return -EBADMSG;
        it->d = mp_decode_double(p);
        it->type = PYPROC_FLOAT;
        return 0;
    }
}

/* Decode the head of the value at *p and step past it (past the bytes of
 * a str/bin/ext, but not into the items of a list/map). */
static int mp_head(const char **p, const char *end, struct mp_item *it)
{
    const char *s = *p;
    unsigned char c;

    if (s >= end)
        return -EBADMSG;
    c = (unsigned char)*s;
    switch (mp_typeof(*s)) {
    case MP_NIL:
        it->type = PYPROC_NIL;
        *p += 1;
        return 0;
    case MP_BOOL:
        it->type = PYPROC_BOOL;
        it->i = c == 0xc3;
        *p += 1;
        return 0;
    case MP_UINT:
    case MP_INT:
    case MP_FLOAT:
    case MP_DOUBLE:
        return mp_number(p, end, it);
    case MP_STR:
        if (!fits(mp_check_strl(s, end)))
            return -EBADMSG;
        it->type = PYPROC_STR;
        return mp_body(p, end, it, mp_decode_strl(p));
    case MP_BIN:
        /* bin 8/16/32: 1, 2 or 4 length bytes (msgpuck's mp_check_binl
         * asserts on a lone first byte, so count here) */
        if ((size_t)(end - s) < 1 + (1u << (c & 0x3)))
            return -EBADMSG;
        it->type = PYPROC_BYTES;
        return mp_body(p, end, it, mp_decode_binl(p));
    case MP_ARRAY:
        if (!fits(mp_check_array(s, end)))
            return -EBADMSG;
        it->type = PYPROC_LIST;
        it->n = mp_decode_array(p);
        return 0;
    case MP_MAP:
        if (!fits(mp_check_map(s, end)))
            return -EBADMSG;
        it->type = PYPROC_MAP;
        it->n = mp_decode_map(p);
        return 0;
    case MP_EXT:
        return mp_ext(p, end, it);
    }
    return -EBADMSG;
}

/* ---- making and freeing messages ---- */

static pyproc_msg *msg_alloc(size_t extra)
{
    pyproc_msg *m;

    if (extra <= MSG_SMALL) {
        m = pyproc__fl_get(PYPROC__FL_MSG, MSG_SMALL_SIZE);
    } else {
        if (extra > SIZE_MAX - sizeof(*m))
            return NULL;
        m = malloc(sizeof(*m) + extra);
    }
    if (!m)
        return NULL;
    m->small = extra <= MSG_SMALL;
    m->data = NULL;
    m->len = 0;
    m->error = NULL;
    m->bufs = NULL;
    m->block = NULL;
    atomic_init(&m->strs, NULL);
    atomic_init(&m->at_hint, 0);
    return m;
}

struct pyproc__msg_block *pyproc__msg_block_new(const void *data, size_t len, uint32_t n)
{
    struct pyproc__msg_block *k;
    size_t room = (size_t)n * sizeof(pyproc_msg);

    if (!data || len > SIZE_MAX - sizeof *k - room || !(k = malloc(sizeof *k + room + len)))
        return NULL;
    atomic_init(&k->refs, (size_t)n + 1);
    k->n = n;
    k->used = 0;
    k->bytes = k->msgs + room;
    memcpy(k->bytes, data, len);
    return k;
}

const char *pyproc__msg_block_bytes(const struct pyproc__msg_block *k)
{
    return k->bytes;
}

static void block_unref(struct pyproc__msg_block *k, size_t n)
{
    if (atomic_fetch_sub_explicit(&k->refs, n, memory_order_acq_rel) == n)
        free(k);
}

int pyproc__msg_block_take(struct pyproc__msg_block *k, const char *value, size_t len,
                           pyproc_msg **ret)
{
    pyproc_msg *m;

    if (k->used == k->n)
        return -ENOSPC;
    m = (pyproc_msg *)(void *)(k->msgs + (size_t)k->used++ * sizeof(pyproc_msg));
    m->data = (char *)value;
    m->len = len;
    m->error = NULL;
    m->bufs = NULL;
    m->block = k;
    m->small = false;
    atomic_init(&m->strs, NULL);
    atomic_init(&m->at_hint, 0);
    *ret = m;
    return 0;
}

void pyproc__msg_block_done(struct pyproc__msg_block *k)
{
    if (k)
        block_unref(k, (size_t)(k->n - k->used) + 1);
}

/* A message with a copy of len bytes that are known to be one value. */
static int msg_copy(pyproc_msg **ret, const char *data, size_t len)
{
    pyproc_msg *m = msg_alloc(len);

    if (!m)
        return -ENOMEM;
    memcpy(m->inl, data, len);
    m->data = m->inl;
    m->len = len;
    *ret = m;
    return 0;
}

/*
 * Whether one byte alone is a whole value: a fixint, nil, a bool, an
 * empty fixmap, fixarray or fixstr.  Every other byte is the head of a
 * longer value or the reserved 0xc1.  The commonest answer (None) is one,
 * checked here without a walk.
 */
static bool mp_one_byte_value(unsigned char c)
{
    return c <= 0x80 || c == 0x90 || c == 0xa0 || c == 0xc0 || c == 0xc2 || c == 0xc3 || c >= 0xe0;
}

int pyproc__msg_from_value(pyproc_msg **ret, const void *data, size_t len)
{
    pyproc_msg *m;
    int err;

    if (!ret || !data)
        return -EINVAL;
    /*
     * Copy first and check the copy: data may lie in a ring that a worker
     * can still write, and what was checked must be what is kept.
     */
    err = msg_copy(&m, data, len);
    if (err < 0)
        return err;
    if (len == 1 ? !mp_one_byte_value((unsigned char)m->data[0]) : shm_mp_check(m->data, len) < 0) {
        pyproc_msg_free(m);
        return -EBADMSG;
    }
    *ret = m;
    return 0;
}

int pyproc__msg_from_checked(pyproc_msg **ret, const void *data, size_t len)
{
    if (!ret || !data || !len)
        return -EINVAL;
    return msg_copy(ret, data, len);
}

int pyproc__msg_take_buf(pyproc_msg **ret, struct shm_buf *b)
{
    pyproc_msg *m;

    if (!ret || !b)
        return -EINVAL;
    if (!b->len)
        return -EBADMSG;
    m = msg_alloc(0);
    if (!m)
        return -ENOMEM;
    /* A buffer grows by doubling and starts at 256 bytes; give back the
     * slack of one that lives on as a message (shrinking stays in place,
     * and when it fails the larger block is as good). */
    if (b->cap / 2 > b->len) {
        char *d = realloc(b->data, b->len);
        if (d)
            b->data = d;
    }
    m->data = b->data;
    m->len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    *ret = m;
    return 0;
}

int pyproc__msg_error(pyproc_msg **ret, const char *fmt, ...)
{
    pyproc_msg *m;
    va_list ap;
    int n;

    if (!ret || !fmt)
        return -EINVAL;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    m = msg_alloc((size_t)n + 1);
    if (!m)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(m->inl, (size_t)n + 1, fmt, ap);
    va_end(ap);
    m->error = m->inl;
    *ret = m;
    return 0;
}

PYPROC_EXPORT int pyproc_msg_newv(pyproc_msg **ret, const char *fmt, va_list ap)
{
    struct shm_buf b = {0};
    struct pyproc__args a;
    struct pyproc__va va;
    int err;

    if (!ret)
        return -EINVAL;
    va_copy(va.ap, ap);
    pyproc__args_va(&a, &va);
    err = pyproc__fmt_encode_value(&b, fmt, &a);
    va_end(va.ap);
    if (err == 0)
        err = pyproc__msg_take_buf(ret, &b);
    shm_buf_free(&b);
    return err;
}

PYPROC_EXPORT int pyproc_msg_new(pyproc_msg **ret, const char *fmt, ...)
{
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = pyproc_msg_newv(ret, fmt, ap);
    va_end(ap);
    return err;
}

PYPROC_EXPORT void pyproc_msg_free(pyproc_msg *m)
{
    struct msg_str *s, *next;

    if (!m)
        return;
    for (s = atomic_load_explicit(&m->strs, memory_order_acquire); s; s = next) {
        next = s->next;
        free(s);
    }
    bufs_unref(m->bufs);
    if (m->block) {
        block_unref(m->block, 1);
        return;
    }
    if (m->data != m->inl)
        free(m->data);
    if (m->small)
        pyproc__fl_put(PYPROC__FL_MSG, m, MSG_SMALL_SIZE);
    else
        free(m);
}

PYPROC_EXPORT const void *pyproc_msg_data(pyproc_msg *m, size_t *len)
{
    if (!m || !m->data)
        return NULL;
    if (len)
        *len = m->len;
    return m->data;
}

PYPROC_EXPORT const char *pyproc_msg_error(pyproc_msg *m)
{
    return m ? m->error : NULL;
}

/* The walk of pyproc__msg_take_buffers() over a value that may name
 * buffers; out of line, so that the common case does not pay for its
 * set-up. */
__attribute__((noinline)) static int take_buffers_walk(pyproc_msg *m, pyproc__buffer_fn take,
                                                       void *ctx)
{
    const char *p, *end;
    struct msg_bufs *b = NULL, *grown;
    struct mp_item it;
    uint32_t cap = 0;
    int err = 0;

    if (!memchr(m->data, 0xc7, m->len))
        return 0;
    /* Heads in order visit every value: a container's head is followed by
     * its items, and mp_head() steps over the bodies of the others. */
    for (p = m->data, end = p + m->len; p < end && err == 0;) {
        if (mp_head(&p, end, &it) < 0) {
            err = -EBADMSG;
        } else if (it.type == PYPROC_BUF) {
            if (!b || b->n == cap) {
                cap = cap ? 2 * cap : 4;
                grown = realloc(b, sizeof *b + cap * sizeof b->buf[0]);
                if (!grown) {
                    err = -ENOMEM;
                    break;
                }
                if (!b)
                    grown->n = 0;
                b = grown;
            }
            err = take(ctx, shm_be64_get(it.body), shm_be64_get(it.body + 8),
                       shm_be64_get(it.body + 16), &b->buf[b->n]);
            if (err == 0)
                shm_be64_put((char *)it.body, b->n++);
        }
    }
    if (b) {
        atomic_init(&b->refs, 1);
        m->bufs = b;
    }
    return err;
}

int pyproc__msg_take_buffers(pyproc_msg *m, pyproc__buffer_fn take, void *ctx)
{
    if (!m || !m->data || m->bufs)
        return -EINVAL;
    /* Every buffer is an ext 8 of 3 + PYPROC__EXT_BUF_LEN bytes starting
     * with 0xc7: most values have none, and a short one cannot. */
    if (m->len < 3 + PYPROC__EXT_BUF_LEN)
        return 0;
    return take_buffers_walk(m, take, ctx);
}

/* ---- reading with a format ---- */

/*
 * The NUL-terminated copy of the n-byte str at body, made once per message
 * and string.  Two threads that miss at once both push a copy; either is
 * right.  NULL when memory ran out.
 */
static const char *msg_str(pyproc_msg *m, const char *body, uint32_t n)
{
    size_t off = (size_t)(body - m->data);
    struct msg_str *s;

    /* Pairs with the release CAS below. */
    for (s = atomic_load_explicit(&m->strs, memory_order_acquire); s; s = s->next)
        if (s->off == off)
            return s->s;
    s = malloc(sizeof(*s) + (size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s->s, body, n);
    s->s[n] = '\0';
    s->off = off;
    s->next = atomic_load_explicit(&m->strs, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&m->strs, &s->next, s, memory_order_release,
                                                  memory_order_relaxed))
        ;
    return s->s;
}

struct reader {
    pyproc_msg *m;
    const char *p, *end;
    va_list ap;
};

/* A number as the int-like codes want it: -ERANGE for one that no int64_t
 * holds (they all fit in one or are refused). */
static int item_int64(const struct mp_item *it, int64_t *v)
{
    if (it->type == PYPROC_UINT)
        return -ERANGE;
    if (it->type != PYPROC_INT)
        return -EBADMSG;
    *v = it->i;
    return 0;
}

static int read_int(const struct mp_item *it, int *out)
{
    int64_t v;
    int err = item_int64(it, &v);

    if (err < 0)
        return err;
    if (v < INT_MIN || v > INT_MAX)
        return -ERANGE;
    *out = (int)v;
    return 0;
}

static int read_uint(const struct mp_item *it, uint64_t *out)
{
    if (it->type == PYPROC_INT && it->i < 0)
        return -ERANGE;
    if (it->type != PYPROC_INT && it->type != PYPROC_UINT)
        return -EBADMSG;
    *out = it->u;
    return 0;
}

static int read_double(const struct mp_item *it, double *out)
{
    if (it->type == PYPROC_FLOAT)
        *out = it->d;
    else if (it->type == PYPROC_INT)
        *out = (double)it->i;
    else if (it->type == PYPROC_UINT)
        *out = (double)it->u;
    else
        return -EBADMSG;
    return 0;
}

/* A str for 's': refused when it holds a NUL, which C would cut it at. */
static int read_str(struct reader *r, const struct mp_item *it, const char **out)
{
    if (it->type != PYPROC_STR || memchr(it->body, '\0', it->n))
        return -EBADMSG;
    *out = msg_str(r->m, it->body, it->n);
    return *out ? 0 : -ENOMEM;
}

static int read_bytes(const struct mp_item *it, const void **out, size_t *n)
{
    if (it->type != PYPROC_STR && it->type != PYPROC_BYTES)
        return -EBADMSG;
    *out = it->body;
    *n = it->n;
    return 0;
}

/* 'm': the bytes of the next value, whatever it is. */
static int read_raw(struct reader *r, const void **out, size_t *n)
{
    const char *start = r->p;

    if (shm_mp_next(&r->p, r->end) < 0)
        return -EBADMSG;
    *out = start;
    *n = (size_t)(r->p - start);
    return 0;
}

static int read_nil(struct reader *r)
{
    struct mp_item it;

    if (mp_head(&r->p, r->end, &it) < 0 || it.type != PYPROC_NIL)
        return -EBADMSG;
    return 0;
}

/* 'B': a new reference to the buffer, and the range the value names. */
static int read_buffer(pyproc_msg *m, const struct mp_item *it, pyproc_buf **out, size_t *off,
                       size_t *len)
{
    uint64_t i, o, n;

    if (it->type != PYPROC_BUF)
        return -EBADMSG;
    i = shm_be64_get(it->body);
    o = shm_be64_get(it->body + 8);
    n = shm_be64_get(it->body + 16);
    /* Checked when the buffers were taken in; a message of the host's own
     * making has no buffers at all. */
    if (!m->bufs || i >= m->bufs->n || o > m->bufs->buf[i]->size || n > m->bufs->buf[i]->size - o)
        return -EBADMSG;
    pyproc__buf_ref(m->bufs->buf[i]);
    *out = m->bufs->buf[i];
    *off = (size_t)o;
    *len = (size_t)n;
    return 0;
}

/* A scalar for one code; its pointer arguments must not be NULL. */
static int read_scalar(struct reader *r, char code, const struct mp_item *it)
{
    switch (code) {
    case 'b': {
        int *out = va_arg(r->ap, int *);
        if (!out)
            return -EINVAL;
        if (it->type != PYPROC_BOOL)
            return -EBADMSG;
        *out = (int)it->i;
        return 0;
    }
    case 'i': {
        int *out = va_arg(r->ap, int *);
        return out ? read_int(it, out) : -EINVAL;
    }
    case 'I': {
        int64_t *out = va_arg(r->ap, int64_t *);
        return out ? item_int64(it, out) : -EINVAL;
    }
    case 'u': {
        uint64_t *out = va_arg(r->ap, uint64_t *);
        return out ? read_uint(it, out) : -EINVAL;
    }
    case 'd': {
        double *out = va_arg(r->ap, double *);
        return out ? read_double(it, out) : -EINVAL;
    }
    case 's': {
        const char **out = va_arg(r->ap, const char **);
        return out ? read_str(r, it, out) : -EINVAL;
    }
    case 'y': {
        const void **out = va_arg(r->ap, const void **);
        size_t *n = va_arg(r->ap, size_t *);
        return out && n ? read_bytes(it, out, n) : -EINVAL;
    }
    case 'B': {
        pyproc_buf **out = va_arg(r->ap, pyproc_buf **);
        size_t *off = va_arg(r->ap, size_t *);
        size_t *len = va_arg(r->ap, size_t *);
        return out && off && len ? read_buffer(r->m, it, out, off, len) : -EINVAL;
    }
    }
    return -EINVAL;
}

static int read_code(struct reader *r, char code)
{
    struct mp_item it;

    if (code == 'n')
        return read_nil(r);
    if (code == 'm') {
        const void **out = va_arg(r->ap, const void **);
        size_t *n = va_arg(r->ap, size_t *);
        return out && n ? read_raw(r, out, n) : -EINVAL;
    }
    if (mp_head(&r->p, r->end, &it) < 0)
        return -EBADMSG;
    return read_scalar(r, code, &it);
}

/* A list (map false) or map of exactly n entries. */
static int read_head(struct reader *r, bool map, uint32_t n)
{
    struct mp_item it;

    if (mp_head(&r->p, r->end, &it) < 0)
        return -EBADMSG;
    if (it.type != (map ? PYPROC_MAP : PYPROC_LIST) || it.n != n)
        return -EBADMSG;
    return 0;
}

static int read_items(struct reader *r, const char *fmt)
{
    for (const char *p = fmt; *p; p++) {
        int err = 0;

        if (pyproc__fmt_space(*p) || *p == ']' || *p == '}')
            continue;
        if (*p == '[')
            err = read_head(r, false, pyproc__fmt_count(p));
        else if (*p == '{')
            err = read_head(r, true, pyproc__fmt_count(p) / 2);
        else
            err = read_code(r, *p);
        if (err < 0)
            return err;
    }
    return 0;
}

PYPROC_EXPORT int pyproc_msg_readv(pyproc_msg *m, const char *fmt, va_list ap)
{
    struct reader r;
    uint32_t n, nkw;
    const char *bar;
    int err;

    if (!m || !m->data || pyproc__fmt_shape(fmt, &n, &nkw, &bar) < 0 || *bar)
        return -EINVAL;
    r.m = m;
    r.p = m->data;
    r.end = m->data + m->len;
    if (n == 0)
        return read_nil(&r);
    if (n > 1 && (err = read_head(&r, false, n)) < 0)
        return err;
    va_copy(r.ap, ap);
    err = read_items(&r, fmt);
    va_end(r.ap);
    return err;
}

PYPROC_EXPORT int pyproc_msg_read(pyproc_msg *m, const char *fmt, ...)
{
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = pyproc_msg_readv(m, fmt, ap);
    va_end(ap);
    return err;
}

/* ---- values of unknown shape ---- */

PYPROC_EXPORT int pyproc_msg_type(pyproc_msg *m)
{
    struct mp_item it;
    const char *p;

    if (!m || !m->data)
        return -EINVAL;
    p = m->data;
    if (mp_head(&p, p + m->len, &it) < 0)
        return -EBADMSG;
    return it.type;
}

PYPROC_EXPORT int pyproc_msg_len(pyproc_msg *m)
{
    struct mp_item it;
    const char *p;

    if (!m || !m->data)
        return -EINVAL;
    p = m->data;
    if (mp_head(&p, p + m->len, &it) < 0)
        return -EBADMSG;
    if (it.type != PYPROC_LIST && it.type != PYPROC_MAP && it.type != PYPROC_STR &&
        it.type != PYPROC_BYTES)
        return -EINVAL;
    return it.n > INT_MAX ? -ERANGE : (int)it.n;
}

/*
 * Move p from the first item of the top-level list or map to item i (pair
 * i of a map), setting out instead from the position found last time when
 * that is not past i.
 */
static int at_seek(pyproc_msg *m, const char **p, bool map, size_t i)
{
    uint64_t hint = atomic_load_explicit(&m->at_hint, memory_order_relaxed);
    const char *end = m->data + m->len;
    size_t k = 0;

    if (hint && (hint >> 32) <= i) {
        k = (size_t)(hint >> 32);
        *p = m->data + (uint32_t)hint;
    }
    for (; k < i; k++)
        if (shm_mp_next(p, end) < 0 || (map && shm_mp_next(p, end) < 0))
            return -EBADMSG;
    if ((size_t)(*p - m->data) <= UINT32_MAX)
        atomic_store_explicit(&m->at_hint, ((uint64_t)i << 32) | (uint64_t)(*p - m->data),
                              memory_order_relaxed);
    return 0;
}

PYPROC_EXPORT int pyproc_msg_at(pyproc_msg *m, size_t i, pyproc_msg **ret, pyproc_msg **val)
{
    struct mp_item it;
    const char *p, *end, *key, *value;
    pyproc_msg *k, *v;
    bool map;
    int err;

    if (!m || !m->data || !ret)
        return -EINVAL;
    p = m->data;
    end = p + m->len;
    if (mp_head(&p, end, &it) < 0)
        return -EBADMSG;
    if (it.type != PYPROC_LIST && it.type != PYPROC_MAP)
        return -EINVAL;
    map = it.type == PYPROC_MAP;
    if (!map && val)
        return -EINVAL;
    if (i >= it.n)
        return -ERANGE;
    if (at_seek(m, &p, map, i) < 0)
        return -EBADMSG;
    key = p;
    if (shm_mp_next(&p, end) < 0)
        return -EBADMSG;
    value = p;
    if (val && shm_mp_next(&p, end) < 0)
        return -EBADMSG;
    err = msg_copy(&k, key, (size_t)(value - key));
    if (err < 0)
        return err;
    k->bufs = bufs_ref(m->bufs);
    if (val) {
        err = msg_copy(&v, value, (size_t)(p - value));
        if (err < 0) {
            pyproc_msg_free(k);
            return err;
        }
        v->bufs = bufs_ref(m->bufs);
        *val = v;
    }
    *ret = k;
    return 0;
}
