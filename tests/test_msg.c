/*
 * Messages and the argument format: round trips through pyproc_msg_new()
 * and pyproc_msg_read(), byte-exact encodings (the hex strings were printed
 * by Debian's python3-msgpack 1.0.3, packb(v, use_bin_type=True)), bad
 * formats, size limits, walking values of unknown shape, and msgpack from
 * outside that is truncated, padded or hostile.
 */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "host/fmt.h"
#include "host/msg.h"
#include "shm/mpvalid.h"
#include "pyproc.h"

/* ---- helpers ---- */

static size_t unhex(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = strlen(hex) / 2;

    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
    return n;
}

static void assert_bytes_hex(const void *p, size_t n, const char *hex)
{
    char *s = malloc(2 * n + 1);

    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        sprintf(s + 2 * i, "%02x", ((const unsigned char *)p)[i]);
    s[2 * n] = '\0';
    assert_string_equal(s, hex);
    free(s);
}

static void assert_msg_hex(pyproc_msg *m, const char *hex)
{
    size_t len = 0;
    const void *p = pyproc_msg_data(m, &len);

    assert_non_null(p);
    assert_bytes_hex(p, len, hex);
}

/* pyproc_msg_new() that must succeed and encode to hex; frees the message. */
#define NEW_HEX(hex, ...)                                                                          \
    do {                                                                                           \
        pyproc_msg *m_ = NULL;                                                                     \
        assert_int_equal(pyproc_msg_new(&m_, __VA_ARGS__), 0);                                     \
        assert_msg_hex(m_, hex);                                                                   \
        pyproc_msg_free(m_);                                                                       \
    } while (0)

static pyproc_msg *from_hex(const char *hex)
{
    unsigned char raw[256];
    size_t n = unhex(hex, raw, sizeof(raw));
    pyproc_msg *m = NULL;

    assert_int_equal(pyproc__msg_from_value(&m, raw, n), 0);
    return m;
}

static int enc_call(struct shm_buf *b, int kind, const char *ref, const char *fmt, ...)
{
    struct pyproc__args a;
    struct pyproc__va va;
    va_list ap;
    int err;

    /* ap stays open while the copy is read: clang's AddressSanitizer
     * poisons the register save area at va_end(). */
    va_start(ap, fmt);
    va_copy(va.ap, ap);
    pyproc__args_va(&a, &va);
    err = pyproc__fmt_encode_call(b, kind, ref, fmt, &a);
    va_end(va.ap);
    va_end(ap);
    return err;
}

/* A source that counts what it is asked for and hands out small ints, or
 * fails once it has given `fail_after` values. */
struct counting {
    int calls;
    int fail_after;
};

static int counting_next(struct pyproc__args *a, char code, union pyproc__arg *out)
{
    struct counting *c = a->state;

    if (c->fail_after >= 0 && c->calls >= c->fail_after)
        return -EPROTO;
    c->calls++;
    memset(out, 0, sizeof(*out));
    if (code == 's')
        out->s = "k";
    else
        out->i = c->calls;
    return 0;
}

/* ---- round trips ---- */

static void test_roundtrip_scalars(void **state)
{
    pyproc_msg *m;
    int b = -1, i = 0;
    int64_t I = 0;
    uint64_t u = 0;
    double d = 0;

    assert_int_equal(pyproc_msg_new(&m, "n"), 0);
    assert_int_equal(pyproc_msg_read(m, "n"), 0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_NIL);
    pyproc_msg_free(m);

    assert_int_equal(pyproc_msg_new(&m, "b", 7), 0);
    assert_int_equal(pyproc_msg_read(m, "b", &b), 0);
    assert_int_equal(b, 1);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_new(&m, "b", 0), 0);
    assert_int_equal(pyproc_msg_read(m, "b", &b), 0);
    assert_int_equal(b, 0);
    pyproc_msg_free(m);

    const int ints[] = {0, 1, -1, -32, -33, 127, 128, -129, INT_MAX, INT_MIN};
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        assert_int_equal(pyproc_msg_new(&m, "i", ints[k]), 0);
        assert_int_equal(pyproc_msg_read(m, "i", &i), 0);
        assert_int_equal(i, ints[k]);
        pyproc_msg_free(m);
    }

    const int64_t bigs[] = {INT64_MIN, INT64_MAX, -2147483649LL, 4294967296LL};
    for (size_t k = 0; k < sizeof(bigs) / sizeof(bigs[0]); k++) {
        assert_int_equal(pyproc_msg_new(&m, "I", bigs[k]), 0);
        assert_int_equal(pyproc_msg_read(m, "I", &I), 0);
        assert_true(I == bigs[k]);
        pyproc_msg_free(m);
    }

    assert_int_equal(pyproc_msg_new(&m, "u", UINT64_MAX), 0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_UINT);
    assert_int_equal(pyproc_msg_read(m, "u", &u), 0);
    assert_true(u == UINT64_MAX);
    pyproc_msg_free(m);

    const double ds[] = {1.5, -0.0, 1e300, -2.5e-310};
    for (size_t k = 0; k < sizeof(ds) / sizeof(ds[0]); k++) {
        assert_int_equal(pyproc_msg_new(&m, "d", ds[k]), 0);
        assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
        assert_memory_equal(&d, &ds[k], sizeof(d)); /* keeps -0.0's sign */
        pyproc_msg_free(m);
    }
}

static void test_roundtrip_strings_bytes(void **state)
{
    const char *utf8 = "h\xc3\xa9llo \xe2\x82\xac";
    const char *s = NULL, *s2 = NULL;
    const void *p = NULL;
    size_t n = 99;
    pyproc_msg *m;

    assert_int_equal(pyproc_msg_new(&m, "s", utf8), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, utf8);
    /* A second read hands out the same copy instead of another one. */
    assert_int_equal(pyproc_msg_read(m, "s", &s2), 0);
    assert_ptr_equal(s, s2);
    /* 'y' reads a str's bytes too. */
    assert_int_equal(pyproc_msg_read(m, "y", &p, &n), 0);
    assert_int_equal(n, strlen(utf8));
    assert_memory_equal(p, utf8, n);
    assert_int_equal(pyproc_msg_len(m), (int)strlen(utf8));
    pyproc_msg_free(m);

    assert_int_equal(pyproc_msg_new(&m, "s", ""), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "");
    pyproc_msg_free(m);

    assert_int_equal(pyproc_msg_new(&m, "y", "a\0b", (size_t)3), 0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_BYTES);
    assert_int_equal(pyproc_msg_read(m, "y", &p, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "a\0b", 3);
    /* bytes are not a str */
    assert_int_equal(pyproc_msg_read(m, "s", &s), -EBADMSG);
    pyproc_msg_free(m);

    assert_int_equal(pyproc_msg_new(&m, "y", NULL, (size_t)0), 0);
    assert_int_equal(pyproc_msg_read(m, "y", &p, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(p);
    pyproc_msg_free(m);
}

static void test_roundtrip_nested(void **state)
{
    const char *s1 = NULL, *k = NULL, *k2 = NULL;
    const void *y = NULL;
    size_t yn = 0;
    int i = 0, b = 0;
    double d = 0;
    pyproc_msg *m;

    assert_int_equal(pyproc_msg_new(&m, "[i [s {sn sy}] {}] d b", 42, "x", "k", "k2", "zz",
                                    (size_t)2, 0.5, 1),
                     0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_LIST);
    assert_int_equal(pyproc_msg_len(m), 3);
    assert_int_equal(pyproc_msg_read(m, "[i[s{snsy}]{}]db", &i, &s1, &k, &k2, &y, &yn, &d, &b), 0);
    assert_int_equal(i, 42);
    assert_string_equal(s1, "x");
    assert_string_equal(k, "k");
    assert_string_equal(k2, "k2");
    assert_int_equal(yn, 2);
    assert_memory_equal(y, "zz", 2);
    assert_true(d == 0.5);
    assert_int_equal(b, 1);
    pyproc_msg_free(m);

    /* Empty and NULL formats make nil and read it back. */
    assert_int_equal(pyproc_msg_new(&m, ""), 0);
    assert_msg_hex(m, "c0");
    assert_int_equal(pyproc_msg_read(m, ""), 0);
    assert_int_equal(pyproc_msg_read(m, NULL), 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_new(&m, NULL), 0);
    assert_msg_hex(m, "c0");
    pyproc_msg_free(m);
}

static void test_roundtrip_splice(void **state)
{
    unsigned char raw[16];
    size_t n = unhex("81a16b920102", raw, sizeof(raw)); /* {"k": [1, 2]} */
    const void *p = NULL;
    size_t pn = 0;
    int i = 0;
    pyproc_msg *m;

    assert_int_equal(pyproc_msg_new(&m, "[im]", 1, raw, n), 0);
    assert_msg_hex(m, "920181a16b920102");
    assert_int_equal(pyproc_msg_read(m, "[im]", &i, &p, &pn), 0);
    assert_int_equal(i, 1);
    assert_int_equal(pn, n);
    assert_memory_equal(p, raw, n);
    /* A lone 'm' reads the whole value. */
    assert_int_equal(pyproc_msg_read(m, "m", &p, &pn), 0);
    assert_int_equal(pn, 8);
    pyproc_msg_free(m);
}

/* ---- exact encodings ---- */

static void test_python_encodings(void **state)
{
    NEW_HEX("c0", "n");
    NEW_HEX("c3", "b", 1);
    NEW_HEX("c2", "b", 0);
    NEW_HEX("00", "i", 0);
    NEW_HEX("7f", "i", 127);
    NEW_HEX("cc80", "i", 128);
    NEW_HEX("ccff", "i", 255);
    NEW_HEX("cd0100", "i", 256);
    NEW_HEX("cdffff", "i", 65535);
    NEW_HEX("ce00010000", "i", 65536);
    NEW_HEX("ff", "i", -1);
    NEW_HEX("e0", "i", -32);
    NEW_HEX("d0df", "i", -33);
    NEW_HEX("d080", "i", -128);
    NEW_HEX("d1ff7f", "i", -129);
    NEW_HEX("d18000", "i", -32768);
    NEW_HEX("d2ffff7fff", "i", -32769);
    NEW_HEX("ce7fffffff", "i", INT_MAX);
    NEW_HEX("d280000000", "i", INT_MIN);
    NEW_HEX("ceffffffff", "I", (int64_t)4294967295LL);
    NEW_HEX("cf0000000100000000", "I", (int64_t)4294967296LL);
    NEW_HEX("d3ffffffff7fffffff", "I", (int64_t)-2147483649LL);
    NEW_HEX("cf7fffffffffffffff", "I", INT64_MAX);
    NEW_HEX("d38000000000000000", "I", INT64_MIN);
    NEW_HEX("7f", "u", (uint64_t)127);
    NEW_HEX("cfffffffffffffffff", "u", UINT64_MAX);
    NEW_HEX("cb3ff8000000000000", "d", 1.5);
    NEW_HEX("cb8000000000000000", "d", -0.0);
    NEW_HEX("cb7e37e43c8800759c", "d", 1e300);
    NEW_HEX("a0", "s", "");
    NEW_HEX("aa68c3a96c6c6f20e282ac", "s", "h\xc3\xa9llo \xe2\x82\xac");
    NEW_HEX("c400", "y", "", (size_t)0);
    NEW_HEX("c403610062", "y", "a\0b", (size_t)3);
    NEW_HEX("90", "[]");
    NEW_HEX("80", "{}");
    NEW_HEX("930192a17881a16bc080", "[i[s{sn}]{}]", 1, "x", "k");
    NEW_HEX("92a17301", "si", "s", 1);
    NEW_HEX("dc0010000102030405060708090a0b0c0d0e0f", "[iiiiiiiiiiiiiiii]", 0, 1, 2, 3, 4, 5, 6, 7,
            8, 9, 10, 11, 12, 13, 14, 15);
    NEW_HEX(
        "de0010a16100a16201a16302a16403a16504a16605a16706a16807a16908"
        "a16a09a16b0aa16c0ba16d0ca16e0da16f0ea1700f",
        "{si si si si si si si si si si si si si si si si}", "a", 0, "b", 1, "c", 2, "d", 3, "e", 4,
        "f", 5, "g", 6, "h", 7, "i", 8, "j", 9, "k", 10, "l", 11, "m", 12, "n", 13, "o", 14, "p",
        15);
}

/* Strings and bytes at the edges of their length classes. */
static void test_length_classes(void **state)
{
    static const struct {
        size_t n;
        const char *str_head, *bin_head;
    } cases[] = {
        {31, "bf", "c41f"},
        {32, "d920", "c420"},
        {255, "d9ff", "c4ff"},
        {256, "da0100", "c50100"},
        {65536, "db00010000", "c600010000"},
    };
    char *s = malloc(65537);

    assert_non_null(s);
    memset(s, 'a', 65536);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        size_t n = cases[k].n, len = 0, hl;
        pyproc_msg *m;
        const unsigned char *p;

        s[n] = '\0';
        assert_int_equal(pyproc_msg_new(&m, "s", s), 0);
        p = pyproc_msg_data(m, &len);
        hl = strlen(cases[k].str_head) / 2;
        assert_int_equal(len, hl + n);
        assert_bytes_hex(p, hl, cases[k].str_head);
        assert_memory_equal(p + hl, s, n);
        pyproc_msg_free(m);

        assert_int_equal(pyproc_msg_new(&m, "y", s, n), 0);
        p = pyproc_msg_data(m, &len);
        hl = strlen(cases[k].bin_head) / 2;
        assert_int_equal(len, hl + n);
        assert_bytes_hex(p, hl, cases[k].bin_head);
        pyproc_msg_free(m);
        s[n] = 'a';
    }
    free(s);
}

static void test_encode_call(void **state)
{
    struct shm_buf b = {0};

    assert_int_equal(enc_call(&b, 0, "m.f", "ii|sd", 2, 3, "factor", 1.5), 0);
    assert_bytes_hex(b.data, b.len, "9400a36d2e6692020381a6666163746f72cb3ff8000000000000");
    shm_buf_reset(&b);
    assert_int_equal(enc_call(&b, 1, "a.b", NULL), 0);
    assert_bytes_hex(b.data, b.len, "9401a3612e629080");
    shm_buf_reset(&b);
    /* Only kwargs, one of them a container. */
    assert_int_equal(enc_call(&b, 0, "a.b", " | s[i] ", "k", 1), 0);
    assert_bytes_hex(b.data, b.len, "9400a3612e629081a16b9101");
    /* A second call appends after the first. */
    assert_int_equal(enc_call(&b, 1, "a.b", ""), 0);
    assert_bytes_hex(b.data, b.len, "9400a3612e629081a16b91019401a3612e629080");
    assert_int_equal(enc_call(&b, 0, NULL, "i", 1), -EINVAL);
    assert_int_equal(b.len, 20);
    shm_buf_free(&b);
}

/* A call without arguments takes a path of its own: the same bytes as the
 * general one (which a format of one space takes), for references of each
 * str length class. */
static void test_encode_bare_call(void **state)
{
    struct shm_buf bare = {0}, general = {0};
    char ref[300];

    for (size_t n = 1; n < sizeof ref; n += 7) {
        memset(ref, 'r', n);
        ref[n] = 0;
        assert_int_equal(enc_call(&bare, 2, ref, NULL), 0);
        assert_int_equal(enc_call(&general, 2, ref, " "), 0);
        assert_int_equal(bare.len, general.len);
        assert_memory_equal(bare.data, general.data, bare.len);
        shm_buf_reset(&bare);
        shm_buf_reset(&general);
    }
    shm_buf_free(&bare);
    shm_buf_free(&general);
}

/* ---- bad formats and arguments ---- */

static void test_bad_formats(void **state)
{
    static const char *bad[] = {
        "x",    "i x",     "[",     "]",     "[}",  "{]", "{s}",   "{sss}", "{[}]",
        "[i]]", "i|sd|si", "[i|s]", "{s|i}", "|id", "|s", "i|sdi", "|[]i",  "\x01",
    };
    static const char *good[] = {
        NULL, "",       "  ",           "i",         "ii|sd",  "|s[i{sd}]", "{}",
        "[]", "{s[i]}", "| s n s {ss}", "nbiIudsym", "[[[]]]", "ii|",
    };
    char deep[2 * PYPROC__FMT_MAX_DEPTH + 3];
    struct counting c = {0, -1};
    struct pyproc__args a = {counting_next, &c};
    struct shm_buf b = {0};

    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        assert_int_equal(pyproc__fmt_check(bad[k]), -EINVAL);
        assert_int_equal(shm_buf_append(&b, "abc", 3), 0);
        assert_int_equal(pyproc__fmt_encode_call(&b, 0, "r", bad[k], &a), -EINVAL);
        assert_int_equal(pyproc__fmt_encode_value(&b, bad[k], &a), -EINVAL);
        assert_int_equal(b.len, 3);
        assert_memory_equal(b.data, "abc", 3);
        shm_buf_reset(&b);
    }
    /* Checked before anything is taken: no value was asked for. */
    assert_int_equal(c.calls, 0);
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++)
        assert_int_equal(pyproc__fmt_check(good[k]), 0);

    /* Nesting up to the limit is fine, one more level is not. */
    memset(deep, '[', PYPROC__FMT_MAX_DEPTH);
    memset(deep + PYPROC__FMT_MAX_DEPTH, ']', PYPROC__FMT_MAX_DEPTH);
    deep[2 * PYPROC__FMT_MAX_DEPTH] = '\0';
    assert_int_equal(pyproc__fmt_check(deep), 0);
    memmove(deep + 1, deep, 2 * PYPROC__FMT_MAX_DEPTH + 1);
    deep[0] = '[';
    strcat(deep, "]");
    assert_int_equal(pyproc__fmt_check(deep), -EINVAL);

    /* '|' makes no sense in a single value. */
    assert_int_equal(pyproc__fmt_encode_value(&b, "i|si", &a), -EINVAL);
    assert_int_equal(c.calls, 0);
    assert_int_equal(b.len, 0);
    shm_buf_free(&b);
}

static void test_bad_arguments(void **state)
{
    unsigned char trunc[2] = {0x92, 0x01}, trail[2] = {0xc0, 0xc0};
    struct shm_buf b = {0};
    pyproc_msg *m = NULL;

    assert_int_equal(shm_buf_append(&b, "xy", 2), 0);
    /* The failing value comes after others were written: all undone. */
    assert_int_equal(enc_call(&b, 0, "r", "is", 1, (const char *)NULL), -EINVAL);
    assert_int_equal(enc_call(&b, 0, "r", "i|sy", 1, "k", NULL, (size_t)3), -EINVAL);
    assert_int_equal(enc_call(&b, 0, "r", "im", 1, trunc, sizeof(trunc)), -EINVAL);
    assert_int_equal(enc_call(&b, 0, "r", "im", 1, trail, sizeof(trail)), -EINVAL);
    assert_int_equal(enc_call(&b, 0, "r", "im", 1, NULL, (size_t)0), -EINVAL);
    assert_int_equal(enc_call(&b, 0, "r", "im", 1, trail, (size_t)0), -EINVAL);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "xy", 2);
    shm_buf_free(&b);

    assert_int_equal(pyproc_msg_new(&m, "[is]", 1, (const char *)NULL), -EINVAL);
    assert_null(m);
    assert_int_equal(pyproc_msg_new(&m, "q"), -EINVAL);
    assert_null(m);

    /* An error from the source ends the encoding with that error. */
    struct counting c = {0, 2};
    struct pyproc__args a = {counting_next, &c};
    assert_int_equal(pyproc__fmt_encode_call(&b, 0, "r", "ii|si", &a), -EPROTO);
    assert_int_equal(c.calls, 2);
    assert_int_equal(b.len, 0);
    shm_buf_free(&b);
}

static void test_size_limit(void **state)
{
    struct shm_buf b = {.limit = 16};
    char s[64];

    memset(s, 'x', sizeof(s) - 1);
    s[sizeof(s) - 1] = '\0';
    assert_int_equal(enc_call(&b, 0, "r", "s", s), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    /* Exactly at the limit is fine: 94 00 a1 72 91 a9 + 9 bytes + 80. */
    s[9] = '\0';
    assert_int_equal(enc_call(&b, 0, "r", "s", s), 0);
    assert_int_equal(b.len, 16);
    shm_buf_reset(&b);
    s[10] = '\0';
    s[9] = 'x';
    assert_int_equal(enc_call(&b, 0, "r", "s", s), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    /* The limit counts what the buffer held before. */
    assert_int_equal(shm_buf_append(&b, "012345678", 9), 0);
    assert_int_equal(enc_call(&b, 0, "r", "i", 1), 0); /* 7 bytes */
    assert_int_equal(b.len, 16);
    assert_int_equal(enc_call(&b, 0, "r", ""), -EMSGSIZE);
    assert_int_equal(b.len, 16);
    shm_buf_free(&b);
}

/* ---- values of unknown shape ---- */

struct text {
    char s[512];
    size_t n;
};

static void add(struct text *t, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    t->n += (size_t)vsnprintf(t->s + t->n, sizeof(t->s) - t->n, fmt, ap);
    va_end(ap);
    assert_true(t->n < sizeof(t->s));
}

/* Python's repr() of the message, found with type/len/at alone. */
static void repr(pyproc_msg *m, struct text *t)
{
    int b;
    int64_t I;
    uint64_t u;
    double d;
    const char *s;
    const void *p;
    size_t n;
    int len = pyproc_msg_len(m);

    switch (pyproc_msg_type(m)) {
    case PYPROC_NIL:
        add(t, "None");
        return;
    case PYPROC_BOOL:
        assert_int_equal(pyproc_msg_read(m, "b", &b), 0);
        add(t, b ? "True" : "False");
        return;
    case PYPROC_INT:
        assert_int_equal(pyproc_msg_read(m, "I", &I), 0);
        add(t, "%lld", (long long)I);
        return;
    case PYPROC_UINT:
        assert_int_equal(pyproc_msg_read(m, "u", &u), 0);
        add(t, "%llu", (unsigned long long)u);
        return;
    case PYPROC_FLOAT:
        assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
        add(t, "%g", d);
        return;
    case PYPROC_STR:
        assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
        add(t, "'%s'", s);
        return;
    case PYPROC_BYTES:
        assert_int_equal(pyproc_msg_read(m, "y", &p, &n), 0);
        add(t, "b'%.*s'", (int)n, (const char *)p);
        return;
    case PYPROC_LIST:
        add(t, "[");
        for (int i = 0; i < len; i++) {
            pyproc_msg *it = NULL;
            assert_int_equal(pyproc_msg_at(m, (size_t)i, &it, NULL), 0);
            add(t, i ? ", " : "");
            repr(it, t);
            pyproc_msg_free(it);
        }
        add(t, "]");
        return;
    case PYPROC_MAP:
        add(t, "{");
        for (int i = 0; i < len; i++) {
            pyproc_msg *k = NULL, *v = NULL;
            assert_int_equal(pyproc_msg_at(m, (size_t)i, &k, &v), 0);
            add(t, i ? ", " : "");
            repr(k, t);
            add(t, ": ");
            repr(v, t);
            pyproc_msg_free(k);
            pyproc_msg_free(v);
        }
        add(t, "}");
        return;
    }
    fail_msg("unexpected type %d", pyproc_msg_type(m));
}

static void test_walk(void **state)
{
    /* [1, -2, "x", [True, None], {"k": 1.5, "l": [b"ab"]}, 2**64-1, 0.25] */
    pyproc_msg *l = from_hex(
        "9701fea17892c3c082a16bcb3ff8000000000000a16c91"
        "c4026162cfffffffffffffffffcb3fd0000000000000");
    /* {"a": 1, "b": [2, 3], "c": {"d": None}, "e": False} */
    pyproc_msg *m = from_hex("84a16101a162920203a16381a164c0a165c2");
    struct text t = {.n = 0};
    pyproc_msg *k = NULL, *v = NULL;

    repr(l, &t);
    assert_string_equal(t.s,
                        "[1, -2, 'x', [True, None], {'k': 1.5, 'l': "
                        "[b'ab']}, 18446744073709551615, 0.25]");
    t.n = 0;
    repr(m, &t);
    assert_string_equal(t.s, "{'a': 1, 'b': [2, 3], 'c': {'d': None}, 'e': False}");

    /* Out of order after an in-order walk, so a remembered position must not
     * be used past where it is valid. */
    assert_int_equal(pyproc_msg_at(l, 2, &k, NULL), 0);
    assert_msg_hex(k, "a178");
    pyproc_msg_free(k);
    assert_int_equal(pyproc_msg_at(l, 0, &k, NULL), 0);
    assert_msg_hex(k, "01");
    pyproc_msg_free(k);
    assert_int_equal(pyproc_msg_at(m, 3, &k, &v), 0);
    assert_msg_hex(k, "a165");
    assert_msg_hex(v, "c2");
    pyproc_msg_free(k);
    pyproc_msg_free(v);
    assert_int_equal(pyproc_msg_at(m, 1, &k, NULL), 0); /* key only */
    assert_msg_hex(k, "a162");
    pyproc_msg_free(k);

    k = v = NULL;
    assert_int_equal(pyproc_msg_at(l, 7, &k, NULL), -ERANGE);
    assert_int_equal(pyproc_msg_at(m, 4, &k, &v), -ERANGE);
    assert_int_equal(pyproc_msg_at(l, 0, &k, &v), -EINVAL); /* list: no val */
    assert_int_equal(pyproc_msg_at(l, 0, NULL, NULL), -EINVAL);
    assert_null(k);
    assert_null(v);
    pyproc_msg_free(m);

    m = from_hex("01");
    assert_int_equal(pyproc_msg_at(m, 0, &k, NULL), -EINVAL);
    assert_int_equal(pyproc_msg_len(m), -EINVAL);
    assert_int_equal(pyproc_msg_type(m), PYPROC_INT);
    pyproc_msg_free(m);
    m = from_hex("d40102"); /* fixext 1 */
    assert_int_equal(pyproc_msg_type(m), PYPROC_EXT);
    pyproc_msg_free(m);
    m = from_hex("ca3fc00000"); /* float32 1.5 */
    assert_int_equal(pyproc_msg_type(m), PYPROC_FLOAT);
    pyproc_msg_free(m);
    pyproc_msg_free(l);
}

/* Walking a long list item by item stays linear and lands on each item. */
static void test_walk_long(void **state)
{
    enum { N = 20000 };
    struct shm_buf b = {0};
    pyproc_msg *m = NULL;
    unsigned char head[3] = {0xdc, N >> 8, N & 0xff};

    assert_int_equal(shm_buf_append(&b, head, 3), 0);
    for (int i = 0; i < N; i++) {
        struct counting c = {i, -1};
        struct pyproc__args a = {counting_next, &c};
        assert_int_equal(pyproc__fmt_encode_value(&b, "i", &a), 0);
    }
    assert_int_equal(pyproc__msg_take_buf(&m, &b), 0);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(pyproc_msg_len(m), N);
    for (int i = 0; i < N; i++) {
        pyproc_msg *it = NULL;
        int v = 0;
        assert_int_equal(pyproc_msg_at(m, (size_t)i, &it, NULL), 0);
        assert_int_equal(pyproc_msg_read(it, "i", &v), 0);
        assert_int_equal(v, i + 1);
        pyproc_msg_free(it);
    }
    pyproc_msg_free(m);
}

/* ---- reads that must fail ---- */

static void test_read_errors(void **state)
{
    pyproc_msg *m;
    int i = 0, b = 0;
    int64_t I = 0;
    uint64_t u = 0;
    double d = 0;
    const char *s = NULL;

    assert_int_equal(pyproc_msg_new(&m, "I", (int64_t)INT_MAX + 1), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &i), -ERANGE);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_new(&m, "I", (int64_t)INT_MIN - 1), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &i), -ERANGE);
    assert_int_equal(pyproc_msg_read(m, "u", &u), -ERANGE);
    assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
    assert_true(d == (double)INT_MIN - 1);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_new(&m, "u", UINT64_MAX), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &i), -ERANGE);
    assert_int_equal(pyproc_msg_read(m, "I", &I), -ERANGE);
    assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
    assert_true(d == 18446744073709551615.0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_new(&m, "i", -1), 0);
    assert_int_equal(pyproc_msg_read(m, "u", &u), -ERANGE);
    assert_int_equal(pyproc_msg_read(m, "b", &b), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "n"), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "s", &s), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "[i]", &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "ii", &i, &i), -EBADMSG);
    /* Bad read formats, and '|' which only calls have. */
    assert_int_equal(pyproc_msg_read(m, "i|si", &i, &s, &i), -EINVAL);
    assert_int_equal(pyproc_msg_read(m, "q"), -EINVAL);
    assert_int_equal(pyproc_msg_read(m, "[i", &i), -EINVAL);
    assert_int_equal(pyproc_msg_read(m, "i", NULL), -EINVAL);
    pyproc_msg_free(m);

    m = from_hex("ca3fc00000"); /* float32 1.5 */
    assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
    assert_true(d == 1.5);
    assert_int_equal(pyproc_msg_read(m, "i", &i), -EBADMSG);
    pyproc_msg_free(m);

    /* Counts must match exactly. */
    assert_int_equal(pyproc_msg_new(&m, "[ii]", 1, 2), 0);
    assert_int_equal(pyproc_msg_read(m, "[i]", &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "[iii]", &i, &i, &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "iii", &i, &i, &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "{si}", &s, &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "", &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "ii", &i, &b), 0);
    assert_int_equal(i + b, 3);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_msg_new(&m, "{sisi}", "a", 1, "b", 2), 0);
    assert_int_equal(pyproc_msg_read(m, "{si}", &s, &i), -EBADMSG);
    assert_int_equal(pyproc_msg_read(m, "[ss]", &s, &s), -EBADMSG);
    pyproc_msg_free(m);

    /* A str with a NUL inside would be cut short in C. */
    m = from_hex("a3610062");
    assert_int_equal(pyproc_msg_read(m, "s", &s), -EBADMSG);
    pyproc_msg_free(m);

    /* An error message has no value. */
    assert_int_equal(pyproc__msg_error(&m, "worker %d died: %s", 3, "SIGKILL"), 0);
    assert_string_equal(pyproc_msg_error(m), "worker 3 died: SIGKILL");
    assert_null(pyproc_msg_data(m, NULL));
    assert_int_equal(pyproc_msg_read(m, "n"), -EINVAL);
    assert_int_equal(pyproc_msg_type(m), -EINVAL);
    assert_int_equal(pyproc_msg_len(m), -EINVAL);
    assert_int_equal(pyproc_msg_at(m, 0, &m, NULL), -EINVAL);
    pyproc_msg_free(m);
}

/* ---- msgpack from outside ---- */

static void test_from_value(void **state)
{
    static const char *bad[] = {
        "",           /* nothing */
        "92 01",      /* list of two with one item */
        "c0c0",       /* trailing value */
        "01ff",       /* trailing byte */
        "c1",         /* never used */
        "ddffffffff", /* 2**32-1 items that are not there */
        "dfffffffff", /* as many pairs */
        "a561",       /* str of 5 with 1 byte */
        "c4",         /* bin 8 without its length */
        "c405",       /* bin without its bytes */
        "d9",         /* str 8 without its length */
        "cd01",       /* uint 16 cut short */
        "cb3ff0",     /* float64 cut short */
        "d5",         /* fixext 2 without type */
        "c70201",     /* ext 8 without its bytes */
        "81a16b",     /* map with a key and no value */
    };
    unsigned char raw[64];
    pyproc_msg *m = NULL;

    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        char hex[64];
        size_t n = 0;
        for (const char *h = bad[k]; *h; h++)
            if (*h != ' ')
                hex[n++] = *h;
        hex[n] = '\0';
        n = unhex(hex, raw, sizeof(raw));
        assert_int_equal(pyproc__msg_from_value(&m, raw, n), -EBADMSG);
        assert_null(m);
        assert_int_equal(shm_mp_check(raw, n), -EBADMSG);
    }

    /* Deep nesting is walked without recursion. */
    enum { DEPTH = 200000 };
    unsigned char *deep = malloc(DEPTH + 1);
    assert_non_null(deep);
    memset(deep, 0x91, DEPTH);
    deep[DEPTH] = 0xc0;
    assert_int_equal(pyproc__msg_from_value(&m, deep, DEPTH + 1), 0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_LIST);
    pyproc_msg_free(m);
    m = NULL;
    assert_int_equal(pyproc__msg_from_value(&m, deep, DEPTH), -EBADMSG);
    assert_null(m);
    free(deep);

    /* The copy is the message's own. */
    size_t n = unhex("c70301616263", raw, sizeof(raw)); /* ext 8, 3 bytes */
    assert_int_equal(pyproc__msg_from_value(&m, raw, n), 0);
    raw[0] = 0xc0;
    assert_msg_hex(m, "c70301616263");
    assert_int_equal(pyproc_msg_type(m), PYPROC_EXT);
    pyproc_msg_free(m);
}

/* A value of one byte is taken without a walk: every byte must get the
 * validator's answer, and a message of what it accepts. */
static void test_from_value_one_byte(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        unsigned char b = (unsigned char)c;
        pyproc_msg *m = NULL;
        int want = shm_mp_check(&b, 1);
        assert_int_equal(pyproc__msg_from_value(&m, &b, 1), want);
        if (want < 0) {
            assert_null(m);
            continue;
        }
        size_t len = 0;
        const unsigned char *d = pyproc_msg_data(m, &len);
        assert_int_equal(len, 1);
        assert_int_equal(d[0], b);
        pyproc_msg_free(m);
    }
}

static void test_null_args(void **state)
{
    struct shm_buf b = {0};
    pyproc_msg *m = NULL;
    size_t len = 7;

    assert_int_equal(pyproc_msg_new(NULL, "i", 1), -EINVAL);
    assert_int_equal(pyproc_msg_read(NULL, "n"), -EINVAL);
    assert_null(pyproc_msg_data(NULL, &len));
    assert_int_equal(len, 7);
    assert_null(pyproc_msg_error(NULL));
    assert_int_equal(pyproc_msg_type(NULL), -EINVAL);
    assert_int_equal(pyproc_msg_len(NULL), -EINVAL);
    assert_int_equal(pyproc_msg_at(NULL, 0, &m, NULL), -EINVAL);
    pyproc_msg_free(NULL);

    assert_int_equal(pyproc__msg_from_value(NULL, "\xc0", 1), -EINVAL);
    assert_int_equal(pyproc__msg_from_value(&m, NULL, 1), -EINVAL);
    assert_int_equal(pyproc__msg_take_buf(NULL, &b), -EINVAL);
    assert_int_equal(pyproc__msg_take_buf(&m, NULL), -EINVAL);
    assert_int_equal(pyproc__msg_take_buf(&m, &b), -EBADMSG); /* empty */
    assert_int_equal(pyproc__msg_error(NULL, "x"), -EINVAL);
    assert_null(m);

    assert_int_equal(pyproc__fmt_encode_value(NULL, "n", NULL), -EINVAL);
    assert_int_equal(pyproc__fmt_encode_call(&b, 0, "r", "", NULL), -EINVAL);

    assert_int_equal(pyproc_msg_new(&m, "i", 5), 0);
    assert_int_equal(pyproc_msg_data(m, NULL) != NULL, 1);
    assert_null(pyproc_msg_error(m));
    pyproc_msg_free(m);
}

static int enc_args_plan(struct shm_buf *b, bool plan, const char *fmt, ...)
{
    struct pyproc__fmt_plan pl = {0};
    struct pyproc__args a;
    struct pyproc__va va;
    va_list ap;
    int err;

    va_start(ap, fmt);
    va_copy(va.ap, ap);
    pyproc__args_va(&a, &va);
    if (!plan)
        err = pyproc__fmt_encode_args(b, fmt, &a);
    else if ((err = pyproc__fmt_plan_set(&pl, fmt)) == 0)
        err = pyproc__fmt_encode_plan(b, &pl, &a);
    va_end(va.ap);
    va_end(ap);
    pyproc__fmt_plan_free(&pl);
    return err;
}

/* A plan encodes the same bytes as the format read each time, for flat
 * formats of fixed-size values (one reservation), flat ones with strings
 * and keywords, and nested ones; and near a buffer's limit, where the
 * largest item of fixed-size values would not fit but this one does. */
static void test_plan_same_bytes(void **state)
{
    (void)state;
    static const char *fmts[] = {"i", "iIudbn", " i  d ", "sy|si", "[i{si}]|sd", ""};
    for (size_t k = 0; k < sizeof fmts / sizeof fmts[0]; k++) {
        struct shm_buf x = {0}, y = {0};
        for (int neg = 0; neg < 2; neg++) {
            int v = neg ? -70000 : 70000;
            int rx, ry;
            if (k == 0) {
                rx = enc_args_plan(&x, false, fmts[k], v);
                ry = enc_args_plan(&y, true, fmts[k], v);
            } else if (k == 1) {
                rx = enc_args_plan(&x, false, fmts[k], v, (int64_t)v * 100000, (uint64_t)7, 2.5, 1);
                ry = enc_args_plan(&y, true, fmts[k], v, (int64_t)v * 100000, (uint64_t)7, 2.5, 1);
            } else if (k == 2) {
                rx = enc_args_plan(&x, false, fmts[k], v, -1.5);
                ry = enc_args_plan(&y, true, fmts[k], v, -1.5);
            } else if (k == 3) {
                rx = enc_args_plan(&x, false, fmts[k], "ab", "xyz", (size_t)3, "k", v);
                ry = enc_args_plan(&y, true, fmts[k], "ab", "xyz", (size_t)3, "k", v);
            } else if (k == 4) {
                rx = enc_args_plan(&x, false, fmts[k], v, "a", 1, "k", 0.5);
                ry = enc_args_plan(&y, true, fmts[k], v, "a", 1, "k", 0.5);
            } else {
                rx = enc_args_plan(&x, false, fmts[k]);
                ry = enc_args_plan(&y, true, fmts[k]);
            }
            assert_int_equal(rx, 0);
            assert_int_equal(ry, 0);
        }
        assert_int_equal(x.len, y.len);
        assert_memory_equal(x.data, y.data, x.len);
        shm_buf_free(&x);
        shm_buf_free(&y);
    }
    /* [[5], {}] takes 4 bytes; the largest item of "i" 13. */
    struct shm_buf b = {.limit = 4};
    assert_int_equal(enc_args_plan(&b, true, "i", 5), 0);
    assert_bytes_hex(b.data, b.len, "92910580");
    assert_int_equal(enc_args_plan(&b, true, "i", 5), -EMSGSIZE);
    assert_int_equal(b.len, 4);
    shm_buf_free(&b);
    /* A bad format makes no plan. */
    struct pyproc__fmt_plan pl = {0};
    assert_int_equal(pyproc__fmt_plan_set(&pl, "i]"), -EINVAL);
    assert_false(pyproc__fmt_plan_is(&pl, "i]"));
    assert_int_equal(pyproc__fmt_plan_set(&pl, "i"), 0);
    assert_true(pyproc__fmt_plan_is(&pl, "i"));
    assert_false(pyproc__fmt_plan_is(&pl, "ii"));
    pyproc__fmt_plan_free(&pl);
}

/* Messages of a block read as messages of their own, are freed in any
 * order, and the block goes with the last of them (ASan and Valgrind
 * see a leak or a double free). */
static void test_msg_block(void **state)
{
    (void)state;
    /* 7, "ab", nil, [1, 2] */
    unsigned char raw[16];
    size_t n = unhex("07a2616200c0920102", raw, sizeof raw);
    struct pyproc__msg_block *k = pyproc__msg_block_new(raw, n, 5);
    pyproc_msg *m[5] = {0};
    const char *bytes = pyproc__msg_block_bytes(k);
    int64_t v;
    const char *str;

    assert_non_null(k);
    memset(raw, 0xff, sizeof raw); /* the block has its own copy */
    assert_int_equal(pyproc__msg_block_take(k, bytes, 1, &m[0]), 0);
    assert_int_equal(pyproc__msg_block_take(k, bytes + 1, 3, &m[1]), 0);
    assert_int_equal(pyproc__msg_block_take(k, bytes + 6, 3, &m[2]), 0);
    pyproc__msg_block_done(k); /* two of five never made */
    assert_int_equal(pyproc_msg_read(m[0], "I", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(pyproc_msg_read(m[1], "s", &str), 0);
    assert_string_equal(str, "ab");
    pyproc_msg_free(m[1]); /* with the string copy 's' made */
    pyproc_msg *item = NULL;
    assert_int_equal(pyproc_msg_at(m[2], 1, &item, NULL), 0);
    pyproc_msg_free(m[2]);
    assert_int_equal(pyproc_msg_read(item, "I", &v), 0);
    assert_int_equal(v, 2);
    pyproc_msg_free(item);
    assert_int_equal(pyproc_msg_type(m[0]), PYPROC_INT);
    pyproc_msg_free(m[0]);

    /* Full: -ENOSPC; every message taken, the maker's reference last. */
    k = pyproc__msg_block_new(raw, 1, 1);
    assert_int_equal(pyproc__msg_block_take(k, pyproc__msg_block_bytes(k), 1, &m[0]), 0);
    assert_int_equal(pyproc__msg_block_take(k, pyproc__msg_block_bytes(k), 1, &m[1]), -ENOSPC);
    pyproc_msg_free(m[0]);
    pyproc__msg_block_done(k);
    pyproc__msg_block_done(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_scalars),   cmocka_unit_test(test_roundtrip_strings_bytes),
        cmocka_unit_test(test_roundtrip_nested),    cmocka_unit_test(test_roundtrip_splice),
        cmocka_unit_test(test_python_encodings),    cmocka_unit_test(test_length_classes),
        cmocka_unit_test(test_encode_call),         cmocka_unit_test(test_encode_bare_call),
        cmocka_unit_test(test_bad_formats),         cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_size_limit),          cmocka_unit_test(test_walk),
        cmocka_unit_test(test_walk_long),           cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_from_value),          cmocka_unit_test(test_null_args),
        cmocka_unit_test(test_plan_same_bytes),     cmocka_unit_test(test_msg_block),
        cmocka_unit_test(test_from_value_one_byte),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
