/*
 * The argument format encoder (host/fmt.c) through its core that takes no
 * varargs, with a format and values made from the input.
 *
 * Input: a byte of settings (value or CALL, the buffer's size limit), a
 * byte giving the format's length, the format (each byte picks a format
 * character, or one that is not one), then the values, taken from the rest
 * as the encoder asks for them; when the input runs out the source fails
 * with -EIO.  Strings and byte strings live in blocks of their exact size.
 *
 * Checked: a bad format fails with -EINVAL before any value is taken; a
 * failure leaves the buffer as it was; a success appends exactly one
 * well-formed msgpack value, which pyproc__msg_from_value() accepts and
 * pyproc_msg_read() with the matching format reads back as the very values
 * that went in.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/fmt.h"
#include "host/msg.h"
#include "shm/mpvalid.h"
#include "pyproc.h"

#define MAX_FMT 255
#define READ_SLOTS 64

struct value {
    char code;
    union pyproc__arg v;
};

struct source {
    struct pyproc__args args;
    const uint8_t *p;
    size_t left;
    struct value vals[MAX_FMT];
    int n;
    void *blocks[MAX_FMT]; /* what the strings and byte strings live in */
    int nblocks;
};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_format: %s\n", what);
        abort();
    }
}

static bool take(struct source *s, void *out, size_t n)
{
    if (s->left < n)
        return false;
    memcpy(out, s->p, n);
    s->p += n;
    s->left -= n;
    return true;
}

/* n bytes of input in a block of their own; NULL with *ok false when the
 * input ran out. */
static void *take_block(struct source *s, size_t n, bool nul, bool *ok)
{
    size_t bytes = n + (nul ? 1 : 0);
    uint8_t *b;

    *ok = s->left >= n;
    if (!*ok)
        return NULL;
    b = malloc(bytes ? bytes : 1);
    check(b != NULL, "out of memory");
    memcpy(b, s->p, n);
    if (nul)
        b[n] = 0;
    s->p += n;
    s->left -= n;
    s->blocks[s->nblocks++] = b;
    return b;
}

static int next_value(struct pyproc__args *a, char code, union pyproc__arg *out)
{
    struct source *s = a->state;
    uint8_t len8 = 0;
    uint16_t len16 = 0;
    bool ok = true;

    check(s->n < MAX_FMT, "more values asked for than the format has codes");
    switch (code) {
    case 'b':
    case 'i':
        ok = take(s, &out->i, sizeof out->i);
        break;
    case 'I':
        ok = take(s, &out->I, sizeof out->I);
        break;
    case 'u':
        ok = take(s, &out->u, sizeof out->u);
        break;
    case 'd':
        ok = take(s, &out->d, sizeof out->d);
        break;
    case 's':
        /* 255: a NULL string, which must be refused. */
        ok = take(s, &len8, 1);
        out->s = ok && len8 != 255 ? take_block(s, len8, true, &ok) : NULL;
        break;
    case 'y':
    case 'm':
        /* 0xffff: NULL with a nonzero length, which must be refused. */
        ok = take(s, &len16, 2);
        out->y.n = len16 == 0xffff ? 1 : len16;
        out->y.p = ok && len16 != 0xffff ? take_block(s, len16, false, &ok) : NULL;
        break;
    default:
        check(0, "asked for a value of an unknown code");
    }
    if (!ok)
        return -EIO;
    s->vals[s->n].code = code;
    s->vals[s->n].v = *out;
    s->n++;
    return 0;
}

/* The read format that matches what was encoded. */
static char *read_format(const char *fmt, bool call)
{
    const char *bar = strchr(fmt, '|');
    char *r = NULL;

    if (!call)
        return strdup(fmt);
    if (asprintf(&r, "[is[%.*s]{%s}]", bar ? (int)(bar - fmt) : (int)strlen(fmt), fmt,
                 bar ? bar + 1 : "") < 0)
        return NULL;
    return r;
}

/* Compare what pyproc_msg_read() put in the slots with what went in. */
static void compare(const struct source *s, void *const *slot, int first)
{
    int k = first;

    for (int i = 0; i < s->n; i++) {
        const struct value *v = &s->vals[i];

        switch (v->code) {
        case 'b':
            check(*(int *)slot[k++] == (v->v.i != 0), "b read back differs");
            break;
        case 'i':
            check(*(int *)slot[k++] == v->v.i, "i read back differs");
            break;
        case 'I':
            check(*(int64_t *)slot[k++] == v->v.I, "I read back differs");
            break;
        case 'u':
            check(*(uint64_t *)slot[k++] == v->v.u, "u read back differs");
            break;
        case 'd':
            check(memcmp(slot[k++], &v->v.d, sizeof(double)) == 0, "d read back differs");
            break;
        case 's':
            check(strcmp(*(const char **)slot[k++], v->v.s) == 0, "s read back differs");
            break;
        case 'y':
        case 'm': {
            const void *p = *(const void **)slot[k++];
            size_t n = *(size_t *)slot[k++];
            check(n == v->v.y.n && (n == 0 || memcmp(p, v->v.y.p, n) == 0),
                  "y or m read back differs");
            break;
        }
        }
    }
}

/* Pointers that every code reads through: one per code, two for y and m. */
static int slots_needed(const struct source *s)
{
    int n = 0;

    for (int i = 0; i < s->n; i++)
        n += s->vals[i].code == 'y' || s->vals[i].code == 'm' ? 2 : 1;
    return n;
}

#define SLOT_ARGS8(i)                                                                              \
    sl[i], sl[i + 1], sl[i + 2], sl[i + 3], sl[i + 4], sl[i + 5], sl[i + 6], sl[i + 7]

static void read_back(const struct source *s, const char *fmt, bool call, const char *data,
                      size_t len, int kind)
{
    _Alignas(16) unsigned char store[READ_SLOTS + 2][16];
    void *sl[READ_SLOTS + 2];
    pyproc_msg *m = NULL;
    char *rfmt;
    int first = call ? 2 : 0;

    check(pyproc__msg_from_value(&m, data, len) == 0, "the encoding is not one value");
    rfmt = read_format(fmt, call);
    check(rfmt != NULL, "out of memory");
    memset(store, 0, sizeof store);
    for (int i = 0; i < READ_SLOTS + 2; i++)
        sl[i] = store[i];
    /* A call's read format wraps the arguments in two more brackets, so a
     * format at the nesting limit encodes but its read format is refused:
     * that is the documented limit, not a mismatch. */
    if (slots_needed(s) + first <= READ_SLOTS && pyproc__fmt_check(rfmt) == 0) {
        /* Spare pointers past the ones the format reads are never used. */
        int rc = pyproc_msg_read(m, rfmt, SLOT_ARGS8(0), SLOT_ARGS8(8), SLOT_ARGS8(16),
                                 SLOT_ARGS8(24), SLOT_ARGS8(32), SLOT_ARGS8(40), SLOT_ARGS8(48),
                                 SLOT_ARGS8(56));
        if (rc != 0)
            fprintf(stderr, "read format \"%s\": %d\n", rfmt, rc);
        check(rc == 0, "the encoding does not read back with its format");
        if (call) {
            check(*(int *)sl[0] == kind, "the call's kind differs");
            check(strcmp(*(const char **)sl[1], "mod.fn") == 0, "the call's ref differs");
        }
        compare(s, sl, first);
    }
    free(rfmt);
    pyproc_msg_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char alphabet[] = "nbiIudsym[]{}| x";
    static const size_t limits[4] = {0, 16, 64, 4096};
    struct source s = {.args = {.next = next_value}, .p = data, .left = size};
    struct shm_buf b = {0};
    char fmt[MAX_FMT + 1];
    uint8_t settings = 0, flen = 0;
    bool call;
    int kind, err;

    s.args.state = &s;
    take(&s, &settings, 1);
    take(&s, &flen, 1);
    if (flen > s.left)
        flen = (uint8_t)s.left;
    for (size_t i = 0; i < flen; i++)
        fmt[i] = alphabet[s.p[i] % (sizeof alphabet - 1)];
    fmt[flen] = 0;
    s.p += flen;
    s.left -= flen;
    call = settings & 1;
    kind = (settings >> 1) & 1;

    /* Something already in the buffer, which a failure must leave alone. */
    check(shm_buf_append(&b, "\x01\x02\x03", 3) == 0, "out of memory");
    b.limit = limits[(settings >> 2) & 3] ? 3 + limits[(settings >> 2) & 3] : 0;
    if (call)
        err = pyproc__fmt_encode_call(&b, kind, "mod.fn", fmt, &s.args);
    else
        err = pyproc__fmt_encode_value(&b, fmt, &s.args);

    if (pyproc__fmt_check(fmt) < 0 || (!call && strchr(fmt, '|'))) {
        check(err == -EINVAL, "a bad format was accepted");
        check(s.n == 0, "a bad format took values");
    }
    if (err < 0) {
        check(err == -EINVAL || err == -EMSGSIZE || err == -EIO || err == -ENOMEM,
              "an unexpected error");
        check(b.len == 3, "a failure changed the buffer");
    } else {
        check(b.len > 3, "nothing was encoded");
        check(shm_mp_check(b.data + 3, b.len - 3) == 0,
              "the encoding is not one well-formed value");
        read_back(&s, fmt, call, b.data + 3, b.len - 3, kind);
    }
    check(memcmp(b.data, "\x01\x02\x03", 3) == 0, "the buffer's start changed");
    shm_buf_free(&b);
    for (int i = 0; i < s.nblocks; i++)
        free(s.blocks[i]);
    return 0;
}
