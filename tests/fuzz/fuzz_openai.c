/* libFuzzer target for the HTTP gateway's request reader (gateway/openai.h):
 * each input is a request body for /v1/completions and for
 * /v1/chat/completions, and the member list of /tokenize. For each:
 *  - sl_oai_parse either accepts it or refuses it with an HTTP status of
 *    400 (or 500 for memory) and a message;
 *  - an accepted request's strings, stop strings and token ids are read end
 *    to end (AddressSanitizer checks them), its sampling parameters pass the
 *    sampler's check, and its values are in the documented ranges;
 *  - the error body, and a response and stream chunk carrying the input
 *    itself as text (any bytes), parse as JSON.
 * Seeds come from make_openai_corpus; tests/fuzz/run.sh drives it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/openai.h"
#include "proto/msg.h"

#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_openai: %s:%d: %s\n", __FILE__, __LINE__, #cond);                          \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static volatile uint64_t g_sink;

static void touch(const char *s, size_t len)
{
    uint64_t h = 0;
    for (size_t i = 0; i < len; i++)
        h = h * 31 + (unsigned char)s[i];
    g_sink += h;
}

static void json_ok(sl_jbuf *b)
{
    REQUIRE(sl_jbuf_ok(b));
    cJSON *j = cJSON_Parse(b->ptr);
    REQUIRE(j != NULL);
    cJSON_Delete(j);
    sl_jbuf_free(b);
}

static void one(sl_oai_kind kind, const char *data, size_t size)
{
    sl_oai_request r;
    sl_oai_error e;
    memset(&e, 0, sizeof e);
    if (sl_oai_parse(kind, data, size, &r, &e)) {
        REQUIRE((e.status == 400 || e.status == 500) && e.message[0] && e.type);
        sl_jbuf b = {0};
        sl_oai_error_json(&b, &e);
        json_ok(&b);
        return;
    }
    REQUIRE(r.root != NULL);
    if (r.model)
        touch(r.model, strlen(r.model));
    if (kind == SL_OAI_CHAT) {
        REQUIRE(cJSON_IsArray(r.messages) && cJSON_GetArraySize(r.messages) > 0);
        const cJSON *m;
        cJSON_ArrayForEach(m, r.messages)
        {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
            REQUIRE(cJSON_IsString(c));
            touch(c->valuestring, strlen(c->valuestring));
        }
    } else {
        REQUIRE(!r.prompt != !r.prompt_ids);
        if (r.prompt)
            touch(r.prompt, r.prompt_len);
        for (uint32_t i = 0; i < r.n_prompt_ids; i++)
            REQUIRE(r.prompt_ids[i] >= 0);
    }
    REQUIRE(r.n_stop <= SL_STOP_MAX);
    for (size_t i = 0; i < r.n_stop; i++) {
        REQUIRE(r.stop_len[i] >= 1 && r.stop_len[i] <= SL_STOP_MAX_LEN);
        touch(r.stop[i], r.stop_len[i]);
    }
    REQUIRE(r.max_tokens >= -1 && r.max_tokens <= (int64_t)SL_PROTO_MAX_TOKENS);
    REQUIRE(sl_sampler_params_check(&r.sp) == 0);
    REQUIRE(!r.include_usage || r.stream);
    sl_oai_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        sl_log_set_level(SL_LOG_OFF);
        quiet = true;
    }
    const char *s = (const char *)data;
    one(SL_OAI_COMPLETION, s, size);
    one(SL_OAI_CHAT, s, size);
    static const char *const names[] = {"content", "add_special", "parse_special"};
    const cJSON *v[3];
    cJSON *root = cJSON_ParseWithLength(s, size);
    sl_oai_error e;
    if (root && sl_oai_members(root, names, 3, v, &e) == 0)
        for (int i = 0; i < 3; i++)
            REQUIRE(!v[i] || !strcmp(v[i]->string, names[i]));
    cJSON_Delete(root);
    /* Any bytes as generated text: still valid JSON. */
    sl_oai_usage u = {1, 2, 3, 4};
    sl_jbuf b = {0};
    sl_oai_response(&b, SL_OAI_CHAT, "id", 1, "m", s, size, "stop", &u);
    json_ok(&b);
    sl_oai_chunk(&b, SL_OAI_COMPLETION, "id", 1, "m", false, s, size, NULL, NULL, false);
    REQUIRE(b.len > 8 && !strncmp(b.ptr, "data: ", 6) && !strcmp(b.ptr + b.len - 2, "\n\n"));
    b.ptr[b.len - 2] = 0;
    cJSON *j = cJSON_Parse(b.ptr + 6);
    REQUIRE(j != NULL);
    cJSON_Delete(j);
    sl_jbuf_free(&b);
    return 0;
}
