/* The generation flags shared by `sluice generate` and `sluice run`
 * (llama.cpp's names where one exists); see cli.h. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "coordinator/plan.h"

void sl_cli_gen_help(FILE *out, bool pipeline)
{
    fprintf(out,
            "  -m, --model PATH          GGUF model, or a directory made by `sluice pack`\n"
            "  -p, --prompt TEXT         the prompt\n"
            "  -f, --file PATH           read the prompt from a file\n"
            "  -n, --n-predict N         tokens to generate (default 128)\n"
            "  -c, --ctx-size N          context size (default: the model's, at most 4096;\n"
            "                            at least prompt + N)\n"
            "  -t, --threads N           compute threads (default: all cores)\n"
            "  -b, --batch-size N        prompt tokens per forward pass (default 512)\n"
            "      --temp T              temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K             keep the K most likely tokens; 0 = off (default 40)\n"
            "      --top-p P             nucleus sampling; 1 = off (default 0.95)\n"
            "      --min-p P             drop tokens below P x the best one's probability (default 0.05)\n"
            "      --repeat-penalty R    penalise recent tokens; 1 = off (default 1)\n"
            "      --repeat-last-n N     window of recent tokens the penalties see (default 64)\n"
            "      --presence-penalty A  (default 0)\n"
            "      --frequency-penalty A (default 0)\n"
            "  -s, --seed S              random seed (default 0); same seed, same text\n"
            "      --ignore-eos          keep generating past end-of-generation tokens\n"
            "      --no-bos              do not add BOS even when the vocabulary asks for it\n");
    if (pipeline)
        fprintf(out,
                "      --mem-budget SIZE     bound on weights, KV cache, activations and scratch\n"
                "                            (e.g. 512K, 64M, 2G; default: pin the whole model)\n"
                "      --loaders N           loader processes (default 2)\n"
                "      --workers M           compute worker processes (default 1)\n"
                "      --ring N              streaming slots (default 2)\n"
                "      --connect ENDPOINT    use a running coordinator instead of starting a pipeline\n");
    fprintf(out, "  -h, --help                this text\n");
}

int sl_cli_gen_parse(int argc, char **argv, bool pipeline, sl_cli_gen *a)
{
    enum {
        OPT_TEMP = 256, OPT_TOPK, OPT_TOPP, OPT_MINP, OPT_REP, OPT_LASTN, OPT_PRES, OPT_FREQ, OPT_NOBOS,
        OPT_IGNORE_EOS, OPT_BUDGET, OPT_LOADERS, OPT_WORKERS, OPT_RING, OPT_CONNECT
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},         {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},          {"n-predict", required_argument, 0, 'n'},
        {"ctx-size", required_argument, 0, 'c'},      {"threads", required_argument, 0, 't'},
        {"batch-size", required_argument, 0, 'b'},    {"temp", required_argument, 0, OPT_TEMP},
        {"top-k", required_argument, 0, OPT_TOPK},    {"top-p", required_argument, 0, OPT_TOPP},
        {"min-p", required_argument, 0, OPT_MINP},    {"repeat-penalty", required_argument, 0, OPT_REP},
        {"repeat-last-n", required_argument, 0, OPT_LASTN},
        {"presence-penalty", required_argument, 0, OPT_PRES},
        {"frequency-penalty", required_argument, 0, OPT_FREQ},
        {"seed", required_argument, 0, 's'},          {"no-bos", no_argument, 0, OPT_NOBOS},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"mem-budget", required_argument, 0, OPT_BUDGET}, {"loaders", required_argument, 0, OPT_LOADERS},
        {"workers", required_argument, 0, OPT_WORKERS}, {"ring", required_argument, 0, OPT_RING},
        {"connect", required_argument, 0, OPT_CONNECT},
        {"help", no_argument, 0, 'h'},                {0}};
    memset(a, 0, sizeof *a);
    a->n_predict = 128;
    a->threads = sl_cli_default_threads();
    a->n_batch = 512;
    a->add_special = true;
    a->loaders = 2;
    a->workers = 1;
    a->ring = 2;
    sl_sampler_params_default(&a->sp);
    int c;
    long long v;
    double d;
    while ((c = getopt_long(argc, argv, "m:p:f:n:c:t:b:s:h", opts, NULL)) != -1) {
        int bad = 0;
        if (!pipeline && c >= OPT_BUDGET && c <= OPT_CONNECT)
            c = '?';
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'p': a->prompt = optarg; break;
        case 'f': a->file = optarg; break;
        case 'n': bad = sl_cli_int("--n-predict", optarg, 0, 1 << 24, &a->n_predict); break;
        case 'c': bad = sl_cli_int("--ctx-size", optarg, 2, 1 << 24, &a->n_ctx); break;
        case 't': bad = sl_cli_int("--threads", optarg, 1, 1024, &a->threads); break;
        case 'b': bad = sl_cli_int("--batch-size", optarg, 1, 1 << 16, &a->n_batch); break;
        case 's':
            bad = sl_cli_int("--seed", optarg, 0, INT64_MAX, &v);
            a->sp.seed = (uint64_t)v;
            break;
        case OPT_TEMP: bad = sl_cli_float("--temp", optarg, 0, 1e6, &d); a->sp.temperature = (float)d; break;
        case OPT_TOPK: bad = sl_cli_int("--top-k", optarg, 0, INT32_MAX, &v); a->sp.top_k = (int32_t)v; break;
        case OPT_TOPP: bad = sl_cli_float("--top-p", optarg, 0, 1, &d); a->sp.top_p = (float)d; break;
        case OPT_MINP: bad = sl_cli_float("--min-p", optarg, 0, 1, &d); a->sp.min_p = (float)d; break;
        case OPT_REP:
            bad = sl_cli_float("--repeat-penalty", optarg, 1e-6, 1e6, &d);
            a->sp.repeat_penalty = (float)d;
            break;
        case OPT_LASTN:
            bad = sl_cli_int("--repeat-last-n", optarg, 0, SL_SAMPLER_MAX_LAST_N, &v);
            a->sp.penalty_last_n = (int32_t)v;
            break;
        case OPT_PRES:
            bad = sl_cli_float("--presence-penalty", optarg, -1e6, 1e6, &d);
            a->sp.presence_penalty = (float)d;
            break;
        case OPT_FREQ:
            bad = sl_cli_float("--frequency-penalty", optarg, -1e6, 1e6, &d);
            a->sp.frequency_penalty = (float)d;
            break;
        case OPT_NOBOS: a->add_special = false; break;
        case OPT_IGNORE_EOS: a->ignore_eos = true; break;
        case OPT_BUDGET:
            if (sl_plan_parse_size(optarg, &a->budget)) {
                fprintf(stderr, "sluice: --mem-budget expects a size like 512K, 64M or 2G, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case OPT_LOADERS: bad = sl_cli_int("--loaders", optarg, 1, 64, &a->loaders); break;
        case OPT_WORKERS: bad = sl_cli_int("--workers", optarg, 1, 20, &a->workers); break;
        case OPT_RING: bad = sl_cli_int("--ring", optarg, 2, 64, &a->ring); break;
        case OPT_CONNECT: a->connect = optarg; break;
        case 'h': return 1;
        default: return 2;
        }
        if (bad)
            return 2;
    }
    const bool need_model = !pipeline || !a->connect;
    if ((need_model && !a->model) || !a->prompt == !a->file || optind != argc) {
        fprintf(stderr, "sluice: %s\n",
                need_model && !a->model ? "-m MODEL is required"
                : optind != argc        ? "unexpected argument"
                                        : "give exactly one of -p and -f");
        return 2;
    }
    return 0;
}
