/* Inside the gateway: the state that gateway/server.c (HTTP glue, routing,
 * the small endpoints) and gateway/generate.c (completions: local
 * generation, streaming, forwarding) share. Not for use outside gateway/. */
#ifndef SL_GATEWAY_SERVER_H
#define SL_GATEWAY_SERVER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "chat/template.h"
#include "gateway/backend.h"
#include "gateway/gateway.h"
#include "gateway/jbuf.h"
#include "gateway/metrics.h"
#include "gateway/openai.h"
#include "model/model.h"
#include "model/tokenizer.h"

#define SL_GW_WAIT_MS 100 /* how often a waiting request looks at its client */

typedef struct sl_gen sl_gen;
typedef struct sl_waiter sl_waiter;

struct sl_gateway {
    sl_gateway_opts o;
    char model_id[256];   /* the id /v1/models gives */
    char model_file[256]; /* the file's name, also accepted as the model */
    sl_model *model;
    const sl_tokenizer *tok; /* the model's */
    sl_tokenizer *tok_owned;
    sl_template *tmpl;       /* NULL: chat is refused with tmpl_err */
    char tmpl_err[256];
    sl_backend *be;
    struct MHD_Daemon *mhd;
    unsigned port;
    long long started;       /* seconds since the epoch */
    sl_metrics metrics;
    _Atomic bool stopping;
    bool curl_ready;
    /* The queue for coordinator sessions; under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t active;          /* local generations holding a session */
    sl_waiter *head, *tail;   /* waiting, first come first */
    uint32_t n_waiting;
    double waiting_work_s;    /* estimated seconds of the waiting requests' work */
    double prompt_s_per_tok;  /* measured on local requests (EWMA), or the prior */
    double gen_s_per_tok;
    bool measured;
};

/* One HTTP request. Freed when its last reference goes: the request's
 * completion, and the streaming response's callback state. */
typedef struct sl_http_req {
    sl_gateway *g;
    struct MHD_Connection *conn;
    int route;
    sl_jbuf body;
    bool too_big;
    atomic_int refs;
    sl_gen *gen; /* a completion's state (generate.c) */
} sl_http_req;

/* Queues a response with body b (taken: b is emptied) and the given status
 * and content type, plus the header X-Sluice-Served-By when served_by is
 * not NULL. Counts it in the metrics. */
enum MHD_Result sl_http_respond(sl_http_req *r, unsigned status, sl_jbuf *b, const char *content_type,
                                const char *served_by);

/* Queues e as an OpenAI-shaped JSON error. */
enum MHD_Result sl_http_error(sl_http_req *r, const sl_oai_error *e);

/* Whether the client closed its connection (never blocks). */
bool sl_http_client_gone(sl_http_req *r);

/* Takes and drops a reference to r (the last one frees it, after
 * sl_gen_free). */
void sl_http_ref(sl_http_req *r);
void sl_http_unref(sl_http_req *r);

/* Handles POST /v1/completions (kind COMPLETION) or /v1/chat/completions:
 * answers (or starts a streamed answer) and returns MHD_YES, or MHD_NO
 * to close the connection (the client left). Blocks while the request
 * waits for a session and, unless streamed, while it generates. */
enum MHD_Result sl_gen_handle(sl_http_req *r, sl_oai_kind kind);

/* Handles POST /apply-template. */
enum MHD_Result sl_gen_apply_template(sl_http_req *r);

/* Ends a completion's state: cancels its generation if it is still
 * running, waits (bounded) for the coordinator to end it, gives the
 * session back and frees everything. Blocks for about one step at most
 * (unless the coordinator is gone: then its client's give-up time). */
void sl_gen_free(sl_gen *gen);

#endif
