/*
 * The signature grammar of native functions: what it accepts, what each
 * signature expands to, and the reason and offset of what it refuses.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "shm/native_sig.h"

static struct shm_native_sig parse_ok(const char *s)
{
    struct shm_native_sig sig;
    const char *why = NULL;
    size_t at = 0;

    if (shm_native_sig_parse(s, &sig, &why, &at) < 0)
        fail_msg("\"%s\" refused: %s at %zu", s, why, at);
    return sig;
}

static void parse_bad(const char *s, const char *why_part, size_t want_at)
{
    struct shm_native_sig sig = {.ret = 'x'};
    const char *why = NULL;
    size_t at = 99;

    assert_int_equal(shm_native_sig_parse(s, &sig, &why, &at), -EINVAL);
    assert_non_null(why);
    if (!strstr(why, why_part))
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", s, why, why_part);
    assert_int_equal(at, want_at);
    assert_int_equal(sig.ret, 'x'); /* untouched on failure */
}

static void every_type_is_accepted(void **state)
{
    struct shm_native_sig sig = parse_ok("d(bBhHiIqQfdsyw1)");

    (void)state;
    assert_int_equal(sig.ret, 'd');
    assert_int_equal(sig.nparams, 13);
    assert_int_equal(sig.params[0].code, 'b');
    assert_int_equal(sig.params[12].code, 'w');
    assert_int_equal(sig.params[12].cap, 1);
    assert_int_equal(sig.nargs, 12);
    assert_int_equal(sig.ncargs, 11 + 2 + 3);
    assert_int_equal(sig.nouts, 2);
    for (const char *r = "vbBhHiIqQfds"; *r; r++) {
        char s[] = {*r, '(', ')', 0};
        assert_int_equal(parse_ok(s).ret, *r);
    }
    sig = parse_ok("v()");
    assert_int_equal(sig.nparams + sig.nargs + sig.ncargs + sig.nouts, 0);
}

static void spaces_and_buffers(void **state)
{
    struct shm_native_sig sig = parse_ok("  i ( y w64  w1073741824 )  ");

    (void)state;
    assert_int_equal(sig.nparams, 3);
    assert_int_equal(sig.params[1].cap, 64);
    assert_int_equal(sig.params[2].cap, 1u << 30);
    assert_int_equal(sig.nargs, 1);
    assert_int_equal(sig.ncargs, 8);
    assert_int_equal(sig.nouts, 3);
}

static void faults_are_named_where_they_are(void **state)
{
    (void)state;
    parse_bad("", "empty", 0);
    parse_bad("x(d)", "unknown return type", 0);
    parse_bad("y(d)", "parameter types only", 0);
    parse_bad("w8()", "parameter types only", 0);
    parse_bad("d", "expected '('", 1);
    parse_bad("dd", "expected '('", 1);
    parse_bad("d(x)", "unknown parameter type", 2);
    parse_bad("d(d", "missing ')'", 3);
    parse_bad("d(v)", "return type only", 2);
    parse_bad("d(d)x", "after ')'", 4);
    parse_bad("v(w)", "w needs its size", 2);
    parse_bad("v(w0)", "w needs its size", 2);
    parse_bad("v(w08)", "w needs its size", 2);
    parse_bad("v(w1073741825)", "w needs its size", 2);
    parse_bad("v(w99999999999999999999)", "w needs its size", 2);
    parse_bad("v(d,d)", "unknown parameter type", 3);
    assert_int_equal(shm_native_sig_parse(NULL, &(struct shm_native_sig){0}, NULL, NULL), -EINVAL);
}

static void at_most_32_parameters(void **state)
{
    char s[64] = "v(";

    (void)state;
    memset(s + 2, 'i', 32);
    strcpy(s + 34, ")");
    assert_int_equal(parse_ok(s).ncargs, 32);
    strcpy(s + 34, "i)");
    parse_bad(s, "more than 32", 34);
}

static void names_are_c_identifiers(void **state)
{
    (void)state;
    assert_true(shm_native_name_ok("cos"));
    assert_true(shm_native_name_ok("_x9"));
    assert_false(shm_native_name_ok(""));
    assert_false(shm_native_name_ok(NULL));
    assert_false(shm_native_name_ok("9x"));
    assert_false(shm_native_name_ok("a.b"));
    assert_false(shm_native_name_ok("memcpy@GLIBC_2.2.5"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_type_is_accepted),          cmocka_unit_test(spaces_and_buffers),
        cmocka_unit_test(faults_are_named_where_they_are), cmocka_unit_test(at_most_32_parameters),
        cmocka_unit_test(names_are_c_identifiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
