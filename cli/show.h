/*
 * A result, printed for people and for programs: JSON (with jansson), or
 * a Python-literal-like form with --pretty.
 */
#ifndef PYPROC_CLI_SHOW_H
#define PYPROC_CLI_SHOW_H

#include <stdbool.h>
#include <stdio.h>

#include "pyproc.h"

enum cli_style {
    CLI_JSON,     /* bytes as base64 */
    CLI_JSON_HEX, /* bytes as hex */
    CLI_PRETTY,   /* None, True, 'str', b'\x00', {k: v} */
};

/* Print m on one line of f.  Returns 0, or a negative errno. */
int cli_show(FILE *f, pyproc_msg *m, enum cli_style style);
/* The JSON styles of cli_show() (json.c). */
int cli_show_json(FILE *f, pyproc_msg *m, enum cli_style style);

#endif
