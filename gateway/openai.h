/* The OpenAI-compatible API: requests of /v1/completions and
 * /v1/chat/completions checked and read into C, responses and stream
 * chunks written, errors in OpenAI's shape.
 *
 * Requests are checked strictly, so that a typo does not silently change
 * what a client gets: a field this server does not know is refused, as is
 * a field given twice, a value of the wrong JSON type or out of range, and
 * a known field that asks for something sluice does not do (n > 1,
 * logprobs, tools, images).
 * `null` means "absent" for every optional field, as in OpenAI's API.
 * Besides OpenAI's fields, llama.cpp's server extras top_k, min_p,
 * repeat_penalty, repeat_last_n and n_predict are read (sampling defaults
 * are llama.cpp's, coordinator/sampler.h), and cache_prompt, user,
 * service_tier, store and metadata are accepted and have no effect.
 *
 * Errors are {"error": {"message", "type", "param", "code"}} with the HTTP
 * status that OpenAI uses for the same problem. */
#ifndef SL_GATEWAY_OPENAI_H
#define SL_GATEWAY_OPENAI_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/sampler.h"
#include "gateway/jbuf.h"
#include "gateway/stop.h"

typedef enum sl_oai_kind {
    SL_OAI_COMPLETION, /* /v1/completions */
    SL_OAI_CHAT,       /* /v1/chat/completions */
} sl_oai_kind;

/* An error for the client. */
typedef struct sl_oai_error {
    int status;       /* HTTP status */
    const char *type; /* "invalid_request_error", "authentication_error", ... (static) */
    const char *code; /* a machine-readable code, or NULL (static) */
    char param[64];   /* the request field at fault, "" when none */
    char message[512];
} sl_oai_error;

/* A checked request. Strings point into `root` (or into `messages`). */
typedef struct sl_oai_request {
    sl_oai_kind kind;
    cJSON *root;       /* the parsed body (owned) */
    const char *model; /* NULL when absent */
    /* completions: the prompt as text (prompt != NULL) or as token ids */
    const char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids; /* owned */
    uint32_t n_prompt_ids;
    /* chat: the messages with every content as one string, roles checked
     * ("developer" becomes "system"); owned */
    cJSON *messages;
    int64_t max_tokens; /* -1 when absent */
    sl_sampler_params sp;
    bool seed_given;
    const char *stop[SL_STOP_MAX];
    size_t stop_len[SL_STOP_MAX];
    size_t n_stop;
    bool stream;
    bool include_usage; /* stream_options.include_usage */
} sl_oai_request;

/* What a finished generation reports: usage and llama.cpp's timings. */
typedef struct sl_oai_usage {
    uint32_t prompt_tokens, completion_tokens;
    double prompt_ms;    /* request start to the first token */
    double predicted_ms; /* first token to the last */
} sl_oai_usage;

/* Sets *e (message formatted like printf; param may be NULL). Never fails. */
void sl_oai_error_set(sl_oai_error *e, int status, const char *type, const char *code, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Appends {"error": {...}} for e to b. */
void sl_oai_error_json(sl_jbuf *b, const sl_oai_error *e);

/* Parses and checks a request body of len bytes (not NUL-terminated) for
 * `kind`. Returns 0 with *r filled (free it with sl_oai_request_free), or
 * -1 with *e describing the problem for the client (400 for everything the
 * client got wrong; *r is then empty). Allocates (the JSON tree); does not
 * block. */
int sl_oai_parse(sl_oai_kind kind, const char *body, size_t len, sl_oai_request *r, sl_oai_error *e);

/* Frees what sl_oai_parse allocated; *r becomes empty. */
void sl_oai_request_free(sl_oai_request *r);

/* Reads the members of a JSON object body that the llama.cpp-style endpoints
 * take, refusing any other member: for each name in names[0 .. n), the
 * member or NULL in out[i]. Returns 0, or -1 with *e set (not an object, an
 * unknown member). */
int sl_oai_members(const cJSON *obj, const char *const *names, size_t n, const cJSON **out, sl_oai_error *e);

/* Appends a whole (non-streamed) response: a text_completion or a
 * chat.completion with one choice holding text[0 .. len), finish_reason
 * `finish` ("stop" or "length"), usage and timings. id and model are
 * NUL-terminated; created is seconds since the epoch. */
void sl_oai_response(sl_jbuf *b, sl_oai_kind kind, const char *id, long long created, const char *model,
                     const char *text, size_t len, const char *finish, const sl_oai_usage *u);

/* Appends one server-sent event "data: {chunk}\n\n" of a streamed response:
 *  - role (chat only): the first chunk, delta {"role": "assistant", "content": ""};
 *  - text[0 .. len) when finish is NULL and usage is NULL: a content chunk;
 *  - finish != NULL: the last choice chunk (empty text or delta), with
 *    timings when u is not NULL;
 *  - usage != NULL and finish == NULL: the usage chunk (choices []). */
void sl_oai_chunk(sl_jbuf *b, sl_oai_kind kind, const char *id, long long created, const char *model, bool role,
                  const char *text, size_t len, const char *finish, const sl_oai_usage *u, bool usage_chunk);

/* Appends "data: [DONE]\n\n". */
void sl_oai_done(sl_jbuf *b);

#endif
