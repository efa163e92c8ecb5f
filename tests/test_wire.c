/* Unit tests of the frame payloads the host builds and reads (host/wire.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "host/msg.h"
#include "host/wire.h"
#include "shm/mpvalid.h"

static void bytes_equal(const struct shm_buf *b, const char *want, size_t n)
{
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
    assert_int_equal(shm_mp_check(b->data, b->len), 0);
}

/* The literal's bytes, without its NUL. */
#define assert_bytes(b, lit) bytes_equal(b, lit, sizeof(lit) - 1)

static void test_small_payloads(void **state)
{
    char out[PYPROC__WIRE_SMALL];

    assert_int_equal(pyproc__wire_nil(out), 1);
    assert_int_equal((unsigned char)out[0], 0xc0);
    assert_int_equal(pyproc__wire_credit(out, 512), 3);
    assert_memory_equal(out, "\xcd\x02\x00", 3);
    assert_int_equal(pyproc__wire_credit(out, UINT32_MAX), 5);
}

static void test_callback_reply(void **state)
{
    struct shm_buf b = {0};
    pyproc_msg *v, *e;

    assert_int_equal(pyproc_msg_new(&v, "i", 7), 0);
    assert_int_equal(pyproc__wire_callback_reply(&b, 0, v), 0);
    assert_bytes(&b, "\x92\xc3\x07");
    shm_buf_reset(&b);
    assert_int_equal(pyproc__wire_callback_reply(&b, 0, NULL), 0);
    assert_bytes(&b, "\x92\xc3\xc0");
    shm_buf_reset(&b);
    assert_int_equal(pyproc__msg_error(&e, "no"), 0);
    assert_int_equal(pyproc__wire_callback_reply(&b, -EPERM, e), 0);
    assert_bytes(&b, "\x92\xc2\xa2no");
    shm_buf_reset(&b);
    /* An error message returned as a value is refused, with its text. */
    assert_int_equal(pyproc__wire_callback_reply(&b, 0, e), 0);
    assert_bytes(&b, "\x92\xc2\xa2no");
    pyproc_msg_free(v);
    pyproc_msg_free(e);
    shm_buf_free(&b);
}

static void test_add_sub_and_native(void **state)
{
    struct shm_buf b = {0};
    static const pyproc_native_decl decls[] = {{"f", "i:i"}, {NULL, NULL}};

    assert_int_equal(pyproc__wire_add_sub(&b, "m", "p.q", true), 0);
    assert_bytes(&b, "\x93\xa1m\xa3p.q\xc3");
    shm_buf_reset(&b);
    assert_int_equal(pyproc__wire_add_native(&b, "n", "/l.so", NULL), 0);
    assert_bytes(&b, "\x93\xa1n\xa5/l.so\xc0");
    shm_buf_reset(&b);
    assert_int_equal(pyproc__wire_add_native(&b, "n", "l", decls), 0);
    assert_bytes(&b,
                 "\x93\xa1n\xa1l\x91\x92\xa1"
                 "f\xa3i:i");
    shm_buf_free(&b);
}

/* A builder that fails leaves what was in the buffer. */
static void test_failure_keeps_buffer(void **state)
{
    struct shm_buf b = {0};

    assert_int_equal(shm_buf_append(&b, "\x01", 1), 0);
    b.limit = 4;
    assert_int_equal(pyproc__wire_add_sub(&b, "name", "path", false), -EMSGSIZE);
    assert_int_equal(b.len, 1);
    shm_buf_free(&b);
}

static void test_error_read(void **state)
{
    static const char err[] = "\x94\x02\xa3Key\xa1x\xc0";
    static const char three[] = "\x93\x02\xa1t\xa1m";
    struct pyproc__wire_error e;

    assert_int_equal(pyproc__wire_error_read(err, sizeof err - 1, &e), 0);
    assert_int_equal(e.code, 2);
    assert_int_equal(e.type_len, 3);
    assert_memory_equal(e.type, "Key", 3);
    assert_int_equal(e.message_len, 1);
    assert_int_equal(e.traceback_len, 0);
    assert_int_equal(pyproc__wire_error_read(three, sizeof three - 1, &e), -EBADMSG);
}

static void test_yield_read(void **state)
{
    static const char batch[] = "\xdd\x00\x00\x00\x02\x01\xa1x";
    static const char fix[] = "\x92\x01\x02";
    const char *first;
    uint32_t n;

    assert_int_equal(pyproc__wire_yield_read(batch, sizeof batch - 1, &n, &first), 0);
    assert_int_equal(n, 2);
    assert_ptr_equal(first, batch + 5);
    assert_int_equal(pyproc__wire_yield_read(fix, sizeof fix - 1, &n, &first), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_payloads),     cmocka_unit_test(test_callback_reply),
        cmocka_unit_test(test_add_sub_and_native), cmocka_unit_test(test_failure_keeps_buffer),
        cmocka_unit_test(test_error_read),         cmocka_unit_test(test_yield_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
