/* Shared pieces of the `sluice` command-line tool: one entry point per
 * subcommand and strict parsers for option values. Every parser prints a
 * message naming the flag and returns -1 on bad input; the subcommand then
 * returns exit status 2 (usage error). */
#ifndef SL_CLI_CLI_H
#define SL_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/sampler.h"

/* Subcommands: argv[0] is the subcommand name. Return the process exit
 * status (0 success, 1 runtime failure, 2 usage error). */
int sl_cmd_info(int argc, char **argv);
int sl_cmd_tokenize(int argc, char **argv);
int sl_cmd_logits(int argc, char **argv);
int sl_cmd_generate(int argc, char **argv);
int sl_cmd_synth(int argc, char **argv);
int sl_cmd_run(int argc, char **argv);
int sl_cmd_quantize(int argc, char **argv);
int sl_cmd_eval(int argc, char **argv);
int sl_cmd_pack(int argc, char **argv);
int sl_cmd_ctl(int argc, char **argv);
int sl_cmd_top(int argc, char **argv);
int sl_cmd_template(int argc, char **argv);
int sl_cmd_chat(int argc, char **argv);
int sl_cmd_serve(int argc, char **argv);

/* The flags of `generate` and `run` (cli/genopts.c). */
typedef struct sl_cli_gen {
    const char *model, *prompt, *file;
    long long n_predict, n_ctx, threads, n_batch;
    bool add_special, ignore_eos;
    sl_sampler_params sp;
    /* pipeline only (`run`) */
    uint64_t budget; /* 0: no budget given */
    long long loaders, workers, ring;
    const char *connect;
} sl_cli_gen;

/* Parses generation flags (with pipeline, also --mem-budget, --loaders,
 * --workers, --ring, --connect). Returns 0; 1 for --help; 2 for a usage
 * error (message printed). */
int sl_cli_gen_parse(int argc, char **argv, bool pipeline, sl_cli_gen *a);

/* Prints the flag list of sl_cli_gen_parse. */
void sl_cli_gen_help(FILE *out, bool pipeline);

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
