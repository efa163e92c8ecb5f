/*
 * Command-line words turned into a call's arguments.
 *
 * The format is the C API's ("ii|sd", "[s{sd}]", ...): each code takes the
 * next word, typed by the code, and brackets group the words inside into a
 * list or a dict.  Every top-level value is encoded to msgpack here and
 * spliced into the call with the format code 'm', because C cannot build a
 * variadic call whose length is known only at run time.
 */
#ifndef PYPROC_CLI_ARGS_H
#define PYPROC_CLI_ARGS_H

#include <stddef.h>

/* The most positional and keyword arguments one command line may give. */
#define CLI_MAX_POS 16
#define CLI_MAX_KW 16

struct cli_value {
    const void *p;
    size_t n;
};

struct cli_args {
    int npos, nkw;
    struct cli_value pos[CLI_MAX_POS];
    const char *kw_name[CLI_MAX_KW];
    struct cli_value kw[CLI_MAX_KW];
    /* The call's format: npos 'm's, then '|' and nkw "sm" pairs. */
    char fmt[CLI_MAX_POS + 1 + 2 * CLI_MAX_KW + 1];
    char *buf; /* every encoded value, back to back (malloc'd) */
};

/*
 * Encode `words` (argc of them) as fmt describes into *a.  Returns 0, or
 * -EINVAL with a sentence for the user in err (bad format, a word that is
 * not of its code's type, too few or too many words, too many arguments),
 * or -ENOMEM.
 */
int cli_args_encode(struct cli_args *a, const char *fmt, char **words, int argc, char *err,
                    size_t errlen);
void cli_args_free(struct cli_args *a);

#endif
