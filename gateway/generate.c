/* Completions: a request checked (gateway/openai.h), routed (locally or to
 * the fallback endpoint), queued for a coordinator session, generated
 * through proto/client.h and answered whole or as server-sent events, with
 * stop strings matched across token boundaries (gateway/stop.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/fallback.h"
#include "gateway/server.h"

#define FWD_HEADERS_S 120.0   /* the fallback's response may start late (a long prompt) */
#define BUSY_RETRY_MS 50      /* a coordinator with no free session: try again after this */
#define BUSY_GIVE_UP_S 60.0
#define STREAM_BLOCK 16384

struct sl_waiter {
    sl_waiter *prev, *next;
    double work_s;
};

struct sl_gen {
    sl_gateway *g;
    sl_http_req *r;
    sl_oai_request rq;
    char id[48];
    long long created;
    int32_t *ids; /* the prompt */
    uint32_t n_prompt, n_predict;
    double est_s; /* estimated seconds to serve it locally */
    sl_msg msg;
    sl_client *cl;
    bool session;     /* holds one of g->active */
    bool running;     /* generate sent, its last event not yet here */
    bool cancel_sent;
    bool ended;       /* the answer's text is final */
    bool failed;
    sl_oai_error err;
    const char *finish;
    sl_jbuf text;     /* generated text */
    size_t released;  /* of it, what can be shown (stop strings) */
    size_t sent;      /* of that, what is in chunks already (streaming) */
    sl_stop stop;
    uint32_t n_gen;
    uint64_t kv;      /* tokens counted in the metrics' KV gauge */
    double t0, t_first, t_last;
    bool accounted;   /* in the metrics */
    /* streaming */
    sl_jbuf out;
    bool role_sent, tail_sent;
    /* forwarding */
    sl_fwd *fwd;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool stopping(const sl_gen *gen) { return atomic_load(&gen->g->stopping); }

/* ---- the session queue -------------------------------------------------- */

/* Waits for a coordinator session, first come first served. Returns true
 * with one held; false when the client left or the gateway stops. */
static bool acquire(sl_gen *gen)
{
    sl_gateway *g = gen->g;
    sl_waiter w = {.work_s = gen->est_s};
    pthread_mutex_lock(&g->mu);
    w.prev = g->tail;
    if (g->tail)
        g->tail->next = &w;
    else
        g->head = &w;
    g->tail = &w;
    g->n_waiting++;
    g->waiting_work_s += w.work_s;
    sl_metrics_add32(&g->metrics, &g->metrics.deferred, 1);
    bool got = false;
    for (;;) {
        sl_backend_status st;
        sl_backend_status_get(g->be, &st);
        if (g->head == &w && st.up && g->active < st.max_sessions) {
            got = true;
            break;
        }
        if (atomic_load(&g->stopping))
            break;
        pthread_mutex_unlock(&g->mu);
        bool gone = sl_http_client_gone(gen->r);
        pthread_mutex_lock(&g->mu);
        if (gone)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SL_GW_WAIT_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    if (w.prev)
        w.prev->next = w.next;
    else
        g->head = w.next;
    if (w.next)
        w.next->prev = w.prev;
    else
        g->tail = w.prev;
    g->n_waiting--;
    g->waiting_work_s -= w.work_s;
    if (got)
        g->active++;
    pthread_cond_broadcast(&g->cv); /* a new head */
    pthread_mutex_unlock(&g->mu);
    sl_metrics_add32(&g->metrics, &g->metrics.deferred, -1);
    if (got) {
        gen->session = true;
        sl_metrics_add32(&g->metrics, &g->metrics.processing, 1);
    }
    return got;
}

static void release(sl_gen *gen)
{
    if (!gen->session)
        return;
    sl_gateway *g = gen->g;
    gen->session = false;
    pthread_mutex_lock(&g->mu);
    g->active--;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    sl_metrics_add32(&g->metrics, &g->metrics.processing, -1);
    sl_metrics_add(&g->metrics, &g->metrics.kv_tokens, -(int64_t)gen->kv);
    gen->kv = 0;
}

/* ---- generation ------------------------------------------------------------- */

static void fail(sl_gen *gen, int status, const char *type, const char *fmt, const char *detail)
{
    if (gen->failed)
        return;
    gen->failed = true;
    gen->ended = true;
    sl_oai_error_set(&gen->err, status, type, NULL, NULL, fmt, detail ? detail : "");
}

static int start(sl_gen *gen)
{
    sl_msg *m = &gen->msg;
    sl_msg_init(m, SL_MSG_GENERATE);
    m->generate.tokens = (sl_msg_tokens){.n = gen->n_prompt, .ids = gen->ids};
    m->generate.n_predict = gen->n_predict;
    m->generate.sampling = gen->rq.sp;
    m->generate.add_bos = false; /* the ids are the whole prompt */
    int rc = sl_backend_generate(gen->g->be, m, &gen->cl);
    if (rc)
        return rc;
    gen->running = true;
    gen->t0 = now_s();
    return 0;
}

/* Updates rates and counters once a local generation has ended. */
static void account(sl_gen *gen)
{
    if (gen->accounted || !gen->t_first)
        return;
    gen->accounted = true;
    sl_gateway *g = gen->g;
    double prompt_s = gen->t_first - gen->t0, gen_s = gen->t_last - gen->t_first;
    sl_metrics_generation(&g->metrics, gen->n_prompt, prompt_s, gen->n_gen, gen_s);
    /* The rates the time estimate uses: a moving average over requests. */
    pthread_mutex_lock(&g->mu);
    double a = g->measured ? 0.3 : 1.0;
    if (gen->n_prompt && prompt_s > 0)
        g->prompt_s_per_tok += a * (prompt_s / gen->n_prompt - g->prompt_s_per_tok);
    if (gen->n_gen > 1 && gen_s > 0)
        g->gen_s_per_tok += a * (gen_s / (gen->n_gen - 1) - g->gen_s_per_tok);
    g->measured = true;
    pthread_mutex_unlock(&g->mu);
}

/* Marks the answer's text final: released is where it ends. */
static void end_text(sl_gen *gen, const char *finish)
{
    gen->ended = true;
    gen->finish = finish;
    account(gen);
}

/* Every session of the coordinator is in use (proto/msg.h, generate). */
static bool busy_error(const sl_msg *ev) { return ev->error.code == SL_EAGAIN; }

/* Waits up to timeout_ms for the generation's next event and applies it.
 * Returns whether one came. */
static bool pump_one(sl_gen *gen, int timeout_ms)
{
    sl_msg ev;
    int rc = sl_client_next(gen->cl, timeout_ms, &ev);
    if (rc == 0)
        return false;
    if (rc < 0) {
        gen->running = false;
        release(gen);
        if (!gen->ended)
            fail(gen, 502, "server_error", "The coordinator stopped answering%s.", NULL);
        return true;
    }
    if (ev.type == SL_MSG_ERROR) {
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)ev.error.msg.len, ev.error.msg.ptr);
        sl_client_free(gen->cl);
        gen->cl = NULL;
        gen->running = false;
        /* All sessions taken (by another client of the coordinator, or one
         * of ours still ending): try again shortly. */
        if (busy_error(&ev) && !gen->t_first && !gen->ended && now_s() - gen->t0 < BUSY_GIVE_UP_S &&
            !gen->cancel_sent) {
            double t0 = gen->t0;
            usleep(BUSY_RETRY_MS * 1000);
            if (start(gen) == 0) {
                gen->t0 = t0;
                return true;
            }
        }
        release(gen);
        if (!gen->ended)
            fail(gen, 500, "server_error", "The coordinator refused the generation: %s", msg);
        return true;
    }
    const sl_msg_token *t = &ev.token;
    gen->t_last = now_s();
    if (!gen->t_first)
        gen->t_first = gen->t_last;
    if (t->finish != SL_FINISH_NONE)
        gen->running = false;
    if (!gen->ended) {
        sl_jbuf_add(&gen->text, t->text.ptr, t->text.len);
        if (t->tok >= 0 && (t->finish == SL_FINISH_NONE || t->finish == SL_FINISH_LENGTH)) {
            gen->n_gen++;
            gen->kv++;
            sl_metrics_add(&gen->g->metrics, &gen->g->metrics.kv_tokens, 1);
        }
        if (!sl_jbuf_ok(&gen->text))
            fail(gen, 500, "server_error", "Out of memory%s.", NULL);
        bool final = t->finish != SL_FINISH_NONE, matched = false;
        size_t rel = sl_stop_scan(&gen->stop, gen->text.ptr ? gen->text.ptr : "", gen->text.len, final, &matched);
        /* Never end a chunk inside a character. */
        gen->released = matched || final ? rel : sl_utf8_complete(gen->text.ptr, rel);
        if (matched) {
            end_text(gen, "stop");
            if (gen->running) {
                sl_backend_cancel(gen->g->be, gen->msg.id);
                gen->cancel_sent = true;
            }
        } else if (t->finish == SL_FINISH_STOP || t->finish == SL_FINISH_LENGTH) {
            end_text(gen, t->finish == SL_FINISH_STOP ? "stop" : "length");
        } else if (t->finish != SL_FINISH_NONE) {
            fail(gen, 500, "server_error", "The generation %s.",
                 t->finish == SL_FINISH_CANCEL ? "was cancelled" : "failed in the pipeline");
        }
    }
    if (!gen->running) {
        sl_client_free(gen->cl); /* ev pointed into its buffer: used up by now */
        gen->cl = NULL;
        release(gen);
    }
    return true;
}

/* Waits up to timeout_ms for events and applies every one that has come,
 * so that the timings see tokens when they arrive, not when a slow client
 * asks for them. */
static void pump(sl_gen *gen, int timeout_ms)
{
    if (!gen->running) {
        usleep((useconds_t)timeout_ms * 1000);
        return;
    }
    if (!pump_one(gen, timeout_ms))
        return;
    for (int i = 0; i < 1024 && gen->running && !gen->ended; i++)
        if (!pump_one(gen, 0))
            break;
}

static void usage_of(const sl_gen *gen, sl_oai_usage *u)
{
    *u = (sl_oai_usage){gen->n_prompt, gen->n_gen, gen->t_first ? (gen->t_first - gen->t0) * 1e3 : 0,
                        gen->t_first ? (gen->t_last - gen->t_first) * 1e3 : 0};
}

void sl_gen_free(sl_gen *gen)
{
    if (!gen)
        return;
    if (gen->running && !gen->cancel_sent) {
        sl_backend_cancel(gen->g->be, gen->msg.id);
        gen->cancel_sent = true;
        if (!gen->ended)
            sl_metrics_add(&gen->g->metrics, &gen->g->metrics.cancelled, 1);
    }
    /* The session is the coordinator's until its last event: wait for it
     * (one step), so that the next request in the queue finds it free. */
    gen->ended = true;
    while (gen->running && !stopping(gen))
        pump(gen, SL_GW_WAIT_MS);
    sl_client_free(gen->cl);
    release(gen);
    sl_fwd_free(gen->fwd);
    sl_oai_request_free(&gen->rq);
    free(gen->ids);
    sl_jbuf_free(&gen->text);
    sl_jbuf_free(&gen->out);
    free(gen);
}

/* ---- answers ----------------------------------------------------------------- */

static const char *model_name(const sl_gen *gen) { return gen->g->model_id; }

static enum MHD_Result answer_whole(sl_gen *gen)
{
    if (gen->failed)
        return sl_http_error(gen->r, &gen->err);
    sl_oai_usage u;
    usage_of(gen, &u);
    sl_jbuf b = {0};
    sl_oai_response(&b, gen->rq.kind, gen->id, gen->created, model_name(gen), gen->text.ptr ? gen->text.ptr : "",
                    gen->released, gen->finish, &u);
    return sl_http_respond(gen->r, 200, &b, "application/json", "local");
}

/* Appends the events the state calls for: the role, new text, the end. */
static void produce(sl_gen *gen)
{
    const sl_oai_kind kind = gen->rq.kind;
    if (kind == SL_OAI_CHAT && !gen->role_sent && !gen->failed) {
        sl_oai_chunk(&gen->out, kind, gen->id, gen->created, model_name(gen), true, NULL, 0, NULL, NULL, false);
        gen->role_sent = true;
    }
    if (gen->released > gen->sent && !gen->failed) {
        sl_oai_chunk(&gen->out, kind, gen->id, gen->created, model_name(gen), false, gen->text.ptr + gen->sent,
                     gen->released - gen->sent, NULL, NULL, false);
        gen->sent = gen->released;
    }
    if (gen->ended && !gen->tail_sent) {
        gen->tail_sent = true;
        if (gen->failed) {
            /* OpenAI's clients read an `error` member of an event as a failure. */
            sl_jbuf_puts(&gen->out, "data: ");
            sl_oai_error_json(&gen->out, &gen->err);
            sl_jbuf_puts(&gen->out, "\n\n");
            return;
        }
        sl_oai_usage u;
        usage_of(gen, &u);
        sl_oai_chunk(&gen->out, kind, gen->id, gen->created, model_name(gen), false, NULL, 0, gen->finish, &u,
                     false);
        if (gen->rq.include_usage)
            sl_oai_chunk(&gen->out, kind, gen->id, gen->created, model_name(gen), false, NULL, 0, NULL, &u, true);
        sl_oai_done(&gen->out);
    }
}

static ssize_t stream_local(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sl_http_req *r = cls;
    sl_gen *gen = r->gen;
    for (;;) {
        if (gen->out.len) {
            size_t n = gen->out.len < max ? gen->out.len : max;
            memcpy(buf, gen->out.ptr, n);
            sl_jbuf_consume(&gen->out, n);
            sl_metrics_add(&gen->g->metrics, &gen->g->metrics.sse_bytes, (int64_t)n);
            return (ssize_t)n;
        }
        if (!sl_jbuf_ok(&gen->out) || stopping(gen))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (gen->tail_sent)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!gen->ended) {
            if (sl_http_client_gone(r))
                return MHD_CONTENT_READER_END_WITH_ERROR; /* sl_gen_free cancels */
            pump(gen, SL_GW_WAIT_MS);
        }
        produce(gen);
    }
}

static void stream_done(void *cls) { sl_http_unref(cls); }

static enum MHD_Result answer_stream(sl_gen *gen, ssize_t (*reader)(void *, uint64_t, char *, size_t),
                                     unsigned status, const char *content_type, const char *served_by)
{
    sl_http_req *r = gen->r;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, reader, r,
                                                                  stream_done);
    if (!resp)
        return MHD_NO;
    sl_http_ref(r); /* dropped by stream_done */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Sluice-Served-By", served_by);
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    sl_metrics_add(&gen->g->metrics, &gen->g->metrics.http_requests, 1);
    if (status >= 400)
        sl_metrics_add(&gen->g->metrics, &gen->g->metrics.http_errors, 1);
    return rc;
}

/* ---- forwarding --------------------------------------------------------------- */

static ssize_t stream_fwd(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sl_http_req *r = cls;
    sl_gen *gen = r->gen;
    for (;;) {
        ssize_t n = sl_fwd_read(gen->fwd, buf, max, SL_GW_WAIT_MS);
        if (n > 0) {
            sl_metrics_add(&gen->g->metrics, &gen->g->metrics.sse_bytes, n);
            return n;
        }
        if (n == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (n != -SL_EAGAIN || stopping(gen) || sl_http_client_gone(r))
            return MHD_CONTENT_READER_END_WITH_ERROR; /* freeing the forward closes it */
    }
}

/* Forwards the request to the fallback endpoint. Returns 1 when it could
 * not be reached (*e says why; nothing was answered), else what answering
 * returned (cast). */
static int forward(sl_gen *gen, bool for_load, enum MHD_Result *res, sl_oai_error *e)
{
    sl_gateway *g = gen->g;
    sl_http_req *r = gen->r;
    const char *body = r->body.ptr ? r->body.ptr : "";
    size_t len = r->body.len;
    char *rewritten = NULL;
    if (for_load && g->o.fallback_model) {
        /* Sent for load, not for the model: the fallback's own model name. */
        cJSON *name = cJSON_CreateString(g->o.fallback_model);
        if (cJSON_GetObjectItemCaseSensitive(gen->rq.root, "model"))
            cJSON_ReplaceItemInObjectCaseSensitive(gen->rq.root, "model", name);
        else
            cJSON_AddItemToObject(gen->rq.root, "model", name);
        if ((rewritten = cJSON_PrintUnformatted(gen->rq.root))) {
            body = rewritten;
            len = strlen(rewritten);
        }
    }
    char err[320];
    const char *path = gen->rq.kind == SL_OAI_CHAT ? "/chat/completions" : "/completions";
    int rc = sl_fwd_start(g->o.fallback_url, path, g->o.fallback_key, body, len, SL_GW_WAIT_MS, &gen->fwd, err,
                          sizeof err);
    free(rewritten);
    const double t0 = now_s();
    while (rc == -SL_EAGAIN) {
        if (stopping(gen) || sl_http_client_gone(r)) {
            *res = MHD_NO;
            return 0;
        }
        if (now_s() - t0 > FWD_HEADERS_S) {
            snprintf(err, sizeof err, "no response in %.0f s", FWD_HEADERS_S);
            rc = -SL_EIO;
            break;
        }
        rc = sl_fwd_wait_headers(gen->fwd, SL_GW_WAIT_MS, err, sizeof err);
    }
    if (rc) {
        sl_fwd_free(gen->fwd);
        gen->fwd = NULL;
        sl_oai_error_set(e, 502, "server_error", "fallback_unavailable", NULL,
                         "The fallback endpoint cannot be reached: %s", err);
        return 1;
    }
    sl_metrics_add(&g->metrics, &g->metrics.forwarded, 1);
    unsigned status = (unsigned)sl_fwd_status(gen->fwd);
    if (status < 100 || status > 599)
        status = 502;
    if (gen->rq.stream) {
        *res = answer_stream(gen, stream_fwd, status, sl_fwd_content_type(gen->fwd), "fallback");
        return 0;
    }
    /* A whole answer: read it all, then pass it on. */
    sl_jbuf b = {0};
    char chunk[STREAM_BLOCK];
    for (;;) {
        ssize_t n = sl_fwd_read(gen->fwd, chunk, sizeof chunk, SL_GW_WAIT_MS);
        if (n > 0) {
            sl_jbuf_add(&b, chunk, (size_t)n);
            continue;
        }
        if (n == -SL_EAGAIN && !stopping(gen) && !sl_http_client_gone(r))
            continue;
        if (n == 0)
            break;
        sl_jbuf_free(&b);
        if (n == -SL_EAGAIN) {
            *res = MHD_NO;
            return 0;
        }
        sl_oai_error_set(e, 502, "server_error", "fallback_failed", NULL,
                         "The fallback endpoint's answer broke off.");
        *res = sl_http_error(r, e);
        return 0;
    }
    *res = sl_http_respond(r, status, &b, sl_fwd_content_type(gen->fwd), "fallback");
    return 0;
}

/* ---- the request --------------------------------------------------------------- */

static bool local_model(const sl_gateway *g, const char *name)
{
    if (!name || !strcmp(name, g->model_id) || !strcmp(name, g->model_file))
        return true;
    size_t n = strlen(g->model_file);
    return n > 5 && strlen(name) == n - 5 && !strncmp(name, g->model_file, n - 5);
}

/* The chat rendered as text (malloc'd), or NULL with *e set. */
static char *render(sl_gateway *g, const sl_oai_request *rq, size_t *len, sl_oai_error *e)
{
    if (!g->tmpl) {
        sl_oai_error_set(e, 400, "invalid_request_error", "no_chat_template", "messages",
                         "This model has no chat template%s%s; start the server with --chat-template.",
                         g->tmpl_err[0] ? ": " : "", g->tmpl_err);
        return NULL;
    }
    char *text = NULL, err[256];
    int rc = sl_template_render_chat(g->tmpl, g->tok, rq->messages, true, NULL, &text, len, err, sizeof err);
    if (rc) {
        sl_oai_error_set(e, rc == -SL_ENOMEM ? 500 : 400, rc == -SL_ENOMEM ? "server_error" : "invalid_request_error",
                         "chat_template_error", "messages", "The chat template could not render the messages: %s",
                         err);
        return NULL;
    }
    return text;
}

/* The prompt as token ids, and the numbers the routing needs. */
static int prepare(sl_gen *gen, const sl_backend_status *st, sl_oai_error *e)
{
    sl_gateway *g = gen->g;
    const sl_oai_request *rq = &gen->rq;
    int n;
    if (rq->kind == SL_OAI_CHAT) {
        size_t len;
        char *text = render(g, rq, &len, e);
        if (!text)
            return -1;
        n = sl_template_encode(g->tok, text, len, &gen->ids);
        free(text);
    } else if (rq->prompt) {
        const unsigned flags = SL_TOK_ADD_SPECIAL | SL_TOK_PARSE_SPECIAL; /* as the coordinator does */
        n = sl_tokenizer_encode(g->tok, rq->prompt, rq->prompt_len, flags, NULL, 0);
        if (n >= 0 && !(gen->ids = malloc(((size_t)n + 1) * sizeof *gen->ids)))
            n = -SL_ENOMEM;
        if (n >= 0)
            n = sl_tokenizer_encode(g->tok, rq->prompt, rq->prompt_len, flags, gen->ids, (size_t)n);
    } else {
        n = (int)rq->n_prompt_ids;
        gen->ids = malloc(((size_t)n + 1) * sizeof *gen->ids);
        if (!gen->ids)
            n = -SL_ENOMEM;
        for (int i = 0; i < n; i++) {
            if (rq->prompt_ids[i] >= sl_tokenizer_n_vocab(g->tok)) {
                sl_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "prompt",
                                 "Invalid 'prompt': token %d is outside the vocabulary of %d tokens.",
                                 (int)rq->prompt_ids[i], (int)sl_tokenizer_n_vocab(g->tok));
                return -1;
            }
            gen->ids[i] = rq->prompt_ids[i];
        }
    }
    if (n < 0) {
        sl_oai_error_set(e, n == -SL_ENOMEM ? 500 : 400, n == -SL_ENOMEM ? "server_error" : "invalid_request_error",
                         NULL, "prompt", "The prompt cannot be tokenized: %s.", sl_strerror(n));
        return -1;
    }
    gen->n_prompt = (uint32_t)n;
    if (n == 0) {
        sl_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "prompt", "The prompt is empty.");
        return -1;
    }
    if (st->n_ctx && (uint32_t)n >= st->n_ctx) {
        sl_oai_error_set(e, 400, "invalid_request_error", "context_length_exceeded",
                         rq->kind == SL_OAI_CHAT ? "messages" : "prompt",
                         "This model's maximum context length is %u tokens. However, your prompt has %d tokens.",
                         st->n_ctx, n);
        return -1;
    }
    /* Without max_tokens: until the context is full (the coordinator ends
     * the generation there with finish "length"). */
    uint32_t room = st->n_ctx > (uint32_t)n ? st->n_ctx - (uint32_t)n : 1;
    gen->n_predict = rq->max_tokens >= 0 ? (uint32_t)rq->max_tokens : room;
    if (!gen->rq.seed_given && getrandom(&gen->rq.sp.seed, sizeof gen->rq.sp.seed, 0) != sizeof gen->rq.sp.seed)
        gen->rq.sp.seed = (uint64_t)time(NULL) ^ (uint64_t)gen->r;
    pthread_mutex_lock(&g->mu);
    uint32_t work = gen->n_predict < room ? gen->n_predict : room;
    gen->est_s = n * g->prompt_s_per_tok + work * g->gen_s_per_tok;
    pthread_mutex_unlock(&g->mu);
    return 0;
}

/* Why the request should go to the fallback, or NULL to serve it here. */
static const char *route(sl_gen *gen, const sl_backend_status *st)
{
    sl_gateway *g = gen->g;
    pthread_mutex_lock(&g->mu);
    uint32_t waiting = g->n_waiting, active = g->active;
    double ahead = g->waiting_work_s;
    pthread_mutex_unlock(&g->mu);
    uint32_t sessions = st->max_sessions ? st->max_sessions : 1;
    if (active >= sessions && waiting >= g->o.max_queue)
        return "queue";
    if (g->o.max_local_seconds >= 0 && gen->est_s + ahead / sessions > g->o.max_local_seconds)
        return "time";
    return NULL;
}

static void make_id(sl_gen *gen)
{
    unsigned char raw[12];
    if (getrandom(raw, sizeof raw, 0) != sizeof raw)
        memset(raw, 0, sizeof raw);
    int k = snprintf(gen->id, sizeof gen->id, "%s", gen->rq.kind == SL_OAI_CHAT ? "chatcmpl-" : "cmpl-");
    for (size_t i = 0; i < sizeof raw; i++)
        k += snprintf(gen->id + k, sizeof gen->id - (size_t)k, "%02x", raw[i]);
}

enum MHD_Result sl_gen_handle(sl_http_req *r, sl_oai_kind kind)
{
    sl_gateway *g = r->g;
    sl_gen *gen = calloc(1, sizeof *gen);
    if (!gen)
        return MHD_NO;
    gen->g = g;
    gen->r = r;
    r->gen = gen; /* freed with the request */
    gen->created = (long long)time(NULL);
    sl_oai_error e;
    if (sl_oai_parse(kind, r->body.ptr ? r->body.ptr : "", r->body.len, &gen->rq, &e))
        return sl_http_error(r, &e);
    make_id(gen);
    sl_stop_init(&gen->stop, gen->rq.stop, gen->rq.stop_len, gen->rq.n_stop); /* checked by the parser */
    const bool have_fallback = g->o.fallback_url != NULL;
    enum MHD_Result res;
    sl_backend_status st;
    sl_backend_status_get(g->be, &st);
    bool local = local_model(g, gen->rq.model);
    if (have_fallback && (!local || !st.up)) {
        /* Another model, or none here yet: the fallback's, if it answers. */
        if (forward(gen, local, &res, &e) == 0)
            return res;
        if (!local || !st.ever_up)
            return sl_http_error(r, &e);
    }
    if (!st.up)
        return sl_http_error(r, &(sl_oai_error){503, "unavailable_error", "model_loading", "", "Loading model"});
    if (prepare(gen, &st, &e))
        return sl_http_error(r, &e);
    if (have_fallback && route(gen, &st)) {
        if (forward(gen, true, &res, &e) == 0)
            return res;
        SL_WARN("serving locally: %s", e.message);
    }
    if (!acquire(gen))
        return MHD_NO; /* the client left (or the gateway stops) */
    if (start(gen)) {
        release(gen);
        return sl_http_error(r, &(sl_oai_error){503, "unavailable_error", NULL, "",
                                                "Cannot send the request to the coordinator."});
    }
    sl_metrics_add(&g->metrics, &g->metrics.kv_tokens, gen->n_prompt);
    gen->kv = gen->n_prompt;
    if (gen->rq.stream)
        return answer_stream(gen, stream_local, 200, "text/event-stream", "local");
    while (!gen->ended) {
        if (stopping(gen) || sl_http_client_gone(r))
            return MHD_NO; /* sl_gen_free cancels */
        pump(gen, SL_GW_WAIT_MS);
    }
    return answer_whole(gen);
}

enum MHD_Result sl_gen_apply_template(sl_http_req *r)
{
    sl_oai_request rq;
    sl_oai_error e;
    if (sl_oai_parse(SL_OAI_CHAT, r->body.ptr ? r->body.ptr : "", r->body.len, &rq, &e))
        return sl_http_error(r, &e);
    size_t len;
    char *text = render(r->g, &rq, &len, &e);
    sl_oai_request_free(&rq);
    if (!text)
        return sl_http_error(r, &e);
    sl_jbuf b = {0};
    sl_jbuf_puts(&b, "{\"prompt\":");
    sl_jbuf_str(&b, text, len);
    sl_jbuf_puts(&b, "}");
    free(text);
    return sl_http_respond(r, 200, &b, "application/json", NULL);
}
