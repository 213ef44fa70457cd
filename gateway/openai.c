/* OpenAI request checking and response writing; see openai.h. */
#include "gateway/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proto/msg.h"

#define BAD 400

void sl_oai_error_set(sl_oai_error *e, int status, const char *type, const char *code, const char *param,
                      const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

void sl_oai_error_json(sl_jbuf *b, const sl_oai_error *e)
{
    sl_jbuf_puts(b, "{\"error\":{\"message\":");
    sl_jbuf_cstr(b, e->message);
    sl_jbuf_puts(b, ",\"type\":");
    sl_jbuf_cstr(b, e->type ? e->type : "invalid_request_error");
    sl_jbuf_puts(b, ",\"param\":");
    sl_jbuf_cstr(b, e->param[0] ? e->param : NULL);
    sl_jbuf_puts(b, ",\"code\":");
    sl_jbuf_cstr(b, e->code);
    sl_jbuf_puts(b, "}}");
}

/* ---- field readers: each returns 0, or -1 with *e set ------------------- */

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "null";
}

static int bad_type(sl_oai_error *e, const char *name, const cJSON *v, const char *want)
{
    sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_type", name,
                     "Invalid type for '%s': expected %s, but got %s instead.", name, want, json_type(v));
    return -1;
}

static int get_int(const cJSON *v, const char *name, double min, double max, int64_t *out, sl_oai_error *e)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return bad_type(e, name, v, "an integer");
    if (!(v->valuedouble >= min && v->valuedouble <= max)) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", name,
                         "Invalid '%s': expected an integer in [%.0f, %.0f], but got %.17g.", name, min, max,
                         v->valuedouble);
        return -1;
    }
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int get_float(const cJSON *v, const char *name, double min, double max, bool min_open, float *out,
                     sl_oai_error *e)
{
    if (!cJSON_IsNumber(v))
        return bad_type(e, name, v, "a number");
    double d = v->valuedouble;
    if (!(d >= min && d <= max) || (min_open && d == min)) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", name,
                         "Invalid '%s': expected a number in %c%g, %g], but got %.17g.", name, min_open ? '(' : '[',
                         min, max, d);
        return -1;
    }
    *out = (float)d;
    return 0;
}

static int get_bool(const cJSON *v, const char *name, bool *out, sl_oai_error *e)
{
    if (!cJSON_IsBool(v))
        return bad_type(e, name, v, "a boolean");
    *out = cJSON_IsTrue(v);
    return 0;
}

static int unsupported(sl_oai_error *e, const char *name, const char *what)
{
    sl_oai_error_set(e, BAD, "invalid_request_error", "unsupported_value", name, "'%s': %s is not supported.",
                     name, what);
    return -1;
}

/* stop: a string or an array of strings. */
static int get_stop(const cJSON *v, sl_oai_request *r, sl_oai_error *e)
{
    const cJSON *one[1] = {v};
    const cJSON *const *items = one;
    size_t n = 1;
    const cJSON *arr[SL_STOP_MAX];
    if (cJSON_IsArray(v)) {
        n = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            if (n == SL_STOP_MAX) {
                sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", "stop",
                                 "Invalid 'stop': at most %d stop strings are allowed.", SL_STOP_MAX);
                return -1;
            }
            arr[n++] = it;
        }
        items = arr;
    }
    for (size_t i = 0; i < n; i++) {
        if (!cJSON_IsString(items[i]))
            return bad_type(e, "stop", items[i], "a string or an array of strings");
        size_t len = strlen(items[i]->valuestring);
        if (len == 0 || len > SL_STOP_MAX_LEN) {
            sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", "stop",
                             "Invalid 'stop': each stop string must be 1 to %d bytes long.", SL_STOP_MAX_LEN);
            return -1;
        }
        r->stop[i] = items[i]->valuestring;
        r->stop_len[i] = len;
    }
    r->n_stop = n;
    return 0;
}

/* prompt (completions): a string, an array of one string, an array of token
 * ids, or an array of one array of token ids. */
static int get_ids(const cJSON *arr, sl_oai_request *r, sl_oai_error *e)
{
    int n = cJSON_GetArraySize(arr);
    if (n <= 0 || (uint32_t)n > SL_PROTO_MAX_TOKENS) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", "prompt",
                         "Invalid 'prompt': a list of token ids must hold 1 to %u ids.", SL_PROTO_MAX_TOKENS);
        return -1;
    }
    r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) {
        sl_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    const cJSON *it;
    uint32_t k = 0;
    cJSON_ArrayForEach(it, arr)
    {
        int64_t id;
        if (get_int(it, "prompt", 0, INT32_MAX, &id, e))
            return -1;
        r->prompt_ids[k++] = (int32_t)id;
    }
    r->n_prompt_ids = k;
    return 0;
}

static int get_prompt(const cJSON *v, sl_oai_request *r, sl_oai_error *e)
{
    if (cJSON_IsString(v)) {
        r->prompt = v->valuestring;
        r->prompt_len = strlen(v->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return bad_type(e, "prompt", v, "a string, an array of token ids, or an array of one of those");
    const cJSON *first = v->child;
    if (cJSON_IsNumber(first))
        return get_ids(v, r, e);
    if (cJSON_GetArraySize(v) != 1)
        return unsupported(e, "prompt", "more than one prompt in a request");
    if (cJSON_IsString(first)) {
        r->prompt = first->valuestring;
        r->prompt_len = strlen(first->valuestring);
        return 0;
    }
    if (cJSON_IsArray(first))
        return get_ids(first, r, e);
    return bad_type(e, "prompt", first, "a string or an array of token ids");
}

/* One message's content as a string: a string, null (an assistant turn that
 * only called tools) or an array of text parts, joined. */
static int content_text(const cJSON *c, sl_jbuf *out, sl_oai_error *e)
{
    if (!c || cJSON_IsNull(c))
        return 0;
    if (cJSON_IsString(c)) {
        sl_jbuf_puts(out, c->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(c))
        return bad_type(e, "messages.content", c, "a string or an array of content parts");
    const cJSON *part;
    cJSON_ArrayForEach(part, c)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type))
            return bad_type(e, "messages.content", part, "a content part object with a 'type'");
        if (strcmp(type->valuestring, "text") != 0)
            return unsupported(e, "messages.content", "a content part other than text");
        if (!cJSON_IsString(text))
            return bad_type(e, "messages.content.text", text, "a string");
        sl_jbuf_puts(out, text->valuestring);
    }
    return 0;
}

static int get_messages(const cJSON *v, sl_oai_request *r, sl_oai_error *e)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool", "function"};
    if (!cJSON_IsArray(v))
        return bad_type(e, "messages", v, "an array");
    if (cJSON_GetArraySize(v) == 0) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "empty_array", "messages",
                         "Invalid 'messages': empty array. Expected an array with at least one message.");
        return -1;
    }
    r->messages = cJSON_CreateArray();
    if (!r->messages)
        goto nomem;
    const cJSON *m;
    cJSON_ArrayForEach(m, v)
    {
        if (!cJSON_IsObject(m))
            return bad_type(e, "messages", m, "an array of message objects");
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return bad_type(e, "messages.role", role, "a string");
        size_t k = 0;
        while (k < sizeof roles / sizeof roles[0] && strcmp(role->valuestring, roles[k]))
            k++;
        if (k == sizeof roles / sizeof roles[0]) {
            sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", "messages.role",
                             "Invalid 'messages.role': '%.64s' is not one of system, developer, user, assistant, "
                             "tool.",
                             role->valuestring);
            return -1;
        }
        sl_jbuf text = {0};
        if (content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &text, e)) {
            sl_jbuf_free(&text);
            return -1;
        }
        /* Keep the message's other members (name, tool_calls, ...): a
         * template may use them. */
        cJSON *copy = cJSON_Duplicate(m, true);
        cJSON *str = cJSON_CreateString(text.ptr ? text.ptr : "");
        bool ok = sl_jbuf_ok(&text);
        sl_jbuf_free(&text);
        if (!copy || !str || !ok) {
            cJSON_Delete(copy);
            cJSON_Delete(str);
            goto nomem;
        }
        cJSON_AddItemToArray(r->messages, copy);
        if (cJSON_GetObjectItemCaseSensitive(copy, "content"))
            cJSON_ReplaceItemInObjectCaseSensitive(copy, "content", str);
        else
            cJSON_AddItemToObject(copy, "content", str);
        if (k == 1) /* developer: OpenAI's newer name for system, which templates know */
            cJSON_ReplaceItemInObjectCaseSensitive(copy, "role", cJSON_CreateString("system"));
    }
    return 0;
nomem:
    sl_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return -1;
}

static bool is_null(const cJSON *v) { return cJSON_IsNull(v); }

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i]))
            return true;
    return false;
}

/* Whether k is a member of `kind`'s requests (OpenAI's, plus the llama.cpp
 * extras and the accepted no-ops of openai.h). */
static bool known(sl_oai_kind kind, const char *k)
{
    static const char *const common[] = {
        "model", "max_tokens", "n_predict", "temperature", "top_p", "min_p", "repeat_penalty",
        "presence_penalty", "frequency_penalty", "top_k", "repeat_last_n", "seed", "stop", "stream",
        "stream_options", "n", "logit_bias", "logprobs", "cache_prompt", "store", "user", "service_tier",
        "metadata"};
    static const char *const completion[] = {"prompt", "best_of", "echo", "suffix"};
    static const char *const chat[] = {"messages", "max_completion_tokens", "top_logprobs", "response_format",
                                       "tools", "tool_choice", "parallel_tool_calls"};
    if (in_list(k, common, sizeof common / sizeof common[0]))
        return true;
    if (kind == SL_OAI_CHAT)
        return in_list(k, chat, sizeof chat / sizeof chat[0]);
    return in_list(k, completion, sizeof completion / sizeof completion[0]);
}

/* The members of a request and how each is read. */
static int field(sl_oai_kind kind, const cJSON *v, sl_oai_request *r, bool *have_main, sl_oai_error *e)
{
    const char *k = v->string;
    const bool chat = kind == SL_OAI_CHAT;
    int64_t i;
    bool b;
    if (!known(kind, k)) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "unknown_parameter", k,
                         "Unrecognized request argument supplied: %.200s", k);
        return -1;
    }
    /* The members before this one are all known, so this looks at a few
     * dozen at most. */
    for (const cJSON *p = r->root->child; p != v; p = p->next)
        if (!strcmp(p->string, k)) {
            sl_oai_error_set(e, BAD, "invalid_request_error", "duplicate_parameter", k,
                             "The member '%.200s' is given twice.", k);
            return -1;
        }
    /* null is "absent" for every optional member. */
    if (is_null(v) && strcmp(k, "prompt") && strcmp(k, "messages"))
        return 0;
    if (!strcmp(k, "model")) {
        if (!cJSON_IsString(v))
            return bad_type(e, k, v, "a string");
        r->model = v->valuestring;
        return 0;
    }
    if (!chat && !strcmp(k, "prompt")) {
        *have_main = true;
        return get_prompt(v, r, e);
    }
    if (chat && !strcmp(k, "messages")) {
        *have_main = true;
        return get_messages(v, r, e);
    }
    if (!strcmp(k, "max_tokens") || (chat && !strcmp(k, "max_completion_tokens"))) {
        if (get_int(v, k, 0, SL_PROTO_MAX_TOKENS, &i, e))
            return -1;
        r->max_tokens = i;
        return 0;
    }
    if (!strcmp(k, "n_predict")) { /* llama.cpp: -1 is "until the context is full" */
        if (get_int(v, k, -1, SL_PROTO_MAX_TOKENS, &i, e))
            return -1;
        r->max_tokens = i;
        return 0;
    }
    if (!strcmp(k, "temperature"))
        return get_float(v, k, 0, 1e4, false, &r->sp.temperature, e);
    if (!strcmp(k, "top_p"))
        return get_float(v, k, 0, 1, false, &r->sp.top_p, e);
    if (!strcmp(k, "min_p"))
        return get_float(v, k, 0, 1, false, &r->sp.min_p, e);
    if (!strcmp(k, "repeat_penalty"))
        return get_float(v, k, 0, 1e4, true, &r->sp.repeat_penalty, e);
    if (!strcmp(k, "presence_penalty"))
        return get_float(v, k, -100, 100, false, &r->sp.presence_penalty, e);
    if (!strcmp(k, "frequency_penalty"))
        return get_float(v, k, -100, 100, false, &r->sp.frequency_penalty, e);
    if (!strcmp(k, "top_k")) { /* llama.cpp: <= 0 disables it */
        if (get_int(v, k, -1e9, INT32_MAX, &i, e))
            return -1;
        r->sp.top_k = i > 0 ? (int32_t)i : 0;
        return 0;
    }
    if (!strcmp(k, "repeat_last_n")) { /* llama.cpp: -1 is "as far back as possible" */
        if (get_int(v, k, -1, SL_SAMPLER_MAX_LAST_N, &i, e))
            return -1;
        r->sp.penalty_last_n = i < 0 ? SL_SAMPLER_MAX_LAST_N : (int32_t)i;
        return 0;
    }
    if (!strcmp(k, "seed")) { /* llama.cpp: -1 is a random seed */
        if (get_int(v, k, -1, 9007199254740992.0, &i, e))
            return -1;
        if (i >= 0) {
            r->sp.seed = (uint64_t)i;
            r->seed_given = true;
        }
        return 0;
    }
    if (!strcmp(k, "stop"))
        return get_stop(v, r, e);
    if (!strcmp(k, "stream"))
        return get_bool(v, k, &r->stream, e);
    if (!strcmp(k, "stream_options")) {
        if (!cJSON_IsObject(v))
            return bad_type(e, k, v, "an object");
        const cJSON *o;
        cJSON_ArrayForEach(o, v)
        {
            if (strcmp(o->string, "include_usage")) {
                sl_oai_error_set(e, BAD, "invalid_request_error", "unknown_parameter", "stream_options",
                                 "Unrecognized request argument supplied: stream_options.%.64s", o->string);
                return -1;
            }
            if (!is_null(o) && get_bool(o, "stream_options.include_usage", &r->include_usage, e))
                return -1;
        }
        return 0;
    }
    if (!strcmp(k, "n") || (!chat && !strcmp(k, "best_of"))) {
        if (get_int(v, k, 1, 128, &i, e))
            return -1;
        return i == 1 ? 0 : unsupported(e, k, "more than one choice");
    }
    if (!strcmp(k, "logit_bias")) {
        if (!cJSON_IsObject(v))
            return bad_type(e, k, v, "an object");
        return v->child ? unsupported(e, k, "a logit bias") : 0;
    }
    if (!strcmp(k, "logprobs")) {
        if (chat) {
            if (get_bool(v, k, &b, e))
                return -1;
            return b ? unsupported(e, k, "returning log probabilities") : 0;
        }
        if (get_int(v, k, 0, 5, &i, e))
            return -1;
        return i ? unsupported(e, k, "returning log probabilities") : 0;
    }
    if (chat && !strcmp(k, "top_logprobs")) {
        if (get_int(v, k, 0, 20, &i, e))
            return -1;
        return i ? unsupported(e, k, "returning log probabilities") : 0;
    }
    if (!chat && !strcmp(k, "echo")) {
        if (get_bool(v, k, &b, e))
            return -1;
        return b ? unsupported(e, k, "echoing the prompt") : 0;
    }
    if (!chat && !strcmp(k, "suffix")) {
        if (!cJSON_IsString(v))
            return bad_type(e, k, v, "a string");
        return v->valuestring[0] ? unsupported(e, k, "a suffix (insertion)") : 0;
    }
    if (chat && !strcmp(k, "response_format")) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
        if (!cJSON_IsObject(v) || !cJSON_IsString(t))
            return bad_type(e, k, v, "an object with a 'type'");
        return strcmp(t->valuestring, "text") ? unsupported(e, k, "a response format other than text") : 0;
    }
    if (chat && !strcmp(k, "tools")) {
        if (!cJSON_IsArray(v))
            return bad_type(e, k, v, "an array");
        return v->child ? unsupported(e, k, "calling tools") : 0;
    }
    if (chat && !strcmp(k, "tool_choice")) {
        if (cJSON_IsString(v) && (!strcmp(v->valuestring, "none") || !strcmp(v->valuestring, "auto")))
            return 0;
        return unsupported(e, k, "requiring a tool call");
    }
    if (chat && !strcmp(k, "parallel_tool_calls"))
        return get_bool(v, k, &b, e);
    /* Accepted, without effect on the output. */
    if (!strcmp(k, "cache_prompt") || !strcmp(k, "store"))
        return get_bool(v, k, &b, e);
    if (!strcmp(k, "user") || !strcmp(k, "service_tier"))
        return cJSON_IsString(v) ? 0 : bad_type(e, k, v, "a string");
    SL_ASSERT(!strcmp(k, "metadata")); /* known() lists nothing else */
    return cJSON_IsObject(v) ? 0 : bad_type(e, k, v, "an object");
}

int sl_oai_parse(sl_oai_kind kind, const char *body, size_t len, sl_oai_request *r, sl_oai_error *e)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
    sl_sampler_params_default(&r->sp);
    const char *end = NULL;
    r->root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!r->root) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_json", NULL,
                         "We could not parse the JSON body of your request: invalid JSON at byte %zu.",
                         end && end >= body ? (size_t)(end - body) : (size_t)0);
        return -1;
    }
    /* Only white space may follow the value. */
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_json", NULL,
                             "We could not parse the JSON body of your request: trailing data at byte %zu.",
                             (size_t)(p - body));
            goto fail;
        }
    if (!cJSON_IsObject(r->root)) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_type", NULL,
                         "The request body must be a JSON object, not %s.", json_type(r->root));
        goto fail;
    }
    bool have_main = false;
    const cJSON *v;
    cJSON_ArrayForEach(v, r->root)
    {
        if (field(kind, v, r, &have_main, e))
            goto fail;
    }
    if (!have_main) {
        const char *name = kind == SL_OAI_CHAT ? "messages" : "prompt";
        sl_oai_error_set(e, BAD, "invalid_request_error", "missing_required_parameter", name,
                         "Missing required parameter: '%s'.", name);
        goto fail;
    }
    if (r->include_usage && !r->stream) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_value", "stream_options",
                         "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
        goto fail;
    }
    return 0;
fail:
    sl_oai_request_free(r);
    return -1;
}

void sl_oai_request_free(sl_oai_request *r)
{
    cJSON_Delete(r->root);
    cJSON_Delete(r->messages);
    free(r->prompt_ids);
    memset(r, 0, sizeof *r);
}

int sl_oai_members(const cJSON *obj, const char *const *names, size_t n, const cJSON **out, sl_oai_error *e)
{
    for (size_t i = 0; i < n; i++)
        out[i] = NULL;
    if (!cJSON_IsObject(obj)) {
        sl_oai_error_set(e, BAD, "invalid_request_error", "invalid_type", NULL,
                         "The request body must be a JSON object, not %s.", json_type(obj));
        return -1;
    }
    SL_ASSERT(n <= 64);
    uint64_t seen = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, obj)
    {
        size_t i = 0;
        while (i < n && strcmp(v->string, names[i]))
            i++;
        if (i == n) {
            sl_oai_error_set(e, BAD, "invalid_request_error", "unknown_parameter", v->string,
                             "Unrecognized request argument supplied: %.200s", v->string);
            return -1;
        }
        if (seen & (1ull << i)) {
            sl_oai_error_set(e, BAD, "invalid_request_error", "duplicate_parameter", v->string,
                             "The member '%.200s' is given twice.", v->string);
            return -1;
        }
        seen |= 1ull << i;
        out[i] = cJSON_IsNull(v) ? NULL : v;
    }
    return 0;
}

/* ---- responses ------------------------------------------------------------ */

static void head(sl_jbuf *b, sl_oai_kind kind, const char *id, long long created, const char *model, bool chunk)
{
    sl_jbuf_puts(b, "{\"id\":");
    sl_jbuf_cstr(b, id);
    sl_jbuf_puts(b, ",\"object\":");
    sl_jbuf_cstr(b, kind == SL_OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    sl_jbuf_printf(b, ",\"created\":%lld,\"model\":", created);
    sl_jbuf_cstr(b, model);
    sl_jbuf_puts(b, ",\"system_fingerprint\":\"sluice\"");
}

static void usage(sl_jbuf *b, const sl_oai_usage *u)
{
    sl_jbuf_printf(b, ",\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u}",
                   u->prompt_tokens, u->completion_tokens, u->prompt_tokens + u->completion_tokens);
}

/* llama.cpp's server reports these with every finished request. */
static void timings(sl_jbuf *b, const sl_oai_usage *u)
{
    double pn = u->prompt_tokens, gn = u->completion_tokens;
    sl_jbuf_printf(b, ",\"timings\":{\"prompt_n\":%u,\"prompt_ms\":", u->prompt_tokens);
    sl_jbuf_num(b, u->prompt_ms);
    sl_jbuf_puts(b, ",\"prompt_per_token_ms\":");
    sl_jbuf_num(b, pn > 0 ? u->prompt_ms / pn : 0);
    sl_jbuf_puts(b, ",\"prompt_per_second\":");
    sl_jbuf_num(b, u->prompt_ms > 0 ? pn * 1e3 / u->prompt_ms : 0);
    sl_jbuf_printf(b, ",\"predicted_n\":%u,\"predicted_ms\":", u->completion_tokens);
    sl_jbuf_num(b, u->predicted_ms);
    /* The first generated token comes with the prompt's pass; the time
     * after it is spent on the others. */
    sl_jbuf_puts(b, ",\"predicted_per_token_ms\":");
    sl_jbuf_num(b, gn > 1 ? u->predicted_ms / (gn - 1) : 0);
    sl_jbuf_puts(b, ",\"predicted_per_second\":");
    sl_jbuf_num(b, u->predicted_ms > 0 && gn > 1 ? (gn - 1) * 1e3 / u->predicted_ms : 0);
    sl_jbuf_puts(b, "}");
}

void sl_oai_response(sl_jbuf *b, sl_oai_kind kind, const char *id, long long created, const char *model,
                     const char *text, size_t len, const char *finish, const sl_oai_usage *u)
{
    head(b, kind, id, created, model, false);
    if (kind == SL_OAI_CHAT) {
        sl_jbuf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        sl_jbuf_str(b, text, len);
        sl_jbuf_puts(b, "},\"logprobs\":null,\"finish_reason\":");
    } else {
        sl_jbuf_puts(b, ",\"choices\":[{\"index\":0,\"text\":");
        sl_jbuf_str(b, text, len);
        sl_jbuf_puts(b, ",\"logprobs\":null,\"finish_reason\":");
    }
    sl_jbuf_cstr(b, finish);
    sl_jbuf_puts(b, "}]");
    usage(b, u);
    timings(b, u);
    sl_jbuf_puts(b, "}");
}

void sl_oai_chunk(sl_jbuf *b, sl_oai_kind kind, const char *id, long long created, const char *model, bool role,
                  const char *text, size_t len, const char *finish, const sl_oai_usage *u, bool usage_chunk)
{
    sl_jbuf_puts(b, "data: ");
    head(b, kind, id, created, model, true);
    if (usage_chunk) {
        sl_jbuf_puts(b, ",\"choices\":[]");
        usage(b, u);
        timings(b, u);
        sl_jbuf_puts(b, "}\n\n");
        return;
    }
    if (kind == SL_OAI_CHAT) {
        sl_jbuf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":");
        if (role)
            sl_jbuf_puts(b, "{\"role\":\"assistant\",\"content\":\"\"}");
        else if (finish)
            sl_jbuf_puts(b, "{}");
        else {
            sl_jbuf_puts(b, "{\"content\":");
            sl_jbuf_str(b, text, len);
            sl_jbuf_puts(b, "}");
        }
    } else {
        sl_jbuf_puts(b, ",\"choices\":[{\"index\":0,\"text\":");
        sl_jbuf_str(b, finish ? "" : text, finish ? 0 : len);
    }
    sl_jbuf_puts(b, ",\"logprobs\":null,\"finish_reason\":");
    sl_jbuf_cstr(b, finish);
    sl_jbuf_puts(b, "}]");
    if (finish && u)
        timings(b, u);
    sl_jbuf_puts(b, "}\n\n");
}

void sl_oai_done(sl_jbuf *b) { sl_jbuf_puts(b, "data: [DONE]\n\n"); }
