/*
 * A message as Python would write the value: None, True, 1.5, 'text',
 * b'\x00', [1, 2], {'k': v}.  For people reading a terminal, not for
 * programs (they get JSON).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "show.h"

static int show_value(FILE *f, pyproc_msg *m, int depth);

/* Quoted as repr() quotes: the printable ASCII as is, the rest escaped;
 * a str keeps its UTF-8 multi-byte characters as they are. */
static void show_quoted(FILE *f, const unsigned char *p, size_t n, bool is_str)
{
    fputs(is_str ? "'" : "b'", f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\\' || c == '\'')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c >= 0x20 && c < 0x7f)
            fputc(c, f);
        else if (is_str && c >= 0x80)
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
    fputc('\'', f);
}

static void show_float(FILE *f, double d)
{
    char text[40];

    if (isnan(d)) {
        fputs("nan", f);
        return;
    }
    if (isinf(d)) {
        fputs(d > 0 ? "inf" : "-inf", f);
        return;
    }
    /* The shortest of %.15g..%.17g that reads back exactly, as repr() does. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, d);
        if (strtod(text, NULL) == d)
            break;
    }
    fputs(text, f);
    if (!strpbrk(text, ".eni"))
        fputs(".0", f);
}

static int show_items(FILE *f, pyproc_msg *m, bool is_map, int depth)
{
    int n = pyproc_msg_len(m), err = 0;

    fputc(is_map ? '{' : '[', f);
    for (int i = 0; i < n && !err; i++) {
        pyproc_msg *k = NULL, *v = NULL;
        if (i)
            fputs(", ", f);
        err = pyproc_msg_at(m, (size_t)i, &k, is_map ? &v : NULL);
        if (!err)
            err = show_value(f, k, depth + 1);
        if (!err && is_map) {
            fputs(": ", f);
            err = show_value(f, v, depth + 1);
        }
        pyproc_msg_free(k);
        pyproc_msg_free(v);
    }
    fputc(is_map ? '}' : ']', f);
    return err;
}

static int show_value(FILE *f, pyproc_msg *m, int depth)
{
    const void *p;
    size_t n;
    int64_t i;
    uint64_t u;
    double d;
    int b, type = pyproc_msg_type(m);

    if (depth > 512)
        return -ELOOP;
    switch (type) {
    case PYPROC_NIL:
        fputs("None", f);
        return 0;
    case PYPROC_BOOL:
        if (pyproc_msg_read(m, "b", &b) < 0)
            return -EBADMSG;
        fputs(b ? "True" : "False", f);
        return 0;
    case PYPROC_INT:
        if (pyproc_msg_read(m, "I", &i) < 0)
            return -EBADMSG;
        fprintf(f, "%" PRId64, i);
        return 0;
    case PYPROC_UINT:
        if (pyproc_msg_read(m, "u", &u) < 0)
            return -EBADMSG;
        fprintf(f, "%" PRIu64, u);
        return 0;
    case PYPROC_FLOAT:
        if (pyproc_msg_read(m, "d", &d) < 0)
            return -EBADMSG;
        show_float(f, d);
        return 0;
    case PYPROC_STR:
    case PYPROC_BYTES:
        if (pyproc_msg_read(m, "y", &p, &n) < 0)
            return -EBADMSG;
        show_quoted(f, p, n, type == PYPROC_STR);
        return 0;
    case PYPROC_BUF: { /* a shared buffer's range, shown as its bytes */
        pyproc_buf *buf;
        size_t off;
        if (pyproc_msg_read(m, "B", &buf, &off, &n) < 0)
            return -EBADMSG;
        show_quoted(f, (const unsigned char *)pyproc_buf_data(buf) + off, n, false);
        pyproc_buf_free(buf);
        return 0;
    }
    case PYPROC_LIST:
    case PYPROC_MAP:
        return show_items(f, m, type == PYPROC_MAP, depth);
    }
    p = pyproc_msg_data(m, &n); /* an extension type: its encoding */
    if (!p)
        return -EBADMSG;
    fputs("msgpack(", f);
    show_quoted(f, p, n, false);
    fputc(')', f);
    return 0;
}

int cli_show(FILE *f, pyproc_msg *m, enum cli_style style)
{
    int err;

    if (style != CLI_PRETTY)
        return cli_show_json(f, m, style);
    err = show_value(f, m, 0);
    fputc('\n', f);
    return err;
}
