/*
 * The argument format of pyproc.h ("ii|sd", "[s{sd}]", ...) turned into
 * msgpack.
 *
 * The encoder takes its C values from a source (struct pyproc__args) rather
 * than from a va_list, so the same core serves the varargs API and a fuzzer
 * that makes up values from its input.  A format is checked in full before
 * the first value is taken: a bad format consumes no varargs.
 */
#ifndef PYPROC_HOST_FMT_H
#define PYPROC_HOST_FMT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shm/buf.h"
#include "shared.h"

/*
 * Brackets nest at most this deep in a format.  The bound keeps checking
 * and encoding linear in the format's length without allocating.
 */
#define PYPROC__FMT_MAX_DEPTH 64

/* One C value, as the code that asked for it describes it. */
union pyproc__arg {
    int i;      /* b, i */
    int64_t I;  /* I */
    uint64_t u; /* u */
    double d;   /* d */
    const char *s;
    struct {
        const void *p;
        size_t n;
    } y; /* y, m */
    struct {
        pyproc_buf *buf;
        size_t off, len;
    } B; /* B */
};

/*
 * A source of values.  next() fills *out for `code` (one of "biIudsym";
 * 'n' takes no value) and returns 0, or a negative errno that ends the
 * encoding with that error.
 */
struct pyproc__args {
    int (*next)(struct pyproc__args *a, char code, union pyproc__arg *out);
    void *state;
    /* Where a call's buffers ('B') are collected; NULL: 'B' is -EINVAL. */
    struct pyproc__attach *attach;
};

/*
 * A va_list in a struct, so that a pointer to it can be kept whatever
 * va_list is on the platform (an array on x86-64).  The caller va_copy()s
 * into ap and va_end()s it when done.
 */
struct pyproc__va {
    va_list ap;
};

/* Make *a read C varargs from va, which must outlive a. */
void pyproc__args_va(struct pyproc__args *a, struct pyproc__va *va);

/*
 * Check a format: known codes, balanced and matching [] and {}, an even
 * number of items in every {}, nesting at most PYPROC__FMT_MAX_DEPTH deep,
 * at most one '|' and only at the top level, after it pairs of an 's' key
 * and a value.  NULL and "" are valid (no values).  Returns 0 or -EINVAL.
 */
int pyproc__fmt_check(const char *fmt);

/*
 * pyproc__fmt_check(), and on success the number of items at the top
 * level: before the '|' in *ret_pos, after it in *ret_kw (0 without one);
 * *ret_bar points at the '|' or at the terminating NUL (of "" for NULL).
 */
int pyproc__fmt_shape(const char *fmt, uint32_t *ret_pos, uint32_t *ret_kw, const char **ret_bar);

/*
 * Append the CALL payload [kind, ref, [positional...], {kwargs...}] to b,
 * taking values from a.  Returns 0; -EINVAL for a bad format, a NULL ref,
 * a NULL string, NULL bytes of nonzero length or an 'm' that is not exactly
 * one msgpack value; -EMSGSIZE when b's limit would be passed (or a string
 * needs more than 32 bits of length); -ENOMEM; or an error of a->next().
 * On failure b->len is what it was before.
 */
int pyproc__fmt_encode_call(struct shm_buf *b, int kind, const char *ref, const char *fmt,
                            struct pyproc__args *a);

/*
 * Append one item of a map, [[positional...], {kwargs...}]: a call's
 * arguments without its kind and reference.  Returns and restores b as
 * pyproc__fmt_encode_call() does.
 */
int pyproc__fmt_encode_args(struct shm_buf *b, const char *fmt, struct pyproc__args *a);

/*
 * A format checked once for many items (a map's pushes): a copy of it,
 * its shape, and for a format without brackets (the usual kind: "i",
 * "sd|si") its codes in order, without the spaces and the '|', which
 * encode without another look at the format.  Zeroed: no format yet.
 */
struct pyproc__fmt_plan {
    char *fmt; /* the copy, "" for NULL; NULL before the first */
    uint32_t npos, nkw;
    size_t bar;  /* where the '|' is in fmt, or its length */
    char *codes; /* npos + nkw codes of a flat format, else NULL */
    /* A flat format of fixed-size values only (no str, bytes, buffer or
     * keyword): the most bytes an item takes, else 0. */
    size_t fixed_max;
};

/* Whether pl was made from a format that reads as fmt. */
bool pyproc__fmt_plan_is(const struct pyproc__fmt_plan *pl, const char *fmt);
/* Make pl from fmt, dropping what it held.  Returns 0, -EINVAL for a bad
 * format (pl is left empty) or -ENOMEM. */
int pyproc__fmt_plan_set(struct pyproc__fmt_plan *pl, const char *fmt);
void pyproc__fmt_plan_free(struct pyproc__fmt_plan *pl);
/* pyproc__fmt_encode_args() with pl's format, which must be set. */
int pyproc__fmt_encode_plan(struct shm_buf *b, const struct pyproc__fmt_plan *pl,
                            struct pyproc__args *a);

/*
 * Append one value to b as pyproc_msg_new() describes it: one code makes
 * that value, several a list of them, none nil.  A '|' is -EINVAL.  Returns
 * and restores b as pyproc__fmt_encode_call() does.
 */
int pyproc__fmt_encode_value(struct shm_buf *b, const char *fmt, struct pyproc__args *a);

/* Helpers shared with the reader in msg.c. */

/* True for a character that the format ignores. */
static inline int pyproc__fmt_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Items directly inside the bracket that opens at `open`, in a format that
 * pyproc__fmt_check() accepted. */
uint32_t pyproc__fmt_count(const char *open);

#endif
