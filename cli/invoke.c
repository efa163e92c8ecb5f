/*
 * Calls whose argument count is known only at run time.
 *
 * C cannot build a variadic call at run time, so every value is spliced
 * as msgpack ('m': a pointer and a length) and the switch below spells out
 * each count of positional values; all CLI_MAX_KW keyword slots are always
 * passed, and the format reads only the ones it names (C allows arguments
 * that va_arg never reaches).
 */
#include <errno.h>

#include "invoke.h"

#define P(i) a->pos[i].p, a->pos[i].n,
#define K(i) a->kw_name[i], a->kw[i].p, a->kw[i].n,
#define KL(i) a->kw_name[i], a->kw[i].p, a->kw[i].n
#define POS0
#define POS1 POS0 P(0)
#define POS2 POS1 P(1)
#define POS3 POS2 P(2)
#define POS4 POS3 P(3)
#define POS5 POS4 P(4)
#define POS6 POS5 P(5)
#define POS7 POS6 P(6)
#define POS8 POS7 P(7)
#define POS9 POS8 P(8)
#define POS10 POS9 P(9)
#define POS11 POS10 P(10)
#define POS12 POS11 P(11)
#define POS13 POS12 P(12)
#define POS14 POS13 P(13)
#define POS15 POS14 P(14)
#define POS16 POS15 P(15)
#define KW K(0) K(1) K(2) K(3) K(4) K(5) K(6) K(7) K(8) K(9) K(10) K(11) K(12) K(13) K(14) KL(15)

#define SPLICE(CALL)                                                                               \
    switch (a->npos) {                                                                             \
    case 0:                                                                                        \
        return CALL(POS0 KW);                                                                      \
    case 1:                                                                                        \
        return CALL(POS1 KW);                                                                      \
    case 2:                                                                                        \
        return CALL(POS2 KW);                                                                      \
    case 3:                                                                                        \
        return CALL(POS3 KW);                                                                      \
    case 4:                                                                                        \
        return CALL(POS4 KW);                                                                      \
    case 5:                                                                                        \
        return CALL(POS5 KW);                                                                      \
    case 6:                                                                                        \
        return CALL(POS6 KW);                                                                      \
    case 7:                                                                                        \
        return CALL(POS7 KW);                                                                      \
    case 8:                                                                                        \
        return CALL(POS8 KW);                                                                      \
    case 9:                                                                                        \
        return CALL(POS9 KW);                                                                      \
    case 10:                                                                                       \
        return CALL(POS10 KW);                                                                     \
    case 11:                                                                                       \
        return CALL(POS11 KW);                                                                     \
    case 12:                                                                                       \
        return CALL(POS12 KW);                                                                     \
    case 13:                                                                                       \
        return CALL(POS13 KW);                                                                     \
    case 14:                                                                                       \
        return CALL(POS14 KW);                                                                     \
    case 15:                                                                                       \
        return CALL(POS15 KW);                                                                     \
    case 16:                                                                                       \
        return CALL(POS16 KW);                                                                     \
    }                                                                                              \
    return -EINVAL

_Static_assert(CLI_MAX_POS == 16 && CLI_MAX_KW == 16, "the switch spells out 16 slots");

int cli_invoke_func(pyproc_pool *pool, const char *ref, const struct cli_args *a, pyproc_msg **ret)
{
#define CALL(...) pyproc_func(pool, ref, ret, a->fmt, __VA_ARGS__)
    SPLICE(CALL);
#undef CALL
}

int cli_invoke_gen(pyproc_pool *pool, const char *ref, const struct cli_args *a,
                   pyproc_call **stream)
{
#define CALL(...) pyproc_gen(pool, ref, stream, a->fmt, __VA_ARGS__)
    SPLICE(CALL);
#undef CALL
}

int cli_invoke_pub(pyproc_pool *pool, const char *ref, const struct cli_args *a, pyproc_msg ***rets)
{
#define CALL(...) pyproc_pub(pool, ref, rets, a->fmt, __VA_ARGS__)
    SPLICE(CALL);
#undef CALL
}
