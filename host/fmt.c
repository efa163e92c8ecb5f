/*
 * The argument format encoder.  Every call's arguments pass through here,
 * so it allocates nothing beyond growing the caller's buffer and looks at
 * each format character a bounded number of times: once to check, once to
 * encode, and once more per enclosing bracket (at most
 * PYPROC__FMT_MAX_DEPTH) to count that bracket's items.
 */
#include "fmt.h"

#include <errno.h>
#include <limits.h>
#include <msgpuck.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/be64.h"
#include "../shm/mpvalid.h"
#include "msg.h"

static bool fmt_code(char c)
{
    return c != '\0' && strchr("nbiIudsymB", c) != NULL;
}

static bool fmt_open(char c)
{
    return c == '[' || c == '{';
}

static bool fmt_close(char c)
{
    return c == ']' || c == '}';
}

/*
 * One level of brackets being checked.  Counts are size_t so that a format
 * with more than UINT32_MAX items in one place is caught, not wrapped.
 */
struct fmt_level {
    char close;
    size_t n;
};

/* Count one item at the top level, where kwargs need an 's' key. */
static int fmt_top_item(size_t top[2], int side, char c)
{
    if (side && top[1] % 2 == 0 && c != 's')
        return -EINVAL;
    if (++top[side] > UINT32_MAX)
        return -EINVAL;
    return 0;
}

static int fmt_push(struct fmt_level *stack, int *depth, char open)
{
    if (*depth == PYPROC__FMT_MAX_DEPTH)
        return -EINVAL;
    stack[*depth].close = open == '[' ? ']' : '}';
    stack[*depth].n = 0;
    (*depth)++;
    return 0;
}

static int fmt_pop(struct fmt_level *stack, int *depth, char close)
{
    if (!*depth || stack[*depth - 1].close != close)
        return -EINVAL;
    if (close == '}' && stack[*depth - 1].n % 2)
        return -EINVAL;
    (*depth)--;
    return 0;
}

int pyproc__fmt_shape(const char *fmt, uint32_t *ret_pos, uint32_t *ret_kw, const char **ret_bar)
{
    struct fmt_level stack[PYPROC__FMT_MAX_DEPTH];
    size_t top[2] = {0, 0};
    const char *p, *bar = NULL;
    int depth = 0;

    for (p = fmt ? fmt : ""; *p; p++) {
        char c = *p;

        if (pyproc__fmt_space(c))
            continue;
        if (c == '|') {
            if (depth || bar)
                return -EINVAL;
            bar = p;
            continue;
        }
        if (fmt_close(c)) {
            if (fmt_pop(stack, &depth, c) < 0)
                return -EINVAL;
            continue;
        }
        if (!fmt_code(c) && !fmt_open(c))
            return -EINVAL;
        /* c starts an item of the current level */
        if (!depth) {
            if (fmt_top_item(top, bar != NULL, c) < 0)
                return -EINVAL;
        } else if (++stack[depth - 1].n > UINT32_MAX) {
            return -EINVAL;
        }
        if (fmt_open(c) && fmt_push(stack, &depth, c) < 0)
            return -EINVAL;
    }
    if (depth || top[1] % 2)
        return -EINVAL;
    *ret_pos = (uint32_t)top[0];
    *ret_kw = (uint32_t)top[1];
    *ret_bar = bar ? bar : p;
    return 0;
}

int pyproc__fmt_check(const char *fmt)
{
    uint32_t npos, nkw;
    const char *bar;

    return pyproc__fmt_shape(fmt, &npos, &nkw, &bar);
}

uint32_t pyproc__fmt_count(const char *open)
{
    uint32_t n = 0;
    size_t depth = 0;

    for (const char *p = open + 1;; p++) {
        if (pyproc__fmt_space(*p))
            continue;
        if (fmt_close(*p)) {
            if (!depth)
                return n;
            depth--;
            continue;
        }
        if (!depth)
            n++;
        if (fmt_open(*p))
            depth++;
    }
}

/* ---- the varargs source ---- */

static int va_next(struct pyproc__args *a, char code, union pyproc__arg *out)
{
    struct pyproc__va *va = a->state;

    switch (code) {
    case 'b':
    case 'i':
        out->i = va_arg(va->ap, int);
        return 0;
    case 'I':
        out->I = va_arg(va->ap, int64_t);
        return 0;
    case 'u':
        out->u = va_arg(va->ap, uint64_t);
        return 0;
    case 'd':
        out->d = va_arg(va->ap, double);
        return 0;
    case 's':
        out->s = va_arg(va->ap, const char *);
        return 0;
    case 'y':
    case 'm':
        out->y.p = va_arg(va->ap, const void *);
        out->y.n = va_arg(va->ap, size_t);
        return 0;
    case 'B':
        out->B.buf = va_arg(va->ap, pyproc_buf *);
        out->B.off = va_arg(va->ap, size_t);
        out->B.len = va_arg(va->ap, size_t);
        return 0;
    }
    return -EINVAL;
}

void pyproc__args_va(struct pyproc__args *a, struct pyproc__va *va)
{
    a->next = va_next;
    a->state = va;
    a->attach = NULL;
}

/* ---- encoding ---- */

/* shm_buf_reserve() without a call when the room is there already: every
 * value of every call and map item comes through here. */
static inline char *room(struct shm_buf *b, size_t n, int *err)
{
    if (n <= b->cap - b->len && (!b->limit || n <= b->limit - b->len))
        return b->data + b->len;
    return shm_buf_reserve(b, n, err);
}

/* Non-negative numbers take the unsigned encodings, as Python's do. */
static inline char *encode_int(char *w, int64_t v)
{
    return v < 0 ? mp_encode_int(w, v) : mp_encode_uint(w, (uint64_t)v);
}

static int put_int(struct shm_buf *b, int64_t v)
{
    int err = 0;
    uint32_t n = v < 0 ? mp_sizeof_int(v) : mp_sizeof_uint((uint64_t)v);
    char *w = room(b, n, &err);

    if (!w)
        return err;
    encode_int(w, v);
    b->len += n;
    return 0;
}

static int put_uint(struct shm_buf *b, uint64_t v)
{
    int err = 0;
    uint32_t n = mp_sizeof_uint(v);
    char *w = room(b, n, &err);

    if (!w)
        return err;
    mp_encode_uint(w, v);
    b->len += n;
    return 0;
}

/* One byte: nil, true or false. */
static int put_byte(struct shm_buf *b, unsigned char c)
{
    int err = 0;
    char *w = room(b, 1, &err);

    if (!w)
        return err;
    *w = (char)c;
    b->len++;
    return 0;
}

static int put_double(struct shm_buf *b, double v)
{
    int err = 0;
    uint32_t n = mp_sizeof_double(v);
    char *w = room(b, n, &err);

    if (!w)
        return err;
    mp_encode_double(w, v);
    b->len += n;
    return 0;
}

/* A str (bin false) or bin (bin true) of n bytes at p. */
static int put_raw(struct shm_buf *b, bool bin, const void *p, size_t n)
{
    int err = 0;

    if (!p && n)
        return -EINVAL;
    if (n > UINT32_MAX)
        return -EMSGSIZE;
    uint32_t head = bin ? mp_sizeof_binl((uint32_t)n) : mp_sizeof_strl((uint32_t)n);
    if (n > SIZE_MAX - head)
        return -EMSGSIZE;
    char *w = room(b, head + n, &err);
    if (!w)
        return err;
    w = bin ? mp_encode_binl(w, (uint32_t)n) : mp_encode_strl(w, (uint32_t)n);
    if (n)
        memcpy(w, p, n);
    b->len += head + n;
    return 0;
}

static int put_str(struct shm_buf *b, const char *s)
{
    if (!s)
        return -EINVAL;
    return put_raw(b, false, s, strlen(s));
}

static int put_splice(struct shm_buf *b, const void *p, size_t n)
{
    if (!p || shm_mp_check(p, n) < 0)
        return -EINVAL;
    return shm_buf_append(b, p, n);
}

/* An array (map false) or map (map true) header of n entries. */
static int put_head(struct shm_buf *b, bool map, uint32_t n)
{
    int err = 0;
    uint32_t size = map ? mp_sizeof_map(n) : mp_sizeof_array(n);
    char *w = room(b, size, &err);

    if (!w)
        return err;
    if (map)
        mp_encode_map(w, n);
    else
        mp_encode_array(w, n);
    b->len += size;
    return 0;
}

/* A buffer argument: an ext 8 naming a token, which the call's sender
 * passes to the worker with the buffer's fd (see shared.h). */
static int put_buffer(struct shm_buf *b, struct pyproc__attach *att, pyproc_buf *buf, size_t off,
                      size_t len)
{
    int err = 0;
    char *w;

    if (!att || !buf || !pyproc__buf_alive(buf) || buf->pool_id != att->pool_id)
        return -EINVAL;
    if (off > buf->size || len > buf->size - off)
        return -ERANGE;
    if (att->n == PYPROC__MAX_ATTACH)
        return -E2BIG;
    w = room(b, 3 + PYPROC__EXT_BUF_LEN, &err);
    if (!w)
        return err;
    att->buf[att->n] = buf;
    att->token[att->n] = pyproc__buf_token();
    *w++ = (char)0xc7;
    *w++ = PYPROC__EXT_BUF_LEN;
    *w++ = PYPROC__EXT_BUF;
    shm_be64_put(w, att->token[att->n++]);
    shm_be64_put(w + 8, off);
    shm_be64_put(w + 16, len);
    b->len += 3 + PYPROC__EXT_BUF_LEN;
    return 0;
}

/* The value of one argument code, taken from a. */
static int put_arg(struct shm_buf *b, char code, struct pyproc__args *a)
{
    union pyproc__arg v;
    int err;

    if (code == 'n')
        return put_byte(b, 0xc0);
    if (code == 'B' && !a->attach)
        return -EINVAL; /* not where buffers can go: take no value */
    err = a->next(a, code, &v);
    if (err < 0)
        return err;
    switch (code) {
    case 'b':
        return put_byte(b, v.i ? 0xc3 : 0xc2);
    case 'i':
        return put_int(b, v.i);
    case 'I':
        return put_int(b, v.I);
    case 'u':
        return put_uint(b, v.u);
    case 'd':
        return put_double(b, v.d);
    case 's':
        return put_str(b, v.s);
    case 'y':
        return put_raw(b, true, v.y.p, v.y.n);
    case 'm':
        return put_splice(b, v.y.p, v.y.n);
    case 'B':
        return put_buffer(b, a->attach, v.B.buf, v.B.off, v.B.len);
    }
    return -EINVAL;
}

/* Encode the items of the checked format from p up to end. */
static int put_items(struct shm_buf *b, const char *p, const char *end, struct pyproc__args *a)
{
    for (; p < end; p++) {
        int err = 0;

        if (pyproc__fmt_space(*p) || fmt_close(*p))
            continue;
        if (*p == '[')
            err = put_head(b, false, pyproc__fmt_count(p));
        else if (*p == '{')
            err = put_head(b, true, pyproc__fmt_count(p) / 2);
        else
            err = put_arg(b, *p, a);
        if (err < 0)
            return err;
    }
    return 0;
}

/* A call without arguments, the commonest kind: all of it in one
 * reservation, the same bytes as encode_call() makes. */
static int encode_bare_call(struct shm_buf *b, uint32_t kind, const char *ref)
{
    size_t n = strlen(ref);
    int err = 0;

    if (n > UINT32_MAX - 16)
        return -EMSGSIZE;
    size_t size = mp_sizeof_array(4) + mp_sizeof_uint(kind) + mp_sizeof_strl((uint32_t)n) + n +
                  mp_sizeof_array(0) + mp_sizeof_map(0);
    char *w = shm_buf_reserve(b, size, &err);
    if (!w)
        return err;
    w = mp_encode_array(w, 4);
    w = mp_encode_uint(w, kind);
    w = mp_encode_strl(w, (uint32_t)n);
    memcpy(w, ref, n);
    w = mp_encode_array(w + n, 0);
    mp_encode_map(w, 0);
    b->len += size;
    return 0;
}

static int encode_call(struct shm_buf *b, int kind, const char *ref, const char *fmt,
                       struct pyproc__args *a)
{
    uint32_t npos, nkw;
    const char *bar;
    int err;

    if (!*fmt && kind >= 0)
        return encode_bare_call(b, (uint32_t)kind, ref);
    if ((err = pyproc__fmt_shape(fmt, &npos, &nkw, &bar)) < 0)
        return err;
    if ((err = put_head(b, false, 4)) < 0 || (err = put_int(b, kind)) < 0 ||
        (err = put_str(b, ref)) < 0 || (err = put_head(b, false, npos)) < 0 ||
        (err = put_items(b, fmt, bar, a)) < 0 || (err = put_head(b, true, nkw / 2)) < 0)
        return err;
    return *bar ? put_items(b, bar + 1, bar + 1 + strlen(bar + 1), a) : 0;
}

int pyproc__fmt_encode_call(struct shm_buf *b, int kind, const char *ref, const char *fmt,
                            struct pyproc__args *a)
{
    size_t len0;
    int err;

    if (!b || !ref || !a)
        return -EINVAL;
    len0 = b->len;
    err = encode_call(b, kind, ref, fmt ? fmt : "", a);
    if (err < 0)
        b->len = len0;
    return err;
}

static int encode_args(struct shm_buf *b, const char *fmt, struct pyproc__args *a)
{
    uint32_t npos, nkw;
    const char *bar;
    int err = pyproc__fmt_shape(fmt, &npos, &nkw, &bar);

    if (err < 0)
        return err;
    if ((err = put_head(b, false, 2)) < 0 || (err = put_head(b, false, npos)) < 0 ||
        (err = put_items(b, fmt, bar, a)) < 0 || (err = put_head(b, true, nkw / 2)) < 0)
        return err;
    return *bar ? put_items(b, bar + 1, bar + 1 + strlen(bar + 1), a) : 0;
}

int pyproc__fmt_encode_args(struct shm_buf *b, const char *fmt, struct pyproc__args *a)
{
    size_t len0;
    int err;

    if (!b || !a)
        return -EINVAL;
    len0 = b->len;
    err = encode_args(b, fmt ? fmt : "", a);
    if (err < 0)
        b->len = len0;
    return err;
}

static int encode_value(struct shm_buf *b, const char *fmt, struct pyproc__args *a)
{
    uint32_t n, nkw;
    const char *bar;
    int err = pyproc__fmt_shape(fmt, &n, &nkw, &bar);

    if (err < 0 || *bar)
        return -EINVAL;
    if (n == 0)
        return put_byte(b, 0xc0);
    if (n > 1 && (err = put_head(b, false, n)) < 0)
        return err;
    return put_items(b, fmt, bar, a);
}

int pyproc__fmt_encode_value(struct shm_buf *b, const char *fmt, struct pyproc__args *a)
{
    size_t len0;
    int err;

    if (!b || !a)
        return -EINVAL;
    len0 = b->len;
    err = encode_value(b, fmt ? fmt : "", a);
    if (err < 0)
        b->len = len0;
    return err;
}

/* ---- plans: a format checked once ---- */

bool pyproc__fmt_plan_is(const struct pyproc__fmt_plan *pl, const char *fmt)
{
    const char *a = pl->fmt, *b = fmt ? fmt : "";

    if (!a)
        return false;
    /* Formats are a few bytes: a loop costs less than a call. */
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

void pyproc__fmt_plan_free(struct pyproc__fmt_plan *pl)
{
    free(pl->fmt);
    *pl = (struct pyproc__fmt_plan){0};
}

/* The codes of a checked format without brackets, in order, without the
 * spaces and the bar; false for one with brackets. */
static bool plan_codes(char *out, const char *fmt)
{
    for (const char *p = fmt; *p; p++) {
        if (fmt_open(*p))
            return false;
        if (!pyproc__fmt_space(*p) && *p != '|')
            *out++ = *p;
    }
    *out = '\0';
    return true;
}

/* The most bytes a value of a fixed-size code takes, 0 for the others. */
static size_t fixed_size(char code)
{
    switch (code) {
    case 'n':
    case 'b':
        return 1;
    case 'i':
    case 'I':
    case 'u':
    case 'd':
        return 9;
    }
    return 0;
}

/* For a flat plan without keywords: the most bytes an item of fixed-size
 * values takes ([args, {}]), or 0 when a value's size varies. */
static size_t plan_fixed_max(const struct pyproc__fmt_plan *pl)
{
    size_t n = 1 + mp_sizeof_array(pl->npos) + mp_sizeof_map(0);

    if (!pl->codes || pl->nkw)
        return 0;
    for (const char *c = pl->codes; *c; c++) {
        if (!fixed_size(*c))
            return 0;
        n += fixed_size(*c);
    }
    return n;
}

int pyproc__fmt_plan_set(struct pyproc__fmt_plan *pl, const char *fmt)
{
    const char *bar;
    size_t len;
    char *copy;

    pyproc__fmt_plan_free(pl);
    if (!fmt)
        fmt = "";
    if (pyproc__fmt_shape(fmt, &pl->npos, &pl->nkw, &bar) < 0)
        return -EINVAL;
    len = strlen(fmt);
    /* The format, then room for its codes: one allocation. */
    if (!(copy = malloc(2 * len + 2)))
        return -ENOMEM;
    memcpy(copy, fmt, len + 1);
    pl->fmt = copy;
    pl->bar = (size_t)(bar - fmt);
    pl->codes = plan_codes(copy + len + 1, fmt) ? copy + len + 1 : NULL;
    pl->fixed_max = plan_fixed_max(pl);
    return 0;
}

/* One fixed-size value at w (fixed_size(code) > 0); returns its end. */
static char *encode_fixed_value(char *w, char code, const union pyproc__arg *v)
{
    switch (code) {
    case 'n':
        *w = (char)0xc0;
        return w + 1;
    case 'b':
        *w = (char)(v->i ? 0xc3 : 0xc2);
        return w + 1;
    case 'i':
        return encode_int(w, v->i);
    case 'I':
        return encode_int(w, v->I);
    case 'u':
        return mp_encode_uint(w, v->u);
    default:
        return mp_encode_double(w, v->d);
    }
}

/* A value from a, with a direct call for the varargs source. */
static inline int arg_next(struct pyproc__args *a, char code, union pyproc__arg *v)
{
    return a->next == va_next ? va_next(a, code, v) : a->next(a, code, v);
}

/*
 * Items of fixed-size values, the commonest map items: room for the
 * largest such item is made once and every value written straight into
 * it.  Where that room is over b's limit although the item itself might
 * fit, 1 says to encode the values one by one instead (none was taken
 * yet).
 */
static int encode_fixed(struct shm_buf *b, const struct pyproc__fmt_plan *pl,
                        struct pyproc__args *a)
{
    int err = 0;
    char *start = room(b, pl->fixed_max, &err), *w = start;

    if (!w)
        return err == -EMSGSIZE ? 1 : err;
    *w++ = (char)0x92;
    w = mp_encode_array(w, pl->npos);
    for (const char *c = pl->codes; *c; c++) {
        union pyproc__arg v;
        if (*c != 'n' && (err = arg_next(a, *c, &v)) < 0)
            return err;
        w = encode_fixed_value(w, *c, &v);
    }
    *w++ = (char)0x80;
    b->len += (size_t)(w - start);
    return 0;
}

/* Items of a flat plan: each code once, no format to walk. */
static int encode_flat(struct shm_buf *b, const struct pyproc__fmt_plan *pl, struct pyproc__args *a)
{
    const char *c = pl->codes;
    int err;

    if ((err = put_head(b, false, 2)) < 0 || (err = put_head(b, false, pl->npos)) < 0)
        return err;
    for (uint32_t i = 0; i < pl->npos; i++)
        if ((err = put_arg(b, c[i], a)) < 0)
            return err;
    if ((err = put_head(b, true, pl->nkw / 2)) < 0)
        return err;
    for (uint32_t i = pl->npos; i < pl->npos + pl->nkw; i++)
        if ((err = put_arg(b, c[i], a)) < 0)
            return err;
    return 0;
}

static int encode_plan(struct shm_buf *b, const struct pyproc__fmt_plan *pl, struct pyproc__args *a)
{
    const char *fmt = pl->fmt, *bar = fmt + pl->bar;
    int err;

    if (pl->fixed_max && (err = encode_fixed(b, pl, a)) <= 0)
        return err;
    if (pl->codes)
        return encode_flat(b, pl, a);
    if ((err = put_head(b, false, 2)) < 0 || (err = put_head(b, false, pl->npos)) < 0 ||
        (err = put_items(b, fmt, bar, a)) < 0 || (err = put_head(b, true, pl->nkw / 2)) < 0)
        return err;
    return *bar ? put_items(b, bar + 1, bar + 1 + strlen(bar + 1), a) : 0;
}

int pyproc__fmt_encode_plan(struct shm_buf *b, const struct pyproc__fmt_plan *pl,
                            struct pyproc__args *a)
{
    size_t len0;
    int err;

    if (!b || !pl || !pl->fmt || !a)
        return -EINVAL;
    len0 = b->len;
    err = encode_plan(b, pl, a);
    if (err < 0)
        b->len = len0;
    return err;
}
