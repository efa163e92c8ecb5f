/*
 * Frame payloads, built and read in one place (see wire.h).
 */
#include "wire.h"

#include <errno.h>
#include <msgpuck.h>
#include <string.h>

#include "../shm/mpvalid.h"

size_t pyproc__wire_nil(char out[PYPROC__WIRE_SMALL])
{
    return (size_t)(mp_encode_nil(out) - out);
}

size_t pyproc__wire_credit(char out[PYPROC__WIRE_SMALL], uint32_t items)
{
    return (size_t)(mp_encode_uint(out, items) - out);
}

size_t pyproc__wire_forget(char out[PYPROC__WIRE_SMALL], uint64_t buf_id)
{
    return (size_t)(mp_encode_uint(out, buf_id) - out);
}

static int put_str(struct shm_buf *b, const char *s)
{
    size_t n = strlen(s);
    int err = 0;
    char *w;

    if (n > UINT32_MAX)
        return -EMSGSIZE;
    w = shm_buf_reserve(b, mp_sizeof_str((uint32_t)n), &err);
    if (!w)
        return err;
    b->len += (size_t)(mp_encode_str(w, s, (uint32_t)n) - w);
    return 0;
}

static int put_array(struct shm_buf *b, uint32_t n)
{
    int err = 0;
    char *w = shm_buf_reserve(b, mp_sizeof_array(n), &err);

    if (!w)
        return err;
    b->len += (size_t)(mp_encode_array(w, n) - w);
    return 0;
}

static int put_bool(struct shm_buf *b, bool v)
{
    int err = 0;
    char *w = shm_buf_reserve(b, 1, &err);

    if (!w)
        return err;
    b->len += (size_t)(mp_encode_bool(w, v) - w);
    return 0;
}

static int put_nil(struct shm_buf *b)
{
    int err = 0;
    char *w = shm_buf_reserve(b, 1, &err);

    if (!w)
        return err;
    b->len += (size_t)(mp_encode_nil(w) - w);
    return 0;
}

/* Each builder leaves b as it was when it fails. */
static int undo(struct shm_buf *b, size_t len, int err)
{
    if (err < 0)
        b->len = len;
    return err;
}

int pyproc__wire_callback_reply(struct shm_buf *b, int rc, const pyproc_msg *value)
{
    const void *data = NULL;
    size_t len = 0, start = b->len;
    int err;

    if (rc == 0 && value && !(data = pyproc_msg_data((pyproc_msg *)value, &len)))
        rc = -EINVAL; /* an error message is no value */
    if ((err = put_array(b, 2)) < 0 || (err = put_bool(b, rc == 0)) < 0)
        return undo(b, start, err);
    if (rc < 0) {
        const char *text = value && pyproc_msg_error((pyproc_msg *)value)
                               ? pyproc_msg_error((pyproc_msg *)value)
                               : pyproc_strerror(rc);
        return undo(b, start, put_str(b, text));
    }
    if (data)
        return undo(b, start, shm_buf_append(b, data, len));
    return undo(b, start, put_nil(b));
}

int pyproc__wire_add_sub(struct shm_buf *b, const char *name, const char *pypath, bool init)
{
    size_t start = b->len;
    int err;

    if ((err = put_array(b, 3)) < 0 || (err = put_str(b, name)) < 0 ||
        (err = put_str(b, pypath)) < 0 || (err = put_bool(b, init)) < 0)
        return undo(b, start, err);
    return 0;
}

int pyproc__wire_set_attr(struct shm_buf *b, const char *ref, const char *fmt,
                          struct pyproc__args *a)
{
    size_t start = b->len;
    int err;

    if ((err = put_array(b, 2)) < 0 || (err = put_str(b, ref)) < 0 ||
        (err = pyproc__fmt_encode_value(b, fmt, a)) < 0)
        return undo(b, start, err);
    return 0;
}

int pyproc__wire_add_native(struct shm_buf *b, const char *name, const char *library,
                            const pyproc_native_decl *decls)
{
    size_t n = 0, start = b->len;
    int err;

    while (decls && decls[n].name)
        n++;
    if (n > UINT32_MAX)
        return -EMSGSIZE;
    if ((err = put_array(b, 3)) < 0 || (err = put_str(b, name)) < 0 ||
        (err = put_str(b, library)) < 0)
        return undo(b, start, err);
    if (!decls)
        return undo(b, start, put_nil(b));
    if ((err = put_array(b, (uint32_t)n)) < 0)
        return undo(b, start, err);
    for (size_t i = 0; i < n; i++)
        if ((err = put_array(b, 2)) < 0 || (err = put_str(b, decls[i].name)) < 0 ||
            (err = put_str(b, decls[i].signature)) < 0)
            return undo(b, start, err);
    return 0;
}

/* A str field, or "" for anything else, stepping over it either way. */
static const char *str_or_empty(const char **p, uint32_t *len)
{
    if (mp_typeof(**p) == MP_STR)
        return mp_decode_str(p, len);
    mp_next(p);
    *len = 0;
    return "";
}

int pyproc__wire_error_read(const char *data, size_t len, struct pyproc__wire_error *ret)
{
    const char *p = data;

    (void)len; /* checked whole by the caller: the walk stays inside */
    if (mp_typeof(*p) != MP_ARRAY || mp_decode_array(&p) != 4)
        return -EBADMSG;
    ret->code = 0;
    if (mp_typeof(*p) == MP_UINT)
        ret->code = mp_decode_uint(&p);
    else
        mp_next(&p);
    ret->type = str_or_empty(&p, &ret->type_len);
    ret->message = str_or_empty(&p, &ret->message_len);
    ret->traceback = str_or_empty(&p, &ret->traceback_len);
    return 0;
}

int pyproc__wire_yield_read(const char *data, size_t len, uint32_t *ret_count,
                            const char **ret_first)
{
    const char *p = data + 1;

    if (len < 5 || (uint8_t)data[0] != 0xdd)
        return -EBADMSG;
    *ret_count = mp_load_u32(&p);
    *ret_first = p;
    return 0;
}

/* first and the count, at fixed widths so that seal() can fill them in. */
#define CHUNK_TAIL_BYTES (1 + 8 + 1 + 4)

int pyproc__wire_chunk_begin(struct shm_buf *b, const char *ref)
{
    size_t start = b->len;
    int err = 0;
    char *w;

    if ((err = put_array(b, 3)) < 0 || (err = put_str(b, ref)) < 0)
        return undo(b, start, err);
    w = shm_buf_reserve(b, CHUNK_TAIL_BYTES, &err);
    if (!w)
        return undo(b, start, err);
    memset(w, 0, CHUNK_TAIL_BYTES);
    w[0] = (char)0xcf; /* uint64 */
    w[9] = (char)0xdd; /* array32 */
    b->len += CHUNK_TAIL_BYTES;
    return 0;
}

void pyproc__wire_chunk_seal(struct shm_buf *b, size_t head_len, uint64_t first, uint32_t count)
{
    char *w = b->data + head_len - CHUNK_TAIL_BYTES;

    mp_store_u64(w + 1, first);
    mp_store_u32(w + 10, count);
}

int pyproc__wire_map_items_read(const char *data, size_t len, uint64_t *ret_busy_ns,
                                uint32_t *ret_count, const char **ret_first)
{
    const char *p = data + 2;

    if (len < 15 || (uint8_t)data[0] != 0x92 || (uint8_t)data[1] != 0xcf ||
        (uint8_t)data[10] != 0xdd)
        return -EBADMSG;
    *ret_busy_ns = mp_load_u64(&p);
    p++;
    *ret_count = mp_load_u32(&p);
    *ret_first = p;
    return 0;
}

/* Bytes of an unsigned integer's encoding from its first byte, 0 for
 * another type. */
static size_t uint_size(uint8_t c)
{
    return c < 0x80 ? 1 : c == 0xcc ? 2 : c == 0xcd ? 3 : c == 0xce ? 5 : c == 0xcf ? 9 : 0;
}

/* Whether c alone is a whole value: nil, a bool, a fixint. */
static bool one_byte_value(uint8_t c)
{
    return c < 0x80 || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3;
}

/*
 * The usual entry, [index, ok, a value of one byte] (a no-op's None, a
 * small int, a bool), read without the general walk; 0, or -1 for any
 * other entry, which the walk then reads or refuses.
 */
static int map_entry_short(const char **p, const char *end, uint64_t *index, bool *ok,
                           const char **value, size_t *value_len)
{
    const char *q = *p;
    size_t left = (size_t)(end - q), n;

    if (left < 4 || (uint8_t)q[0] != 0x93 || !(n = uint_size((uint8_t)q[1])) || left < 3 + n)
        return -1;
    q++;
    uint8_t b = (uint8_t)q[n], v = (uint8_t)q[n + 1];
    if ((b != 0xc2 && b != 0xc3) || !one_byte_value(v))
        return -1;
    *index = mp_decode_uint(&q);
    *ok = b == 0xc3;
    *value = q + 1;
    *value_len = 1;
    *p = q + 2;
    return 0;
}

int pyproc__wire_map_entry_read(const char **p, const char *end, uint64_t *index, bool *ok,
                                const char **value, size_t *value_len)
{
    const char *q = *p, *v;

    if (map_entry_short(p, end, index, ok, value, value_len) == 0)
        return 0;
    if (shm_mp_next(p, end) < 0)
        return -EBADMSG;
    /* [q, *p) is one well-formed value now: msgpuck stays inside it. */
    if (mp_typeof(*q) != MP_ARRAY || mp_decode_array(&q) != 3 || mp_typeof(*q) != MP_UINT)
        return -EBADMSG;
    *index = mp_decode_uint(&q);
    if (mp_typeof(*q) != MP_BOOL)
        return -EBADMSG;
    *ok = mp_decode_bool(&q);
    v = q;
    mp_next(&q);
    *value = v;
    *value_len = (size_t)(q - v);
    return 0;
}
