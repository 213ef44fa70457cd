/* `sluice serve`: the OpenAI-compatible HTTP gateway (gateway/gateway.h)
 * with a pipeline of its own (cli/pipeline.h: a coordinator, loaders and
 * compute workers started for it and stopped with it), or in front of a
 * running coordinator with --connect. Runs until SIGINT or SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/pipeline.h"
#include "coordinator/plan.h"
#include "gateway/gateway.h"
#include "model/source.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void help(FILE *out)
{
    fprintf(out,
            "usage: sluice serve -m MODEL [--host 127.0.0.1] [--port 8080] [options]\n"
            "       sluice serve -m MODEL --connect ENDPOINT [--monitor ENDPOINT] [options]\n\n"
            "Serves the model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions,\n"
            "/v1/models) and llama.cpp's server extras (/health, /tokenize, /detokenize,\n"
            "/apply-template, /metrics). Starts a sluice pipeline for it (a coordinator, loader\n"
            "processes that stream the weights, compute workers) and stops it on exit; with\n"
            "--connect it uses a running coordinator instead.\n\n"
            "  -m, --model PATH          GGUF model (or a directory made by sluice pack)\n"
            "  -c, --ctx-size N          positions per session (default: the model's, at most 4096)\n"
            "  -np, --parallel N         generations at once (coordinator sessions; default 1);\n"
            "                            more requests wait in a queue\n"
            "  -t, --threads N           compute threads per worker (default: all cores)\n"
            "  -b, --batch-size N        prompt tokens per step (default 512)\n"
            "      --mem-budget SIZE     bound on weights, KV cache, activations and scratch\n"
            "                            (e.g. 512M, 2G; default: pin the whole model)\n"
            "      --loaders N           loader processes (default 2)\n"
            "      --workers M           compute worker processes (default 1)\n"
            "      --ring N              streaming slots (default 2)\n"
            "      --connect ENDPOINT    use a running coordinator instead of starting a pipeline\n"
            "      --monitor ENDPOINT    with --connect: its monitor endpoint, for /metrics\n");
    sl_gateway_help(out);
    fprintf(out, "  -h, --help                this text\n");
}

/* The context length to give the pipeline: the model's, at most 4096. */
static int default_ctx(const char *model, long long *n_ctx)
{
    sl_model *m;
    if (sl_source_open_model(model, SL_SOURCE_META, &m)) {
        fprintf(stderr, "sluice serve: cannot read the model '%s' (see above)\n", model);
        return -1;
    }
    uint32_t train = sl_model_hparams(m)->n_ctx_train;
    sl_model_close(m);
    *n_ctx = train && train < 4096 ? train : 4096;
    return 0;
}

int sl_cmd_serve(int argc, char **argv)
{
    enum { OPT_BUDGET = 1, OPT_LOADERS, OPT_WORKERS, OPT_RING, OPT_CONNECT, OPT_MONITOR, OPT_PARALLEL };
    struct option opts[64] = {
        {"model", required_argument, 0, 'm'},          {"ctx-size", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'},        {"batch-size", required_argument, 0, 'b'},
        {"parallel", required_argument, 0, OPT_PARALLEL}, {"np", required_argument, 0, OPT_PARALLEL},
        {"mem-budget", required_argument, 0, OPT_BUDGET}, {"loaders", required_argument, 0, OPT_LOADERS},
        {"workers", required_argument, 0, OPT_WORKERS}, {"ring", required_argument, 0, OPT_RING},
        {"connect", required_argument, 0, OPT_CONNECT}, {"monitor", required_argument, 0, OPT_MONITOR},
        {"help", no_argument, 0, 'h'},
    };
    size_t n = 13;
    for (size_t i = 0; sl_gateway_options[i].name; i++)
        opts[n++] = sl_gateway_options[i];
    sl_gateway_opts o;
    sl_gateway_opts_default(&o);
    long long n_ctx = 0, threads = sl_cli_default_threads(), batch = 512, parallel = 1, loaders = 2, workers = 1,
              ring = 2;
    uint64_t budget = 0;
    int c, bad = 0;
    /* getopt_long_only: llama.cpp spells the parallel flag -np. */
    while (!bad && (c = getopt_long_only(argc, argv, "m:c:t:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'c': bad = sl_cli_int("--ctx-size", optarg, 2, 1 << 20, &n_ctx); break;
        case 't': bad = sl_cli_int("--threads", optarg, 1, 1024, &threads); break;
        case 'b': bad = sl_cli_int("--batch-size", optarg, 1, 1 << 16, &batch); break;
        case OPT_PARALLEL: bad = sl_cli_int("--parallel", optarg, 1, 64, &parallel); break;
        case OPT_BUDGET:
            if (sl_plan_parse_size(optarg, &budget)) {
                fprintf(stderr, "sluice: --mem-budget expects a size like 512K, 64M or 2G, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case OPT_LOADERS: bad = sl_cli_int("--loaders", optarg, 1, 64, &loaders); break;
        case OPT_WORKERS: bad = sl_cli_int("--workers", optarg, 1, 20, &workers); break;
        case OPT_RING: bad = sl_cli_int("--ring", optarg, 2, 64, &ring); break;
        case OPT_CONNECT: o.connect = optarg; break;
        case OPT_MONITOR: o.monitor = optarg; break;
        case 'h': help(stdout); return 0;
        default: bad = c < SL_GATEWAY_OPT_FIRST || sl_gateway_opt(&o, c, optarg); break;
        }
    }
    if (bad || !o.model || optind != argc) {
        if (!bad)
            fprintf(stderr, "sluice serve: %s\n", optind != argc ? "unexpected argument" : "-m MODEL is required");
        help(stderr);
        return 2;
    }
    if (o.monitor && !o.connect) {
        fprintf(stderr, "sluice serve: --monitor goes with --connect (a pipeline of its own has one)\n");
        return 2;
    }
    if (access(o.model, R_OK) != 0) {
        fprintf(stderr, "sluice serve: cannot read model '%s'\n", o.model);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    sl_pipeline p = {0};
    sl_gateway *g = NULL;
    int status = 1;
    if (!o.connect) {
        if (!n_ctx && default_ctx(o.model, &n_ctx))
            goto done;
        sl_pipeline_cfg cfg = {.who = "serve", .model = o.model, .n_ctx = (uint32_t)n_ctx, .n_batch = (uint32_t)batch,
                               .threads = (uint32_t)threads, .ring = (uint32_t)ring, .sessions = (uint32_t)parallel,
                               .budget = budget, .loaders = (uint32_t)loaders, .workers = (uint32_t)workers,
                               .monitor = true};
        if (sl_pipeline_start(&p, &cfg))
            goto done;
        o.connect = p.client_ep;
        o.monitor = p.monitor_ep;
    }
    if (sl_gateway_new(&o, &g))
        goto done;
    const bool v6 = strchr(o.host, ':') != NULL;
    fprintf(stderr, "sluice serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", o.host, v6 ? "]" : "",
            sl_gateway_port(g));
    bool ready = false;
    while (!g_stop) {
        usleep(100000);
        if (!sl_pipeline_alive(&p)) {
            fprintf(stderr, "sluice serve: the coordinator exited (see its message above)\n");
            goto done;
        }
        if (!ready && sl_gateway_ready(g)) {
            ready = true;
            fprintf(stderr, "sluice serve: the model is ready\n");
        }
    }
    status = 0;
done:
    sl_gateway_free(g);
    sl_pipeline_stop(&p);
    return status;
}
