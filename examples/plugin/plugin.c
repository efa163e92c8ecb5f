/*
 * A small native plugin for examples/native.c: a checksum, a text codec
 * and a function with a bug that crashes.  It declares its functions itself
 * in pyproc_native_exports, so the host loads it with decls NULL.
 *
 * Built by `make` into build/examples/libpyproc-example-plugin.so.
 */
#include <stddef.h>
#include <stdint.h>

#include "pyproc.h"

const char *plugin_version(void)
{
    return "example-plugin 1.0";
}

/* Adler-32 of a byte buffer (the checksum of zlib). */
uint32_t adler32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t a = 1, b = 0;

    for (size_t i = 0; i < len; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return b << 16 | a;
}

/* ROT13 of a string into an output buffer; returns the letters turned. */
int32_t rot13(const char *text, void *out, size_t cap, size_t *len)
{
    char *o = out;
    int32_t turned = 0;
    size_t n = 0;

    for (; text[n] && n < cap; n++) {
        char c = text[n];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            char base = c >= 'a' ? 'a' : 'A';
            c = (char)(base + (c - base + 13) % 26);
            turned++;
        }
        o[n] = c;
    }
    *len = n;
    return turned;
}

/* A parser with a bug: it trusts a pointer it should have checked. */
int32_t buggy_parse(const char *text)
{
    const char *volatile field = text[0] == '!' ? NULL : text;
    return field[0];
}

const pyproc_native_decl pyproc_native_exports[] = {
    {"plugin_version", "s()"}, {"adler32", "I(y)"}, {"rot13", "i(sw4096)"},
    {"buggy_parse", "i(s)"},   {NULL, NULL},
};
