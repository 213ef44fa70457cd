/* The gateway's command-line flags, shared by sluice-gateway and
 * `sluice serve`; see gateway.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/plan.h"
#include "gateway/gateway.h"

enum {
    OPT_HOST = SL_GATEWAY_OPT_FIRST,
    OPT_PORT,
    OPT_API_KEY,
    OPT_ALIAS,
    OPT_TEMPLATE,
    OPT_MAX_BODY,
    OPT_MAX_CONNS,
    OPT_FB_URL,
    OPT_FB_KEY,
    OPT_FB_MODEL,
    OPT_MAX_QUEUE,
    OPT_MAX_LOCAL,
};

const struct option sl_gateway_options[] = {
    {"host", required_argument, 0, OPT_HOST},
    {"port", required_argument, 0, OPT_PORT},
    {"api-key", required_argument, 0, OPT_API_KEY},
    {"alias", required_argument, 0, OPT_ALIAS},
    {"chat-template", required_argument, 0, OPT_TEMPLATE},
    {"max-body", required_argument, 0, OPT_MAX_BODY},
    {"max-connections", required_argument, 0, OPT_MAX_CONNS},
    {"fallback-url", required_argument, 0, OPT_FB_URL},
    {"fallback-key", required_argument, 0, OPT_FB_KEY},
    {"fallback-model", required_argument, 0, OPT_FB_MODEL},
    {"max-queue", required_argument, 0, OPT_MAX_QUEUE},
    {"max-local-seconds", required_argument, 0, OPT_MAX_LOCAL},
    {0, 0, 0, 0},
};

void sl_gateway_opts_default(sl_gateway_opts *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_body = (uint64_t)8 << 20;
    o->max_conns = 128;
    o->max_queue = 4;
    o->max_local_seconds = -1;
    const char *k = getenv("SLUICE_API_KEY");
    o->api_key = k && *k ? k : NULL;
    k = getenv("SLUICE_FALLBACK_KEY");
    o->fallback_key = k && *k ? k : NULL;
}

void sl_gateway_help(FILE *out)
{
    fprintf(out,
            "      --host ADDR           address to listen on (default 127.0.0.1)\n"
            "      --port N              TCP port (default 8080; 0: any free port, printed at start)\n"
            "      --api-key KEY         require \"Authorization: Bearer KEY\" (or set SLUICE_API_KEY)\n"
            "      --alias NAME          the model's id in the API (default: the file name without .gguf)\n"
            "      --chat-template T     chat template: a name the model's metadata has, a built-in\n"
            "                            (chatml, llama2, llama3, gemma, phi3, mistral, zephyr, alpaca)\n"
            "                            or a file of Jinja (default: the model's own)\n"
            "      --max-body SIZE       largest request body (default 8M)\n"
            "      --max-connections N   connections at once (default 128)\n"
            "      --fallback-url URL    forward to this OpenAI-compatible endpoint (its base URL, e.g.\n"
            "                            https://api.openai.com/v1) requests for another model, or when\n"
            "                            the local queue or the time estimate is over its limit\n"
            "      --fallback-key KEY    bearer token for the fallback (or set SLUICE_FALLBACK_KEY)\n"
            "      --fallback-model NAME model name to send with requests forwarded for load\n"
            "      --max-queue N         forward when N requests already wait for a session (default 4)\n"
            "      --max-local-seconds S forward when serving locally is estimated to take over S seconds\n");
}

static int bad(const char *flag, const char *want, const char *arg)
{
    fprintf(stderr, "sluice: %s expects %s, got '%s'\n", flag, want, arg);
    return -1;
}

static int parse_uint(const char *arg, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sl_gateway_opt(sl_gateway_opts *o, int code, const char *arg)
{
    unsigned long v;
    switch (code) {
    case OPT_HOST: o->host = arg; return 0;
    case OPT_PORT:
        if (parse_uint(arg, 0, 65535, &v))
            return bad("--port", "a port number (0 to 65535)", arg);
        o->port = (unsigned)v;
        return 0;
    case OPT_API_KEY:
        if (!*arg)
            return bad("--api-key", "a non-empty key", arg);
        o->api_key = arg;
        return 0;
    case OPT_ALIAS:
        if (!*arg || strlen(arg) > 255)
            return bad("--alias", "a name of 1 to 255 bytes", arg);
        o->alias = arg;
        return 0;
    case OPT_TEMPLATE: o->chat_template = arg; return 0;
    case OPT_MAX_BODY:
        if (sl_plan_parse_size(arg, &o->max_body) || o->max_body < 1024 || o->max_body > ((uint64_t)1 << 30))
            return bad("--max-body", "a size from 1K to 1G (e.g. 64K, 8M)", arg);
        return 0;
    case OPT_MAX_CONNS:
        if (parse_uint(arg, 1, 4096, &v))
            return bad("--max-connections", "an integer in [1, 4096]", arg);
        o->max_conns = (unsigned)v;
        return 0;
    case OPT_FB_URL:
        if (strncmp(arg, "http://", 7) && strncmp(arg, "https://", 8))
            return bad("--fallback-url", "an http:// or https:// URL", arg);
        o->fallback_url = arg;
        return 0;
    case OPT_FB_KEY: o->fallback_key = arg; return 0;
    case OPT_FB_MODEL: o->fallback_model = arg; return 0;
    case OPT_MAX_QUEUE:
        if (parse_uint(arg, 0, 1000000, &v))
            return bad("--max-queue", "an integer in [0, 1000000]", arg);
        o->max_queue = (unsigned)v;
        return 0;
    case OPT_MAX_LOCAL: {
        char *end;
        errno = 0;
        double d = strtod(arg, &end);
        if (errno || end == arg || *end || !isfinite(d) || d < 0 || d > 1e9)
            return bad("--max-local-seconds", "a number of seconds >= 0", arg);
        o->max_local_seconds = d;
        return 0;
    }
    default: return -1;
    }
}
