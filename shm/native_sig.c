/*
 * The signature grammar of native functions (see native_sig.h).
 */
#include "native_sig.h"

#include <errno.h>
#include <string.h>

#define INT_CODES "bBhHiIqQ"
#define RET_CODES "v" INT_CODES "fds"
#define PARAM_CODES INT_CODES "fdsy"

static bool is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

bool shm_native_name_ok(const char *s)
{
    if (!s || !is_alpha(*s))
        return false;
    for (s++; *s; s++)
        if (!is_alpha(*s) && !(*s >= '0' && *s <= '9'))
            return false;
    return true;
}

static const char *skip_spaces(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* The capacity after a 'w': 1 to SHM_NATIVE_SIG_MAX_OUT, no leading zero. */
static const char *parse_cap(const char *p, uint32_t *cap)
{
    uint64_t n = 0;

    if (*p < '1' || *p > '9')
        return NULL;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > SHM_NATIVE_SIG_MAX_OUT)
            return NULL;
    }
    *cap = (uint32_t)n;
    return p;
}

/* Parse one parameter at *p into *out; NULL with *why on a fault. */
static const char *parse_param(const char *p, struct shm_native_param *out, const char **why)
{
    out->code = *p;
    out->cap = 0;
    if (*p == 'w') {
        const char *q = parse_cap(p + 1, &out->cap);
        if (!q)
            *why = "w needs its size in bytes right after it, 1 to 1073741824 (w64)";
        return q;
    }
    if (*p == 'v') {
        *why = "v is a return type only; write () for no parameters";
        return NULL;
    }
    if (!*p || !strchr(PARAM_CODES, *p)) {
        *why = *p ? "unknown parameter type" : "missing ')'";
        return NULL;
    }
    return p + 1;
}

/* Tally what the parameters expand to; sig starts zeroed. */
static void count(struct shm_native_sig *sig)
{
    for (unsigned i = 0; i < sig->nparams; i++) {
        char c = sig->params[i].code;
        sig->nargs += c != 'w';
        sig->nouts += c == 'w';
        sig->ncargs += c == 'y' ? 2 : c == 'w' ? 3 : 1;
    }
    sig->nouts += sig->ret != 'v';
}

int shm_native_sig_parse(const char *s, struct shm_native_sig *ret, const char **ret_why,
                         size_t *ret_at)
{
    struct shm_native_sig sig = {0};
    const char *why = NULL, *p;

    if (!s || !ret)
        return -EINVAL;
    p = skip_spaces(s);
    if (!*p || !strchr(RET_CODES, *p)) {
        why = !*p                        ? "empty signature"
              : (*p == 'y' || *p == 'w') ? "y and w are parameter types only"
                                         : "unknown return type";
        goto fail;
    }
    sig.ret = *p;
    p = skip_spaces(p + 1);
    if (*p != '(') {
        why = "expected '(' after the return type";
        goto fail;
    }
    for (p = skip_spaces(p + 1); *p != ')'; p = skip_spaces(p)) {
        if (sig.nparams == SHM_NATIVE_SIG_MAX_PARAMS) {
            why = "more than 32 parameters";
            goto fail;
        }
        const char *next = parse_param(p, &sig.params[sig.nparams], &why);
        if (!next)
            goto fail;
        sig.nparams++;
        p = next;
    }
    p = skip_spaces(p + 1);
    if (*p) {
        why = "unexpected text after ')'";
        goto fail;
    }
    count(&sig);
    *ret = sig;
    return 0;
fail:
    if (ret_why)
        *ret_why = why;
    if (ret_at)
        *ret_at = (size_t)(p - s);
    return -EINVAL;
}
