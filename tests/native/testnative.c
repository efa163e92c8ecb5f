/*
 * The native library of tests/test_native.c, loaded into workers with
 * pyproc_add_native(): a function for every type of the signature grammar,
 * strings and buffers in and out, two that crash, and its own declaration
 * table.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pyproc.h"

/* Identities: every integer type must come back exactly, limits included. */
/* clang-format off */
int8_t id_b(int8_t x) { return x; }
uint8_t id_B(uint8_t x) { return x; }
int16_t id_h(int16_t x) { return x; }
uint16_t id_H(uint16_t x) { return x; }
int32_t id_i(int32_t x) { return x; }
uint32_t id_I(uint32_t x) { return x; }
int64_t id_q(int64_t x) { return x; }
uint64_t id_Q(uint64_t x) { return x; }
float id_f(float x) { return x; }
double id_d(double x) { return x; }
/* clang-format on */

/* Wraps around, as unsigned arithmetic does. */
uint64_t add_Q(uint64_t a, uint64_t b)
{
    return a + b;
}

/* Negation widened, so that -INT64_MIN needs no overflow. */
double neg_q(int64_t x)
{
    return -(double)x;
}

/*
 * Ten arguments of ten types: more integers than x86-64 has argument
 * registers, so some go on the stack; each is weighted by its position so
 * that a swap shows.
 */
double mix(int8_t a, uint8_t b, int16_t c, uint16_t d, int32_t e, uint32_t f, int64_t g, uint64_t h,
           float i, double j)
{
    return 1.0 * a + 2.0 * b + 3.0 * c + 4.0 * d + 5.0 * e + 6.0 * f + 7.0 * (double)g +
           8.0 * (double)h + 9.0 * i + 10.0 * j;
}

/* Calls that ran, to show that a refused call ran nothing. */
static int32_t ran;

int32_t count_call(int32_t x)
{
    ran++;
    return x;
}

int32_t calls(void)
{
    return ran;
}

void reset(void)
{
    ran = 0;
}

/* Strings in and out. */
uint64_t str_len(const char *s)
{
    return s ? strlen(s) : UINT64_MAX;
}

const char *greet(const char *name)
{
    static _Thread_local char buf[256];
    strcpy(buf, "hello, ");
    strncat(buf, name, sizeof buf - strlen(buf) - 1);
    return buf;
}

const char *no_str(void)
{
    return NULL;
}

/* Byte buffers in: the length, or -1 for a NULL pointer. */
int64_t buf_len(const void *p, size_t n)
{
    return p ? (int64_t)n : -1;
}

uint64_t buf_sum(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    return s;
}

/* Out buffers: n bytes i * 7 (starting with a NUL), at most cap of them. */
int32_t fill(void *buf, size_t cap, size_t *len, int32_t n)
{
    size_t k = n < 0 ? 0 : (size_t)n;
    if (k > cap)
        k = cap;
    for (size_t i = 0; i < k; i++)
        ((unsigned char *)buf)[i] = (unsigned char)(i * 7);
    *len = k;
    return n;
}

void reverse(const void *in, size_t n, void *out, size_t cap, size_t *len)
{
    const unsigned char *s = in;
    unsigned char *d = out;
    if (n > cap)
        n = cap;
    for (size_t i = 0; i < n; i++)
        d[i] = s[n - 1 - i];
    *len = n;
}

/* Two outputs and no return value: bytes at even and at odd offsets. */
void split(const void *in, size_t n, void *even, size_t ecap, size_t *elen, void *odd, size_t ocap,
           size_t *olen)
{
    const unsigned char *s = in;
    size_t e = 0, o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 2 == 0 && e < ecap)
            ((unsigned char *)even)[e++] = s[i];
        else if (i % 2 == 1 && o < ocap)
            ((unsigned char *)odd)[o++] = s[i];
    }
    *elen = e;
    *olen = o;
}

/* Claims one byte more than its buffer holds. */
void overclaim(void *buf, size_t cap, size_t *len)
{
    (void)buf;
    *len = cap + 1;
}

/* Crashes.  Not instrumented: under the sanitizers the fault itself must
 * happen, not a report about it. */
__attribute__((no_sanitize("address", "undefined"))) void crash_segv(void)
{
    volatile int *p = NULL;
    *p = 1;
    raise(SIGSEGV); /* in case the store was not a fault after all */
}

void crash_abort(void)
{
    abort();
}

const pyproc_native_decl pyproc_native_exports[] = {
    {"id_b", "b(b)"},         {"id_B", "B(B)"},
    {"id_h", "h(h)"},         {"id_H", "H(H)"},
    {"id_i", "i(i)"},         {"id_I", "I(I)"},
    {"id_q", "q(q)"},         {"id_Q", "Q(Q)"},
    {"id_f", "f(f)"},         {"id_d", "d(d)"},
    {"add_Q", "Q(QQ)"},       {"neg_q", "d(q)"},
    {"mix", "d(bBhHiIqQfd)"}, {"count_call", "i(i)"},
    {"calls", "i()"},         {"reset", "v()"},
    {"str_len", "Q(s)"},      {"greet", "s(s)"},
    {"no_str", "s()"},        {"buf_len", "q(y)"},
    {"buf_sum", "Q(y)"},      {"fill", "i(w64 i)"},
    {"reverse", "v(yw256)"},  {"split", "v(y w16 w16)"},
    {"overclaim", "v(w8)"},   {"crash_segv", "v()"},
    {"crash_abort", "v()"},   {NULL, NULL},
};
