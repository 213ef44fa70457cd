/* `sluice`: the command-line front end. Dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} k_commands[] = {
    {"info", sl_cmd_info, "architecture, sizes, tensor types and tokenizer of a model"},
    {"tokenize", sl_cmd_tokenize, "text to token ids"},
    {"logits", sl_cmd_logits, "logits after every position of a token sequence, as JSON"},
    {"generate", sl_cmd_generate, "continue a prompt (in-process engine)"},
    {"run", sl_cmd_run, "continue a prompt through the multi-process streaming pipeline"},
    {"synth", sl_cmd_synth, "write a llama-shaped GGUF of seeded random weights (any size)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice COMMAND [options]   (sluice COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(out, "  %-10s %s\n", k_commands[i].name, k_commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name))
            return k_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
