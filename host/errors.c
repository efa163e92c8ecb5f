/*
 * Descriptions of return values, and the library's version.
 */
#include <errno.h>
#include <string.h>

#include "pyproc.h"

#define STR2(x) #x
#define STR(x) STR2(x)

PYPROC_EXPORT const char *pyproc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case PYPROC_EREMOTE:
        return "the Python code raised an exception";
    case PYPROC_EWORKER:
        return "the worker died during the call";
    case -ENOENT:
        return "no such sub, module or function";
    case -ECHILD:
        return "the pool belongs to the parent of this forked process";
    case -ETIMEDOUT:
        return "timed out";
    case -ECANCELED:
        return "the call was cancelled";
    case -EINVAL:
        return "invalid argument or format string";
    case -EMSGSIZE:
        return "message larger than the pool's limit";
    case -EALREADY:
        return "the result was already taken";
    case -EBADMSG:
        return "the value has another shape or is malformed";
    case -ERANGE:
        return "the number does not fit the C type";
    }
    if (err < 0)
        return strerror(-err); /* glibc: thread-safe for known values */
    return "not an error code";
}

PYPROC_EXPORT const char *pyproc_version(void)
{
    return STR(PYPROC_VERSION_MAJOR) "." STR(PYPROC_VERSION_MINOR) "." STR(PYPROC_VERSION_PATCH);
}
