/* sluice-gateway: the OpenAI-compatible HTTP server in front of a running
 * coordinator (gateway/gateway.h). `sluice serve` runs the same gateway
 * with a pipeline of its own. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gateway/gateway.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice-gateway --connect ENDPOINT -m MODEL [--monitor ENDPOINT] [options]\n\n"
                 "An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models,\n"
                 "/health, /tokenize, /detokenize, /apply-template, /metrics) in front of a running\n"
                 "sluice coordinator. The model file is read for its name, tokenizer and chat\n"
                 "template; the coordinator must be serving the same model.\n\n"
                 "      --connect EP          the coordinator's client endpoint (e.g. ipc:///tmp/x/client)\n"
                 "      --monitor EP          its monitor endpoint, for the step and cache metrics\n"
                 "  -m, --model PATH          the model's GGUF file\n");
    sl_gateway_help(out);
    fprintf(out, "  -h, --help                this text\n");
}

int main(int argc, char **argv)
{
    enum { OPT_CONNECT = 1, OPT_MONITOR };
    struct option opts[64] = {
        {"connect", required_argument, 0, OPT_CONNECT},
        {"monitor", required_argument, 0, OPT_MONITOR},
        {"model", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},
    };
    size_t n = 4;
    for (size_t i = 0; sl_gateway_options[i].name; i++)
        opts[n++] = sl_gateway_options[i];
    sl_gateway_opts o;
    sl_gateway_opts_default(&o);
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONNECT: o.connect = optarg; break;
        case OPT_MONITOR: o.monitor = optarg; break;
        case 'm': o.model = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            if (c < SL_GATEWAY_OPT_FIRST || sl_gateway_opt(&o, c, optarg)) {
                usage(stderr);
                return 2;
            }
        }
    }
    if (!o.connect || !o.model || optind != argc) {
        fprintf(stderr, "sluice-gateway: %s\n",
                optind != argc ? "unexpected argument" : "--connect ENDPOINT and -m MODEL are required");
        usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sl_gateway *g;
    if (sl_gateway_new(&o, &g))
        return 1;
    const bool v6 = strchr(o.host, ':') != NULL;
    fprintf(stderr, "sluice-gateway: listening on http://%s%s%s:%u (coordinator %s)\n", v6 ? "[" : "", o.host,
            v6 ? "]" : "", sl_gateway_port(g), o.connect);
    while (!g_stop)
        usleep(100000);
    fprintf(stderr, "sluice-gateway: stopping\n");
    sl_gateway_free(g);
    return 0;
}
