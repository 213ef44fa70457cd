/* `sluice logits`: teacher-forced logits of a token sequence, as JSON, for
 * comparing sluice with other implementations. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "compute/engine.h"
#include "model/model.h"
#include "model/source.h"

static void help(FILE *out)
{
    fprintf(out, "usage: sluice logits -m MODEL --tokens ID,ID,... [--top K] [-t N]\n\n"
                 "Feeds the tokens in order and prints one JSON array on stdout: for every\n"
                 "position, the logits after it (n_vocab floats), or with --top K the K largest\n"
                 "as [[id, logit], ...] in descending order.\n\n"
                 "  -m, --model PATH      GGUF model or packed directory\n"
                 "      --tokens LIST     comma-separated token ids\n"
                 "      --top K           only the K largest logits per position\n"
                 "  -t, --threads N       compute threads (default: all cores)\n"
                 "  -h, --help            this text\n");
}

/* Prints the k largest of v[0..n) as [[id, value], ...], descending, ties by
 * lower id. O(n k): k is small. */
static void print_top(const float *v, uint32_t n, uint32_t k, unsigned char *taken)
{
    for (uint32_t i = 0; i < n; i++)
        taken[i] = 0;
    putchar('[');
    for (uint32_t j = 0; j < k && j < n; j++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t i = 0; i < n; i++)
            if (!taken[i] && (best == UINT32_MAX || v[i] > v[best]))
                best = i;
        taken[best] = 1;
        printf(j ? ", [%u, %.9g]" : "[%u, %.9g]", best, v[best]);
    }
    putchar(']');
}

int sl_cmd_logits(int argc, char **argv)
{
    enum { OPT_TOKENS = 256, OPT_TOP };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokens", required_argument, 0, OPT_TOKENS},
        {"top", required_argument, 0, OPT_TOP}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},        {0}};
    const char *path = NULL, *tokens_arg = NULL;
    long long top = 0, threads = sl_cli_default_threads();
    int c;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case OPT_TOKENS: tokens_arg = optarg; break;
        case OPT_TOP:
            if (sl_cli_int("--top", optarg, 1, 1 << 20, &top))
                return 2;
            break;
        case 't':
            if (sl_cli_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (!path || !tokens_arg || optind != argc) {
        fprintf(stderr, "sluice logits: %s\n", optind != argc ? "unexpected argument" : "-m and --tokens are required");
        help(stderr);
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (sl_cli_ids("--tokens", tokens_arg, &ids, &n))
        return 2;
    int status = 1;
    sl_model *m = NULL;
    sl_engine *e = NULL;
    float *logits = NULL;
    unsigned char *taken = NULL;
    if (sl_source_open_model(path, SL_SOURCE_ALL, &m))
        goto out;
    const sl_hparams *hp = sl_model_hparams(m);
    if (n > UINT32_MAX / 2 || sl_engine_new(m, (uint32_t)n, (uint32_t)(n < 512 ? n : 512), (uint32_t)threads, &e))
        goto out;
    logits = malloc((size_t)hp->n_vocab * n * sizeof *logits);
    taken = malloc(hp->n_vocab);
    if (!logits || !taken) {
        fprintf(stderr, "sluice logits: out of memory for %zu x %u logits\n", n, hp->n_vocab);
        goto out;
    }
    if (sl_engine_eval(e, ids, (uint32_t)n, true, logits))
        goto out;
    putchar('[');
    for (size_t p = 0; p < n; p++) {
        const float *row = logits + p * hp->n_vocab;
        fputs(p ? ",\n" : "", stdout);
        if (top) {
            print_top(row, hp->n_vocab, (uint32_t)top, taken);
        } else {
            putchar('[');
            for (uint32_t i = 0; i < hp->n_vocab; i++)
                printf(i ? ", %.9g" : "%.9g", row[i]);
            putchar(']');
        }
    }
    puts("]");
    status = 0;
out:
    free(taken);
    free(logits);
    sl_engine_free(e);
    sl_model_close(m);
    free(ids);
    return status;
}
