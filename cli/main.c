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
    {"quantize", sl_cmd_quantize, "write a copy of a model in another tensor type (g2/g3/g4, q4_0, ...)"},
    {"eval", sl_cmd_eval, "KL divergence and top-1 agreement of models against a reference, on text"},
    {"pack", sl_cmd_pack, "split a GGUF into per-layer shard files for streaming (compressed if asked)"},
    {"ctl", sl_cmd_ctl, "commands to a running coordinator: change its memory budget, ask its status"},
    {"top", sl_cmd_top, "live view of a coordinator's monitoring stream"},
    {"template", sl_cmd_template, "render a chat template with a conversation (as the model hubs do)"},
    {"chat", sl_cmd_chat, "chat with a model in the terminal (in-process engine, its chat template)"},
    {"serve", sl_cmd_serve, "serve a model over HTTP with OpenAI's API (a pipeline of its own, or --connect)"},
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
