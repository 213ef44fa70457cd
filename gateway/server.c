/* The gateway's HTTP side: libmicrohttpd with a thread per connection,
 * request bodies (with a size cap), authentication, routing, and the
 * endpoints other than completions; see gateway.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "gateway/fallback.h"
#include "gateway/server.h"
#include "model/gguf.h"
#include "model/source.h"

#define STACK_BYTES ((size_t)2 << 20) /* connection threads: JSON and template rendering */
#define IDLE_TIMEOUT_S 300u           /* an idle keep-alive connection is closed after this */
#define CALL_TIMEOUT_S 30.0           /* tokenize / detokenize replies */

enum route {
    R_NONE,
    R_HEALTH,
    R_MODELS,
    R_METRICS,
    R_COMPLETIONS,
    R_CHAT,
    R_TOKENIZE,
    R_DETOKENIZE,
    R_APPLY_TEMPLATE,
};

static const struct {
    const char *path;
    enum route route;
    bool post;
    bool public_; /* answered without the API key */
} k_routes[] = {
    {"/health", R_HEALTH, false, true},
    {"/v1/health", R_HEALTH, false, true},
    {"/v1/models", R_MODELS, false, true},
    {"/models", R_MODELS, false, true},
    {"/metrics", R_METRICS, false, false},
    {"/v1/completions", R_COMPLETIONS, true, false},
    {"/completions", R_COMPLETIONS, true, false},
    {"/v1/chat/completions", R_CHAT, true, false},
    {"/chat/completions", R_CHAT, true, false},
    {"/tokenize", R_TOKENIZE, true, false},
    {"/detokenize", R_DETOKENIZE, true, false},
    {"/apply-template", R_APPLY_TEMPLATE, true, false},
};

/* ---- responses --------------------------------------------------------- */

enum MHD_Result sl_http_respond(sl_http_req *r, unsigned status, sl_jbuf *b, const char *content_type,
                                const char *served_by)
{
    size_t len;
    char *data = sl_jbuf_take(b, &len);
    if (!data) {
        SL_ERROR("out of memory writing a response");
        return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (served_by)
        MHD_add_response_header(resp, "X-Sluice-Served-By", served_by);
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    sl_metrics *m = &r->g->metrics;
    sl_metrics_add(m, &m->http_requests, 1);
    if (status >= 400)
        sl_metrics_add(m, &m->http_errors, 1);
    return rc;
}

enum MHD_Result sl_http_error(sl_http_req *r, const sl_oai_error *e)
{
    if (e->status >= 500 && e->status != 503) /* 503: loading, or the coordinator is away (said elsewhere) */
        SL_WARN("answering %d: %s", e->status, e->message);
    sl_jbuf b = {0};
    sl_oai_error_json(&b, e);
    return sl_http_respond(r, (unsigned)e->status, &b, "application/json", NULL);
}

static enum MHD_Result error(sl_http_req *r, int status, const char *type, const char *code, const char *msg)
{
    sl_oai_error e;
    sl_oai_error_set(&e, status, type, code, NULL, "%s", msg);
    return sl_http_error(r, &e);
}

static enum MHD_Result json(sl_http_req *r, sl_jbuf *b) { return sl_http_respond(r, 200, b, "application/json", NULL); }

bool sl_http_client_gone(sl_http_req *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return true;
    struct pollfd p = {ci->connect_fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return true;
    /* Readable: the next request of a keep-alive client, or the end. */
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void sl_http_ref(sl_http_req *r) { atomic_fetch_add(&r->refs, 1); }

void sl_http_unref(sl_http_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->gen)
        sl_gen_free(r->gen);
    sl_jbuf_free(&r->body);
    free(r);
}

/* ---- the small endpoints ------------------------------------------------ */

static enum MHD_Result health(sl_http_req *r)
{
    if (!sl_gateway_ready(r->g))
        return error(r, 503, "unavailable_error", "model_loading", "Loading model");
    sl_jbuf b = {0};
    sl_jbuf_puts(&b, "{\"status\":\"ok\"}");
    return json(r, &b);
}

static enum MHD_Result models(sl_http_req *r)
{
    sl_gateway *g = r->g;
    const sl_hparams *hp = sl_model_hparams(g->model);
    sl_jbuf b = {0};
    sl_jbuf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    sl_jbuf_cstr(&b, g->model_id);
    sl_jbuf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"sluice\",\"meta\":{\"n_vocab\":%d,"
                       "\"n_ctx_train\":%u,\"size\":%llu}}]}",
                   g->started, (int)sl_tokenizer_n_vocab(g->tok), hp->n_ctx_train,
                   (unsigned long long)sl_gguf_file_size(sl_model_gguf(g->model)));
    return json(r, &b);
}

static enum MHD_Result metrics(sl_http_req *r)
{
    sl_backend_status st;
    sl_backend_status_get(r->g->be, &st);
    sl_jbuf b = {0};
    sl_metrics_render(&r->g->metrics, &st, &b);
    return sl_http_respond(r, 200, &b, "text/plain; version=0.0.4; charset=utf-8", NULL);
}

/* Parses the body as a JSON object with only the given members. */
static cJSON *parse_members(sl_http_req *r, const char *const *names, size_t n, const cJSON **out,
                            sl_oai_error *e)
{
    cJSON *root = cJSON_ParseWithLength(r->body.ptr ? r->body.ptr : "", r->body.len);
    if (!root) {
        sl_oai_error_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                         "We could not parse the JSON body of your request.");
        return NULL;
    }
    if (sl_oai_members(root, names, n, out, e)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static bool opt_bool(const cJSON *v, const char *name, bool dflt, bool *out, sl_oai_error *e)
{
    if (!v) {
        *out = dflt;
        return true;
    }
    if (!cJSON_IsBool(v)) {
        sl_oai_error_set(e, 400, "invalid_request_error", "invalid_type", name,
                         "Invalid type for '%s': expected a boolean.", name);
        return false;
    }
    *out = cJSON_IsTrue(v);
    return true;
}

static enum MHD_Result call_failed(sl_http_req *r, int rc)
{
    return rc == -SL_EIO ? error(r, 503, "unavailable_error", "coordinator_unavailable",
                                 "The coordinator did not answer.")
                         : error(r, 500, "server_error", NULL, sl_strerror(rc));
}

/* POST /tokenize {content, add_special (false), parse_special (true)} ->
 * {tokens}, as llama.cpp's server. */
static enum MHD_Result tokenize(sl_http_req *r)
{
    static const char *const names[] = {"content", "add_special", "parse_special"};
    const cJSON *v[3];
    sl_oai_error e;
    cJSON *root = parse_members(r, names, 3, v, &e);
    if (!root)
        return sl_http_error(r, &e);
    bool add, special;
    enum MHD_Result res;
    if (!cJSON_IsString(v[0])) {
        sl_oai_error_set(&e, 400, "invalid_request_error", v[0] ? "invalid_type" : "missing_required_parameter",
                         "content", "'content' must be a string.");
        res = sl_http_error(r, &e);
    } else if (!opt_bool(v[1], "add_special", false, &add, &e) ||
               !opt_bool(v[2], "parse_special", true, &special, &e)) {
        res = sl_http_error(r, &e);
    } else {
        sl_msg m, reply;
        sl_msg_init(&m, SL_MSG_TOKENIZE);
        m.tokenize.text = sl_msg_cstr(v[0]->valuestring);
        m.tokenize.add_bos = add;
        m.tokenize.special = special;
        uint8_t *buf;
        int rc = m.tokenize.text.len > SL_PROTO_MAX_TEXT ? -SL_ERANGE
                                                          : sl_backend_call(r->g->be, &m, &buf, &reply, CALL_TIMEOUT_S);
        if (rc == -SL_ERANGE) {
            res = error(r, 400, "invalid_request_error", "invalid_value", "'content' is too long.");
        } else if (rc) {
            res = call_failed(r, rc);
        } else if (reply.type != SL_MSG_TOKENS) {
            sl_oai_error_set(&e, 400, "invalid_request_error", NULL, "content", "%.*s",
                             (int)(reply.type == SL_MSG_ERROR ? reply.error.msg.len : 0),
                             reply.type == SL_MSG_ERROR ? reply.error.msg.ptr : "");
            res = sl_http_error(r, &e);
            free(buf);
        } else {
            uint32_t n = reply.tokens.n;
            int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
            sl_jbuf b = {0};
            if (ids) {
                sl_msg_tokens_get(&reply.tokens, ids, n);
                sl_jbuf_puts(&b, "{\"tokens\":[");
                for (uint32_t i = 0; i < n; i++)
                    sl_jbuf_printf(&b, i ? ",%d" : "%d", (int)ids[i]);
                sl_jbuf_puts(&b, "]}");
            }
            free(ids);
            free(buf);
            res = ids ? json(r, &b) : MHD_NO;
        }
    }
    cJSON_Delete(root);
    return res;
}

/* POST /detokenize {tokens} -> {content}. */
static enum MHD_Result detokenize(sl_http_req *r)
{
    static const char *const names[] = {"tokens"};
    const cJSON *v[1];
    sl_oai_error e;
    cJSON *root = parse_members(r, names, 1, v, &e);
    if (!root)
        return sl_http_error(r, &e);
    enum MHD_Result res;
    int n = cJSON_GetArraySize(v[0]);
    int32_t *ids = cJSON_IsArray(v[0]) ? malloc(((size_t)n + 1) * sizeof *ids) : NULL;
    bool ok = ids != NULL && (uint32_t)n <= SL_PROTO_MAX_TOKENS;
    const cJSON *it;
    int k = 0;
    if (ok)
        cJSON_ArrayForEach(it, v[0])
        {
            double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
            if (d < 0 || d > INT32_MAX || d != (double)(int32_t)d)
                ok = false;
            else
                ids[k++] = (int32_t)d;
        }
    if (!ok) {
        res = error(r, 400, "invalid_request_error", "invalid_type", "'tokens' must be an array of token ids.");
    } else {
        sl_msg m, reply;
        sl_msg_init(&m, SL_MSG_DETOKENIZE);
        m.detokenize.tokens = (sl_msg_tokens){.n = (uint32_t)k, .ids = ids};
        uint8_t *buf;
        int rc = sl_backend_call(r->g->be, &m, &buf, &reply, CALL_TIMEOUT_S);
        if (rc) {
            res = call_failed(r, rc);
        } else if (reply.type != SL_MSG_TEXT) {
            sl_oai_error_set(&e, 400, "invalid_request_error", NULL, "tokens", "%.*s",
                             (int)(reply.type == SL_MSG_ERROR ? reply.error.msg.len : 0),
                             reply.type == SL_MSG_ERROR ? reply.error.msg.ptr : "");
            res = sl_http_error(r, &e);
            free(buf);
        } else {
            sl_jbuf b = {0};
            sl_jbuf_puts(&b, "{\"content\":");
            sl_jbuf_str(&b, reply.text.ptr, reply.text.len);
            sl_jbuf_puts(&b, "}");
            free(buf);
            res = json(r, &b);
        }
    }
    free(ids);
    cJSON_Delete(root);
    return res;
}

/* ---- libmicrohttpd callbacks -------------------------------------------- */

/* Constant-time comparison of the bearer token with the key. */
static bool authorized(sl_gateway *g, struct MHD_Connection *c)
{
    if (!g->o.api_key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7))
        return false;
    const char *tok = h + 7, *key = g->o.api_key;
    size_t a = strlen(tok), b = strlen(key);
    unsigned char diff = a != b;
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)(key[i] ^ (i < a ? tok[i] : 0));
    return diff == 0;
}

static enum MHD_Result dispatch(sl_http_req *r, const char *method, const char *url)
{
    sl_gateway *g = r->g;
    size_t k = 0, n = sizeof k_routes / sizeof k_routes[0];
    while (k < n && strcmp(url, k_routes[k].path))
        k++;
    if (k == n) {
        char msg[300];
        snprintf(msg, sizeof msg, "Unknown request URL: %.16s %.200s.", method, url);
        return error(r, 404, "invalid_request_error", "unknown_url", msg);
    }
    bool post = !strcmp(method, "POST");
    if (post != k_routes[k].post || (!post && strcmp(method, "GET") && strcmp(method, "HEAD"))) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s %.200s is not allowed; use %s.", method, url, k_routes[k].post ? "POST" : "GET");
        return error(r, 405, "invalid_request_error", "method_not_allowed", msg);
    }
    if (!k_routes[k].public_ && !authorized(g, r->conn))
        return error(r, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.");
    if (r->too_big) {
        char msg[160];
        snprintf(msg, sizeof msg, "The request body is over the limit of %llu bytes.",
                 (unsigned long long)g->o.max_body);
        return error(r, 413, "invalid_request_error", "request_too_large", msg);
    }
    switch (k_routes[k].route) {
    case R_HEALTH: return health(r);
    case R_MODELS: return models(r);
    case R_METRICS: return metrics(r);
    case R_COMPLETIONS: return sl_gen_handle(r, SL_OAI_COMPLETION);
    case R_CHAT: return sl_gen_handle(r, SL_OAI_CHAT);
    case R_TOKENIZE: return tokenize(r);
    case R_DETOKENIZE: return detokenize(r);
    case R_APPLY_TEMPLATE: return sl_gen_apply_template(r);
    default: SL_ASSERT(!"a route without a handler"); return MHD_NO;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    sl_gateway *g = cls;
    sl_http_req *r = *con_cls;
    if (!r) {
        /* Headers only, so far. */
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->g = g;
        r->conn = c;
        atomic_init(&r->refs, 1);
        *con_cls = r;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        if (cl && strtoull(cl, NULL, 10) > g->o.max_body) {
            r->too_big = true;
            /* A client that waits for "100 Continue" has sent nothing yet:
             * refuse now. Others are sending already: read and drop the body,
             * then answer (closing with unread data would reset the
             * connection before the client reads the answer). */
            if (expect)
                return dispatch(r, method, url);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_big && r->body.len + *upload_size <= g->o.max_body)
            sl_jbuf_add(&r->body, upload, *upload_size);
        else
            r->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!sl_jbuf_ok(&r->body))
        return MHD_NO;
    return dispatch(r, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    sl_http_req *r = *con_cls;
    *con_cls = NULL;
    if (r)
        sl_http_unref(r);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    SL_WARN("libmicrohttpd: %s", line);
}

/* ---- start and stop ------------------------------------------------------- */

bool sl_gateway_ready(sl_gateway *g)
{
    sl_backend_status st;
    sl_backend_status_get(g->be, &st);
    return st.up && st.workers > 0 && st.max_sessions > 0;
}

unsigned sl_gateway_port(const sl_gateway *g) { return g->port; }

static int load_model(sl_gateway *g)
{
    const sl_gateway_opts *o = &g->o;
    if (sl_source_open_model(o->model, SL_SOURCE_META, &g->model)) {
        fprintf(stderr, "sluice: cannot load the model '%s' (see the message above)\n", o->model);
        return -SL_EFORMAT;
    }
    if (sl_tokenizer_new(sl_model_gguf(g->model), &g->tok_owned)) {
        fprintf(stderr, "sluice: the model '%s' has no usable tokenizer\n", o->model);
        return -SL_EFORMAT;
    }
    g->tok = g->tok_owned;
    /* The file's (or a packed model's directory's) name. */
    char path[sizeof g->model_file];
    snprintf(path, sizeof path, "%s", o->model);
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
        path[n - 1] = 0;
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    snprintf(g->model_file, sizeof g->model_file, "%s", base);
    snprintf(g->model_id, sizeof g->model_id, "%s", o->alias ? o->alias : base);
    size_t n = strlen(g->model_id);
    if (!o->alias && n > 5 && !strcmp(g->model_id + n - 5, ".gguf"))
        g->model_id[n - 5] = 0;
    char err[256];
    int rc = sl_template_for_model(g->model, o->chat_template, &g->tmpl, err, sizeof err);
    if (rc && o->chat_template && *o->chat_template) {
        fprintf(stderr, "sluice: --chat-template %s: %s\n", o->chat_template, err);
        return rc;
    }
    if (rc) {
        /* Completions still work; chat says why it cannot. */
        snprintf(g->tmpl_err, sizeof g->tmpl_err, "%s", err);
        if (rc != -SL_ENOTFOUND)
            fprintf(stderr, "sluice: the model's chat template cannot be used (%s); /v1/chat/completions is off\n",
                    err);
    }
    return 0;
}

/* The socket address for --host and --port. */
static int resolve(const char *host, unsigned port, struct sockaddr_storage *ss, bool *v6)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) {
        fprintf(stderr, "sluice: --host %s: %s\n", host, gai_strerror(rc));
        return -SL_EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

int sl_gateway_new(const sl_gateway_opts *o, sl_gateway **out)
{
    *out = NULL;
    if (!o->connect || !o->model) {
        fprintf(stderr, "sluice: the gateway needs a coordinator endpoint and the model file\n");
        return -SL_EINVAL;
    }
    sl_gateway *g = calloc(1, sizeof *g);
    if (!g)
        return -SL_ENOMEM;
    g->o = *o;
    g->started = (long long)time(NULL);
    sl_metrics_init(&g->metrics);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    /* Until local requests are measured: 100 tokens/s either way. */
    g->prompt_s_per_tok = g->gen_s_per_tok = 0.01;
    int rc = load_model(g);
    if (rc)
        goto fail;
    if ((rc = sl_fwd_global_init()))
        goto fail;
    g->curl_ready = true;
    if ((rc = sl_backend_new(o->connect, o->monitor, &g->be))) {
        fprintf(stderr, "sluice: cannot connect to the coordinator at %s\n", o->connect);
        goto fail;
    }
    struct sockaddr_storage ss;
    bool v6;
    if ((rc = resolve(o->host, o->port, &ss, &v6)))
        goto fail;
    g->mhd = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
        (uint16_t)o->port, NULL, NULL, on_request, g, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, g,
        MHD_OPTION_CONNECTION_LIMIT, o->max_conns, MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S,
        MHD_OPTION_THREAD_STACK_SIZE, STACK_BYTES, MHD_OPTION_END);
    if (!g->mhd) {
        fprintf(stderr, "sluice: cannot listen on %s port %u: %s\n", o->host, o->port, strerror(errno));
        rc = -SL_EIO;
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->mhd, MHD_DAEMON_INFO_BIND_PORT);
    g->port = di ? di->port : o->port;
    *out = g;
    return 0;
fail:
    sl_gateway_free(g);
    return rc;
}

void sl_gateway_free(sl_gateway *g)
{
    if (!g)
        return;
    atomic_store(&g->stopping, true);
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->mhd)
        MHD_stop_daemon(g->mhd); /* waits for the connection threads, which see `stopping` */
    sl_backend_free(g->be);
    if (g->curl_ready)
        sl_fwd_global_cleanup();
    sl_template_free(g->tmpl);
    sl_tokenizer_free(g->tok_owned);
    sl_model_close(g->model);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    sl_metrics_destroy(&g->metrics);
    free(g);
}
