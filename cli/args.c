/*
 * Command-line words to msgpack, typed by the C API's format codes.
 *
 * Each top-level value is encoded on its own so that the call can splice
 * it with 'm'; offsets are kept while encoding (the buffer moves as it
 * grows) and turned into pointers at the end.
 */
#define MP_SOURCE 1 /* msgpuck's out-of-line definitions live here */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpuck.h>

#include "args.h"

struct parse {
    const char *f; /* the next format character */
    char **words;  /* the command line's values */
    int nwords, next;
    char *buf; /* encoded values */
    size_t len, cap;
    char *err;
    size_t errlen;
};

static int fail(struct parse *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parse *ps, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Room for n more bytes at the end of the buffer. */
static char *reserve(struct parse *ps, size_t n)
{
    if (ps->cap - ps->len < n) {
        size_t cap = ps->cap ? ps->cap : 256;
        while (cap - ps->len < n)
            cap *= 2;
        char *b = realloc(ps->buf, cap);
        if (!b)
            return NULL;
        ps->buf = b;
        ps->cap = cap;
    }
    return ps->buf + ps->len;
}

/* Encoders of msgpuck return the end of what they wrote. */
#define EMIT(ps, size, call)                                                                       \
    do {                                                                                           \
        char *w_ = reserve((ps), (size));                                                          \
        if (!w_)                                                                                   \
            return -ENOMEM;                                                                        \
        (ps)->len = (size_t)((call) - (ps)->buf);                                                  \
    } while (0)

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

static void skip_spaces(struct parse *ps)
{
    while (is_space(*ps->f))
        ps->f++;
}

static const char *take_word(struct parse *ps, char code)
{
    if (ps->next == ps->nwords) {
        fail(ps, "format code '%c' has no value: too few arguments", code);
        return NULL;
    }
    return ps->words[ps->next++];
}

static int parse_int(struct parse *ps, const char *w, char code, int64_t lo, int64_t hi, int64_t *v)
{
    char *end;
    long long x;

    errno = 0;
    x = strtoll(w, &end, 0);
    if (!*w || *end || errno || x < lo || x > hi)
        return fail(ps, "'%s' is not an integer for format code '%c'", w, code);
    *v = x;
    return 0;
}

static int parse_uint(struct parse *ps, const char *w, uint64_t *v)
{
    char *end;
    unsigned long long x;

    errno = 0;
    x = strtoull(w, &end, 0);
    if (!*w || *end || errno || strchr(w, '-'))
        return fail(ps, "'%s' is not an unsigned integer for format code 'u'", w);
    *v = x;
    return 0;
}

static int parse_bool(struct parse *ps, const char *w, bool *v)
{
    if (!strcmp(w, "true") || !strcmp(w, "1"))
        *v = true;
    else if (!strcmp(w, "false") || !strcmp(w, "0"))
        *v = false;
    else
        return fail(ps, "'%s' is not a bool (true, false, 1 or 0) for format code 'b'", w);
    return 0;
}

static int parse_double(struct parse *ps, const char *w, double *v)
{
    char *end;

    errno = 0;
    *v = strtod(w, &end);
    if (!*w || *end || (errno == ERANGE && isinf(*v)))
        return fail(ps, "'%s' is not a number for format code 'd'", w);
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 'm': the word is the hex of one msgpack value, spliced as it is. */
static int encode_raw(struct parse *ps, const char *w)
{
    size_t n = strlen(w);
    char *out;
    const char *check;

    if (n % 2)
        return fail(ps, "'%s' is not hex for format code 'm'", w);
    out = reserve(ps, n / 2);
    if (!out)
        return -ENOMEM;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_digit(w[2 * i]), lo = hex_digit(w[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return fail(ps, "'%s' is not hex for format code 'm'", w);
        out[i] = (char)(hi << 4 | lo);
    }
    check = out;
    if (n == 0 || mp_check(&check, out + n / 2) || check != out + n / 2)
        return fail(ps, "'%s' is not one msgpack value for format code 'm'", w);
    ps->len += n / 2;
    return 0;
}

static int encode_code(struct parse *ps, char code)
{
    const char *w = NULL;
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    bool b = false;
    int err;

    if (code == 'n') {
        EMIT(ps, 1, mp_encode_nil(w_));
        return 0;
    }
    if (!(w = take_word(ps, code)))
        return -EINVAL;
    switch (code) {
    case 'b':
        if ((err = parse_bool(ps, w, &b)) < 0)
            return err;
        EMIT(ps, 1, mp_encode_bool(w_, b));
        return 0;
    case 'i':
    case 'I':
        if ((err = parse_int(ps, w, code, code == 'i' ? INT_MIN : INT64_MIN,
                             code == 'i' ? INT_MAX : INT64_MAX, &i)) < 0)
            return err;
        EMIT(ps, 9, i < 0 ? mp_encode_int(w_, i) : mp_encode_uint(w_, (uint64_t)i));
        return 0;
    case 'u':
        if ((err = parse_uint(ps, w, &u)) < 0)
            return err;
        EMIT(ps, 9, mp_encode_uint(w_, u));
        return 0;
    case 'd':
        if ((err = parse_double(ps, w, &d)) < 0)
            return err;
        EMIT(ps, 9, mp_encode_double(w_, d));
        return 0;
    case 's':
        EMIT(ps, mp_sizeof_str((uint32_t)strlen(w)), mp_encode_str(w_, w, (uint32_t)strlen(w)));
        return 0;
    case 'y':
        EMIT(ps, mp_sizeof_bin((uint32_t)strlen(w)), mp_encode_bin(w_, w, (uint32_t)strlen(w)));
        return 0;
    case 'm':
        return encode_raw(ps, w);
    }
    return fail(ps, "'%c' is not a format code", code);
}

/* Items directly inside the bracket that opens at f, up to its close. */
static int count_items(struct parse *ps, const char *f, uint32_t *n)
{
    int depth = 0;

    *n = 0;
    for (const char *p = f + 1; *p; p++) {
        if (is_space(*p))
            continue;
        if (*p == ']' || *p == '}') {
            if (depth-- == 0)
                return 0;
            continue;
        }
        if (depth == 0)
            (*n)++;
        if (*p == '[' || *p == '{')
            depth++;
    }
    return fail(ps, "the format has an unclosed '%c'", *f);
}

static int encode_item(struct parse *ps, int depth);

static int encode_container(struct parse *ps, int depth)
{
    char open = *ps->f, close = open == '[' ? ']' : '}';
    uint32_t n;
    int err;

    if (depth == 64)
        return fail(ps, "the format nests deeper than 64 brackets");
    if ((err = count_items(ps, ps->f, &n)) < 0)
        return err;
    if (open == '{' && n % 2)
        return fail(ps, "a '{...}' in the format holds an odd number of codes");
    if (open == '[')
        EMIT(ps, 5, mp_encode_array(w_, n));
    else
        EMIT(ps, 5, mp_encode_map(w_, n / 2));
    ps->f++;
    for (uint32_t i = 0; i < n; i++)
        if ((err = encode_item(ps, depth + 1)) < 0)
            return err;
    skip_spaces(ps);
    if (*ps->f != close)
        return fail(ps, "a '%c' in the format is closed by '%c'", open, *ps->f);
    ps->f++;
    return 0;
}

/* One value at ps->f: a code or a bracketed group. */
static int encode_item(struct parse *ps, int depth)
{
    skip_spaces(ps);
    if (*ps->f == '[' || *ps->f == '{')
        return encode_container(ps, depth);
    if (!*ps->f || !strchr("nbiIudsym", *ps->f))
        return fail(ps, "'%c' is not a format code", *ps->f ? *ps->f : ' ');
    return encode_code(ps, *ps->f++);
}

/* The top level: positional values, then '|' and name/value pairs. */
static int encode_top(struct parse *ps, struct cli_args *a, size_t *pos_off, size_t *kw_off)
{
    bool keywords = false;
    int err;

    for (skip_spaces(ps); *ps->f; skip_spaces(ps)) {
        if (*ps->f == '|' && !keywords) {
            keywords = true;
            ps->f++;
            continue;
        }
        if (keywords) {
            if (*ps->f != 's')
                return fail(ps, "after '|' each keyword needs a name, code 's'");
            if (a->nkw == CLI_MAX_KW)
                return fail(ps, "more than %d keyword arguments", CLI_MAX_KW);
            ps->f++;
            if (!(a->kw_name[a->nkw] = take_word(ps, 's')))
                return -EINVAL;
            skip_spaces(ps);
            if (!*ps->f)
                return fail(ps, "keyword '%s' has no value code", a->kw_name[a->nkw]);
            kw_off[a->nkw] = ps->len;
            a->nkw++;
        } else {
            if (a->npos == CLI_MAX_POS)
                return fail(ps, "more than %d positional arguments", CLI_MAX_POS);
            pos_off[a->npos++] = ps->len;
        }
        if ((err = encode_item(ps, 0)) < 0)
            return err;
    }
    if (ps->next != ps->nwords)
        return fail(ps, "%d argument(s) left over after the format", ps->nwords - ps->next);
    return 0;
}

/* Offsets to pointers, now that the buffer stops moving. */
static void set_values(struct cli_args *a, const struct parse *ps, const size_t *pos_off,
                       const size_t *kw_off)
{
    char *f = a->fmt;

    a->buf = ps->buf;
    for (int i = 0; i < a->npos; i++) {
        size_t end = i + 1 < a->npos ? pos_off[i + 1] : a->nkw ? kw_off[0] : ps->len;
        a->pos[i] = (struct cli_value){ps->buf + pos_off[i], end - pos_off[i]};
        *f++ = 'm';
    }
    if (a->nkw)
        *f++ = '|';
    for (int i = 0; i < a->nkw; i++) {
        size_t end = i + 1 < a->nkw ? kw_off[i + 1] : ps->len;
        a->kw[i] = (struct cli_value){ps->buf + kw_off[i], end - kw_off[i]};
        *f++ = 's';
        *f++ = 'm';
    }
    *f = '\0';
}

int cli_args_encode(struct cli_args *a, const char *fmt, char **words, int argc, char *err,
                    size_t errlen)
{
    struct parse ps = {.f = fmt ? fmt : "",
                       .words = words,
                       .nwords = argc,
                       .err = err,
                       .errlen = errlen};
    size_t pos_off[CLI_MAX_POS], kw_off[CLI_MAX_KW];
    int rc;

    memset(a, 0, sizeof *a);
    rc = encode_top(&ps, a, pos_off, kw_off);
    if (rc < 0) {
        if (rc == -ENOMEM)
            snprintf(err, errlen, "out of memory");
        free(ps.buf);
        memset(a, 0, sizeof *a);
        return rc;
    }
    set_values(a, &ps, pos_off, kw_off);
    return 0;
}

void cli_args_free(struct cli_args *a)
{
    free(a->buf);
    a->buf = NULL;
}
