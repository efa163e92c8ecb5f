/*
 * Signatures of native functions ("d(d)", "i(yw64)"; the grammar is
 * documented beside pyproc_add_native() in pyproc.h).  The host parses them
 * to refuse a bad declaration before anything is sent, the worker to build
 * its libffi call: one parser, so both sides agree on what is valid.
 */
#ifndef PYPROC_SHM_NATIVE_SIG_H
#define PYPROC_SHM_NATIVE_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parameters a signature may declare. */
#define SHM_NATIVE_SIG_MAX_PARAMS 32
/* C arguments they may expand to: y takes two, wN three. */
#define SHM_NATIVE_SIG_MAX_CARGS (3 * SHM_NATIVE_SIG_MAX_PARAMS)
/* Largest output buffer, in bytes (wN). */
#define SHM_NATIVE_SIG_MAX_OUT (1u << 30)

struct shm_native_param {
    char code;    /* one of "bBhHiIqQfdsyw" */
    uint32_t cap; /* w: the buffer's size in bytes; 0 for the others */
};

struct shm_native_sig {
    char ret; /* one of "vbBhHiIqQfds" */
    unsigned nparams;
    struct shm_native_param params[SHM_NATIVE_SIG_MAX_PARAMS];
    unsigned nargs;  /* arguments the caller passes: every parameter but w */
    unsigned ncargs; /* C arguments of the function */
    unsigned nouts;  /* results: the return value unless v, and each w */
};

/*
 * Parse signature s.  Returns 0 with the result in *ret, or -EINVAL with a
 * static description of the first fault in *ret_why and its offset in s in
 * *ret_at (both may be NULL).
 */
int shm_native_sig_parse(const char *s, struct shm_native_sig *ret, const char **ret_why,
                         size_t *ret_at);

/*
 * True for a valid function name: a C identifier, so that dlsym() can
 * find it and hub.<sub>.<name> spell it.
 */
bool shm_native_name_ok(const char *s);

#endif
