/* sluice's HTTP gateway: an OpenAI-compatible server (the API of OpenAI's
 * and llama.cpp's servers) in front of a coordinator, speaking the
 * coordinator protocol (proto/msg.h) behind it.
 *
 * Endpoints:
 *   POST /v1/completions, /v1/chat/completions   OpenAI shapes; "stream":
 *        true answers with server-sent events (gateway/openai.h)
 *   GET  /v1/models                              the one local model
 *   GET  /health                                 503 until the coordinator
 *        answers and a compute worker is registered, then 200
 *   POST /tokenize, /detokenize                  llama.cpp's shapes
 *   POST /apply-template                         a chat rendered as text
 *   GET  /metrics                                Prometheus text (gateway/metrics.h)
 * (each also without the /v1 prefix, and /v1/health.) Every error is a JSON
 * body in OpenAI's shape with a fitting status.
 *
 * Requests run concurrently: one thread per connection. Generations run
 * on the coordinator's sessions; when all are busy, requests wait in a
 * first-come queue in the gateway. A client that disconnects stops its
 * generation (the gateway watches the connection while it waits and
 * streams, and sends the coordinator a `cancel`).
 *
 * Hybrid routing: with a fallback URL, a generation is forwarded to that
 * OpenAI-compatible endpoint instead when it names a model other than the
 * local one, when `max_queue` requests are already waiting for a session,
 * or when the estimated time to serve it locally (its prompt and
 * max_tokens at the rates measured on earlier local requests, plus the
 * work queued before it) is over `max_local_seconds`. The response header
 * X-Sluice-Served-By says "local" or "fallback". */
#ifndef SL_GATEWAY_GATEWAY_H
#define SL_GATEWAY_GATEWAY_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sl_gateway_opts {
    const char *host;          /* address to listen on (default 127.0.0.1) */
    unsigned port;             /* 0: any free port (see sl_gateway_port) */
    const char *connect;       /* the coordinator's client endpoint (required) */
    const char *monitor;       /* its monitor endpoint, or NULL */
    const char *model;         /* the model (GGUF or packed, required): its name, chat template, tokenizer */
    const char *alias;         /* model id; default the file name without .gguf */
    const char *api_key;       /* required bearer token, or NULL */
    const char *chat_template; /* override of the model's chat template (see chat/template.h) */
    uint64_t max_body;         /* bytes of a request body (default 8 MiB) */
    unsigned max_conns;        /* connections at once (default 128) */
    const char *fallback_url;  /* OpenAI base URL, e.g. https://api.openai.com/v1; NULL: none */
    const char *fallback_key;
    const char *fallback_model; /* model name for requests forwarded for load (default: as sent) */
    unsigned max_queue;         /* forward when this many wait for a session (default 4) */
    double max_local_seconds;   /* forward when the local estimate is over this (< 0: never) */
} sl_gateway_opts;

typedef struct sl_gateway sl_gateway;

/* Defaults as listed above; SLUICE_API_KEY and SLUICE_FALLBACK_KEY from the
 * environment when set. */
void sl_gateway_opts_default(sl_gateway_opts *o);

/* The gateway's own flags, for getopt_long tables: codes from
 * SL_GATEWAY_OPT_FIRST up, the table ends with a zero entry. */
#define SL_GATEWAY_OPT_FIRST 1000
extern const struct option sl_gateway_options[];

/* Applies one of those flags (code from the table, arg its value). Returns
 * 0, or -1 after printing which flag and why (a bad value). */
int sl_gateway_opt(sl_gateway_opts *o, int code, const char *arg);

/* Prints the help lines of those flags. */
void sl_gateway_help(FILE *out);

/* Loads the model's metadata (chat template, tokenizer), connects to the
 * coordinator and starts listening. Returns 0 and *out (stop it with
 * sl_gateway_free), or a negative sl_err after a message on stderr (the
 * model cannot be read, its template does not parse, the address cannot
 * be bound, ...). Does not wait for the coordinator. */
int sl_gateway_new(const sl_gateway_opts *o, sl_gateway **out);

/* The port the gateway listens on (the one chosen when opts.port was 0). */
unsigned sl_gateway_port(const sl_gateway *g);

/* Whether the coordinator answers (as /health says). */
bool sl_gateway_ready(sl_gateway *g);

/* Stops listening, ends every request in progress (their generations are
 * cancelled) and frees everything. NULL accepted. Blocks until the
 * connection threads have finished. */
void sl_gateway_free(sl_gateway *g);

#endif
