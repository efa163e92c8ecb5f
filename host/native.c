/*
 * Native subs: shared libraries whose functions the workers call through
 * libffi.  The host checks the declarations with the worker's own parser,
 * so a bad one fails here with its reason before anything is sent, then
 * broadcasts ADD_NATIVE and keeps it for workers added later, like add_sub.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../shm/frame.h"
#include "../shm/native_sig.h"
#include "msg.h"
#include "wire.h"
#include "feature.h"

/* Check every declaration; the first bad one is described in *err_msg. */
static int check_decls(const pyproc_native_decl *d, pyproc_msg **err_msg)
{
    for (; d->name || d->signature; d++) {
        struct shm_native_sig sig;
        const char *why = "no signature";
        size_t at = 0;

        if (!d->name || !shm_native_name_ok(d->name)) {
            if (err_msg)
                pyproc__msg_error(err_msg,
                                  "ValueError: bad function name '%s': expected a "
                                  "C identifier",
                                  d->name ? d->name : "(null)");
            return -EINVAL;
        }
        if (shm_native_sig_parse(d->signature, &sig, &why, &at) < 0) {
            if (err_msg)
                pyproc__msg_error(err_msg,
                                  "ValueError: bad signature '%s' of function '%s': "
                                  "%s (at offset %zu)",
                                  d->signature ? d->signature : "(null)", d->name, why, at);
            return -EINVAL;
        }
    }
    return 0;
}

/*
 * The library as the workers must open it: a relative path made absolute
 * against our working directory (a worker added later must find the same
 * file), anything else as it is.  NULL when out of memory.
 */
static char *library_path(const char *lib)
{
    char cwd[PATH_MAX], *s;

    if (lib[0] == '/' || !strchr(lib, '/') || !getcwd(cwd, sizeof cwd))
        return strdup(lib);
    return asprintf(&s, "%s/%s", cwd, lib) < 0 ? NULL : s;
}

PYPROC_EXPORT int pyproc_add_native_err(pyproc_pool *p, const char *name, const char *library,
                                        const pyproc_native_decl *decls, pyproc_msg **err_msg)
{
    struct shm_buf b = {0};
    char *lib;
    int err = pyproc__pool_accepting(p);

    if (err < 0)
        return err;
    if (!name || !*name || strchr(name, '.') || !library || !*library)
        return -EINVAL;
    if (decls && (err = check_decls(decls, err_msg)) < 0)
        return err;
    lib = library_path(library);
    if (!lib)
        return -ENOMEM;
    b.limit = p->max_msg;
    err = pyproc__wire_add_native(&b, name, lib, decls);
    if (err == 0)
        err = pyproc__broadcast(p, SHM_FRAME_ADD_NATIVE, &b, err_msg);
    shm_buf_free(&b);
    free(lib);
    return err;
}

PYPROC_EXPORT int pyproc_add_native(pyproc_pool *p, const char *name, const char *library,
                                    const pyproc_native_decl *decls)
{
    return pyproc_add_native_err(p, name, library, decls, NULL);
}
