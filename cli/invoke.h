/* The three calls of the command-line tool, with encoded arguments. */
#ifndef PYPROC_CLI_INVOKE_H
#define PYPROC_CLI_INVOKE_H

#include "pyproc.h"

#include "args.h"

int cli_invoke_func(pyproc_pool *pool, const char *ref, const struct cli_args *a, pyproc_msg **ret);
int cli_invoke_gen(pyproc_pool *pool, const char *ref, const struct cli_args *a,
                   pyproc_call **stream);
int cli_invoke_pub(pyproc_pool *pool, const char *ref, const struct cli_args *a,
                   pyproc_msg ***rets);

#endif
