/*
 * A message as JSON, built with jansson.
 *
 * JSON has no bytes, no integers past 2^63 in jansson, no NaN and only
 * string keys, so: bytes (and shared buffers' ranges) become base64 (or
 * hex) strings, integers above
 * INT64_MAX and non-finite floats become strings ("18446744073709551615",
 * "nan", "inf", "-inf"), and a map key that is not a string becomes its
 * JSON text, as Python's json module does for numbers.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "show.h"

static json_t *to_json(pyproc_msg *m, enum cli_style style, int depth);

static char *base64(const unsigned char *p, size_t n)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *w = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *w++ = digits[v >> 18 & 63];
        *w++ = digits[v >> 12 & 63];
        *w++ = i + 1 < n ? digits[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? digits[v & 63] : '=';
    }
    *w = '\0';
    return out;
}

static char *hex(const unsigned char *p, size_t n)
{
    char *out = malloc(2 * n + 1);

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * n] = '\0';
    return out;
}

/* bytes, or the range of a shared buffer, which prints as its bytes */
static json_t *bytes_json(pyproc_msg *m, enum cli_style style)
{
    pyproc_buf *buf = NULL;
    const void *p;
    size_t n, off;
    char *text;
    json_t *j;

    if (pyproc_msg_type(m) == PYPROC_BUF) {
        if (pyproc_msg_read(m, "B", &buf, &off, &n) < 0)
            return NULL;
        p = (const char *)pyproc_buf_data(buf) + off;
    } else if (pyproc_msg_read(m, "y", &p, &n) < 0) {
        return NULL;
    }
    text = style == CLI_JSON_HEX ? hex(p, n) : base64(p, n);
    pyproc_buf_free(buf);
    if (!text)
        return NULL;
    j = json_string(text);
    free(text);
    return j;
}

static json_t *number_json(pyproc_msg *m, int type)
{
    char text[32];
    int64_t i;
    uint64_t u;
    double d;

    if (type == PYPROC_INT)
        return pyproc_msg_read(m, "I", &i) < 0 ? NULL : json_integer(i);
    if (type == PYPROC_UINT) {
        if (pyproc_msg_read(m, "u", &u) < 0)
            return NULL;
        snprintf(text, sizeof text, "%" PRIu64, u);
        return json_string(text);
    }
    if (pyproc_msg_read(m, "d", &d) < 0)
        return NULL;
    if (isfinite(d))
        return json_real(d);
    return json_string(isnan(d) ? "nan" : d > 0 ? "inf" : "-inf");
}

static json_t *list_json(pyproc_msg *m, enum cli_style style, int depth)
{
    json_t *arr = json_array();
    int n = pyproc_msg_len(m);

    for (int i = 0; arr && i < n; i++) {
        pyproc_msg *item = NULL;
        json_t *j = NULL;
        if (pyproc_msg_at(m, (size_t)i, &item, NULL) == 0)
            j = to_json(item, style, depth + 1);
        pyproc_msg_free(item);
        if (!j || json_array_append_new(arr, j) < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* A key as object keys must be: its str, or its JSON text. */
static char *key_text(pyproc_msg *key, enum cli_style style, int depth)
{
    const void *s;
    size_t n;
    json_t *j;
    char *text;

    if (pyproc_msg_type(key) == PYPROC_STR && pyproc_msg_read(key, "y", &s, &n) == 0)
        return strndup(s, n); /* jansson keys end at a NUL */
    if (!(j = to_json(key, style, depth + 1)))
        return NULL;
    text = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return text;
}

static json_t *map_json(pyproc_msg *m, enum cli_style style, int depth)
{
    json_t *obj = json_object();
    int n = pyproc_msg_len(m);

    for (int i = 0; obj && i < n; i++) {
        pyproc_msg *k = NULL, *v = NULL;
        char *key = NULL;
        json_t *j = NULL;
        if (pyproc_msg_at(m, (size_t)i, &k, &v) == 0 && (key = key_text(k, style, depth)))
            j = to_json(v, style, depth + 1);
        pyproc_msg_free(k);
        pyproc_msg_free(v);
        if (!j || json_object_set_new(obj, key, j) < 0) {
            free(key);
            json_decref(obj);
            return NULL;
        }
        free(key);
    }
    return obj;
}

static json_t *to_json(pyproc_msg *m, enum cli_style style, int depth)
{
    const void *p;
    size_t n;
    int b, type = pyproc_msg_type(m);

    if (depth > 512) /* deeper than any value a worker sends */
        return NULL;
    switch (type) {
    case PYPROC_NIL:
        return json_null();
    case PYPROC_BOOL:
        return pyproc_msg_read(m, "b", &b) < 0 ? NULL : json_boolean(b);
    case PYPROC_INT:
    case PYPROC_UINT:
    case PYPROC_FLOAT:
        return number_json(m, type);
    case PYPROC_STR:
        if (pyproc_msg_read(m, "y", &p, &n) < 0) /* y reads a str's bytes */
            return NULL;
        return json_stringn(p, n);
    case PYPROC_BYTES:
    case PYPROC_BUF:
        return bytes_json(m, style);
    case PYPROC_LIST:
        return list_json(m, style, depth);
    case PYPROC_MAP:
        return map_json(m, style, depth);
    }
    /* An extension type: its whole msgpack encoding, as bytes are shown. */
    p = pyproc_msg_data(m, &n);
    if (!p)
        return NULL;
    char *text = style == CLI_JSON_HEX ? hex(p, n) : base64(p, n);
    json_t *j = text ? json_pack("{ss}", "msgpack", text) : NULL;
    free(text);
    return j;
}

int cli_show_json(FILE *f, pyproc_msg *m, enum cli_style style)
{
    json_t *j = to_json(m, style, 0);
    int err;

    if (!j)
        return -ENOMEM;
    err = json_dumpf(j, f, JSON_ENCODE_ANY | JSON_COMPACT) < 0 ? -EIO : 0;
    json_decref(j);
    fputc('\n', f);
    return err;
}
