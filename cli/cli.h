/* Shared pieces of the `sluice` command-line tool: one entry point per
 * subcommand and strict parsers for option values. Every parser prints a
 * message naming the flag and returns -1 on bad input; the subcommand then
 * returns exit status 2 (usage error). */
#ifndef SL_CLI_CLI_H
#define SL_CLI_CLI_H

#include <stddef.h>
#include <stdint.h>

/* Subcommands: argv[0] is the subcommand name. Return the process exit
 * status (0 success, 1 runtime failure, 2 usage error). */
int sl_cmd_info(int argc, char **argv);
int sl_cmd_tokenize(int argc, char **argv);
int sl_cmd_logits(int argc, char **argv);
int sl_cmd_generate(int argc, char **argv);

/* Parses a whole decimal integer in [min, max]. */
int sl_cli_int(const char *flag, const char *s, long long min, long long max, long long *out);
/* Parses a whole finite float in [min, max]. */
int sl_cli_float(const char *flag, const char *s, double min, double max, double *out);
/* Parses "ID,ID,..." into a malloc'd array (caller frees) of *n ids, each in
 * [0, INT32_MAX]. Empty lists are refused. */
int sl_cli_ids(const char *flag, const char *s, int32_t **ids, size_t *n);
/* Threads to use when the user does not say: the cores online. */
long long sl_cli_default_threads(void);
/* Reads a whole file into a malloc'd, NUL-terminated buffer (caller frees);
 * *len excludes the terminator. */
int sl_cli_read_file(const char *path, char **buf, size_t *len);

#endif
