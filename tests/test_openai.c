/* OpenAI request checking and response writing (gateway/openai.h,
 * gateway/jbuf.h): every kind of bad request gets an error in OpenAI's
 * shape naming the field; good ones are read right; responses and stream
 * chunks are valid JSON of the right shape, whatever bytes the text has. */
#include <string.h>

#include "common/log.h"
#include "gateway/openai.h"
#include "tests/testutil.h"

static int parse(sl_oai_kind kind, const char *body, sl_oai_request *r, sl_oai_error *e)
{
    memset(e, 0, sizeof *e);
    return sl_oai_parse(kind, body, strlen(body), r, e);
}

/* Expects a 400 whose code and param are as given (param NULL: none). */
static void bad(sl_oai_kind kind, const char *body, const char *code, const char *param)
{
    sl_oai_request r;
    sl_oai_error e;
    int rc = parse(kind, body, &r, &e);
    CHECK(rc == -1 && e.status == 400, "%s: refused with 400 (rc %d, status %d)", body, rc, e.status);
    CHECK(e.code && !strcmp(e.code, code), "%s: code %s, want %s", body, e.code ? e.code : "(null)", code);
    CHECK(!strcmp(e.param, param ? param : ""), "%s: param '%s', want '%s'", body, e.param, param ? param : "");
    CHECK(e.message[0] && !strcmp(e.type, "invalid_request_error"), "%s: a message", body);
    /* The error body is OpenAI's shape. */
    sl_jbuf b = {0};
    sl_oai_error_json(&b, &e);
    cJSON *j = cJSON_Parse(b.ptr);
    const cJSON *err = cJSON_GetObjectItem(j, "error");
    CHECK(cJSON_IsString(cJSON_GetObjectItem(err, "message")) && cJSON_IsString(cJSON_GetObjectItem(err, "type")) &&
              cJSON_GetObjectItem(err, "param") && cJSON_IsString(cJSON_GetObjectItem(err, "code")),
          "%s: error JSON %s", body, b.ptr);
    cJSON_Delete(j);
    sl_jbuf_free(&b);
}

static void test_bad_requests(void)
{
    const sl_oai_kind C = SL_OAI_COMPLETION, H = SL_OAI_CHAT;
    bad(C, "{\"prompt\": \"x\"", "invalid_json", NULL);
    bad(C, "{\"prompt\": \"x\"} {}", "invalid_json", NULL);
    bad(C, "", "invalid_json", NULL);
    bad(C, "[1, 2]", "invalid_type", NULL);
    bad(C, "{}", "missing_required_parameter", "prompt");
    bad(H, "{\"model\": \"m\"}", "missing_required_parameter", "messages");
    bad(C, "{\"prompt\": \"x\", \"bogus\": 1}", "unknown_parameter", "bogus");
    bad(C, "{\"prompt\": \"x\", \"bogus\": null}", "unknown_parameter", "bogus");
    bad(C, "{\"prompt\": \"x\", \"messages\": []}", "unknown_parameter", "messages");
    bad(C, "{\"prompt\": [1, 2], \"prompt\": \"x\"}", "duplicate_parameter", "prompt");
    bad(C, "{\"prompt\": \"x\", \"stop\": \"a\", \"stop\": \"b\"}", "duplicate_parameter", "stop");
    bad(H, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"prompt\": \"x\"}", "unknown_parameter",
        "prompt");
    bad(C, "{\"prompt\": \"x\", \"max_tokens\": \"5\"}", "invalid_type", "max_tokens");
    bad(C, "{\"prompt\": \"x\", \"max_tokens\": 2.5}", "invalid_type", "max_tokens");
    bad(C, "{\"prompt\": \"x\", \"max_tokens\": -1}", "invalid_value", "max_tokens");
    bad(C, "{\"prompt\": \"x\", \"temperature\": \"hot\"}", "invalid_type", "temperature");
    bad(C, "{\"prompt\": \"x\", \"temperature\": -1}", "invalid_value", "temperature");
    bad(C, "{\"prompt\": \"x\", \"top_p\": 2}", "invalid_value", "top_p");
    bad(C, "{\"prompt\": \"x\", \"repeat_penalty\": 0}", "invalid_value", "repeat_penalty");
    bad(C, "{\"prompt\": \"x\", \"stream\": 1}", "invalid_type", "stream");
    bad(C, "{\"prompt\": \"x\", \"stop\": 5}", "invalid_type", "stop");
    bad(C, "{\"prompt\": \"x\", \"stop\": [\"a\", 5]}", "invalid_type", "stop");
    bad(C, "{\"prompt\": \"x\", \"stop\": \"\"}", "invalid_value", "stop");
    bad(C, "{\"prompt\": \"x\", \"seed\": -2}", "invalid_value", "seed");
    bad(C, "{\"prompt\": 5}", "invalid_type", "prompt");
    bad(C, "{\"prompt\": null}", "invalid_type", "prompt");
    bad(C, "{\"prompt\": []}", "invalid_type", "prompt");
    bad(C, "{\"prompt\": [\"a\", \"b\"]}", "unsupported_value", "prompt");
    bad(C, "{\"prompt\": [1, -2]}", "invalid_value", "prompt");
    bad(C, "{\"prompt\": [1, \"a\"]}", "invalid_type", "prompt");
    bad(C, "{\"prompt\": \"x\", \"n\": 2}", "unsupported_value", "n");
    bad(C, "{\"prompt\": \"x\", \"echo\": true}", "unsupported_value", "echo");
    bad(C, "{\"prompt\": \"x\", \"logprobs\": 2}", "unsupported_value", "logprobs");
    bad(C, "{\"prompt\": \"x\", \"stream_options\": {\"include_usage\": true}}", "invalid_value", "stream_options");
    bad(C, "{\"prompt\": \"x\", \"stream\": true, \"stream_options\": {\"x\": 1}}", "unknown_parameter",
        "stream_options");
    bad(H, "{\"messages\": \"hi\"}", "invalid_type", "messages");
    bad(H, "{\"messages\": []}", "empty_array", "messages");
    bad(H, "{\"messages\": [5]}", "invalid_type", "messages");
    bad(H, "{\"messages\": [{\"content\": \"x\"}]}", "invalid_type", "messages.role");
    bad(H, "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", "invalid_value", "messages.role");
    bad(H, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "invalid_type", "messages.content");
    bad(H, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "unsupported_value",
        "messages.content");
    bad(H, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{}]}", "unsupported_value",
        "tools");
    bad(H, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true}", "unsupported_value",
        "logprobs");
    bad(H, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": {\"type\": "
           "\"json_object\"}}",
        "unsupported_value", "response_format");
}

static void test_good_requests(void)
{
    sl_oai_request r;
    sl_oai_error e;
    int rc = parse(SL_OAI_COMPLETION,
                   "{\"model\": \"m\", \"prompt\": \"Once upon a time\", \"max_tokens\": 64, \"temperature\": 0,"
                   " \"top_p\": 0.5, \"top_k\": 7, \"min_p\": 0.1, \"repeat_penalty\": 1.1, \"seed\": 42,"
                   " \"stop\": [\"\\n\", \"end\"], \"stream\": true, \"stream_options\": {\"include_usage\": true},"
                   " \"n\": 1, \"logprobs\": null, \"user\": \"u\", \"cache_prompt\": true, \"presence_penalty\": 0.5}",
                   &r, &e);
    CHECK(rc == 0, "a full request: %s", e.message);
    if (rc == 0) {
        CHECK(!strcmp(r.model, "m") && !strcmp(r.prompt, "Once upon a time") && r.prompt_len == 16, "model, prompt");
        CHECK(r.max_tokens == 64 && r.sp.temperature == 0 && r.sp.top_p == 0.5f && r.sp.top_k == 7, "numbers");
        CHECK(r.sp.min_p == 0.1f && r.sp.repeat_penalty == 1.1f && r.sp.presence_penalty == 0.5f, "penalties");
        CHECK(r.seed_given && r.sp.seed == 42, "seed");
        CHECK(r.n_stop == 2 && !strcmp(r.stop[0], "\n") && r.stop_len[1] == 3, "stop");
        CHECK(r.stream && r.include_usage, "stream");
        sl_oai_request_free(&r);
    }
    /* Defaults: llama.cpp's sampling, no max_tokens, no seed. */
    rc = parse(SL_OAI_COMPLETION, "{\"prompt\": \"x\", \"model\": null, \"seed\": -1}", &r, &e);
    CHECK(rc == 0 && !r.model && r.max_tokens == -1 && !r.seed_given && r.sp.temperature == 0.8f &&
              r.sp.top_k == 40 && !r.stream,
          "defaults");
    sl_oai_request_free(&r);
    /* Prompts as token ids. */
    rc = parse(SL_OAI_COMPLETION, "{\"prompt\": [1, 2, 3]}", &r, &e);
    CHECK(rc == 0 && !r.prompt && r.n_prompt_ids == 3 && r.prompt_ids[2] == 3, "ids");
    sl_oai_request_free(&r);
    rc = parse(SL_OAI_COMPLETION, "{\"prompt\": [[5, 6]]}", &r, &e);
    CHECK(rc == 0 && r.n_prompt_ids == 2 && r.prompt_ids[0] == 5, "one list of ids");
    sl_oai_request_free(&r);
    rc = parse(SL_OAI_COMPLETION, "{\"prompt\": [\"only\"], \"stop\": \"x\"}", &r, &e);
    CHECK(rc == 0 && !strcmp(r.prompt, "only") && r.n_stop == 1, "one prompt in a list, one stop string");
    sl_oai_request_free(&r);
    /* Chat: content parts joined, developer read as system, other members kept. */
    rc = parse(SL_OAI_CHAT,
               "{\"messages\": [{\"role\": \"developer\", \"content\": \"be brief\"}, {\"role\": \"user\", "
               "\"name\": \"ann\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"text\", "
               "\"text\": \"b\"}]}, {\"role\": \"assistant\", \"content\": null}], \"max_completion_tokens\": 9,"
               " \"tools\": [], \"tool_choice\": \"none\"}",
               &r, &e);
    CHECK(rc == 0, "chat: %s", e.message);
    if (rc == 0) {
        const cJSON *m0 = cJSON_GetArrayItem(r.messages, 0), *m1 = cJSON_GetArrayItem(r.messages, 1),
                    *m2 = cJSON_GetArrayItem(r.messages, 2);
        CHECK(!strcmp(cJSON_GetObjectItem(m0, "role")->valuestring, "system"), "developer -> system");
        CHECK(!strcmp(cJSON_GetObjectItem(m1, "content")->valuestring, "ab"), "parts joined");
        CHECK(!strcmp(cJSON_GetObjectItem(m1, "name")->valuestring, "ann"), "name kept");
        CHECK(!strcmp(cJSON_GetObjectItem(m2, "content")->valuestring, ""), "null content is empty");
        CHECK(r.max_tokens == 9, "max_completion_tokens");
        sl_oai_request_free(&r);
    }
}

static void test_responses(void)
{
    sl_oai_usage u = {5, 3, 12.5, 20};
    /* Invalid UTF-8, a NUL, quotes and control characters stay valid JSON. */
    const char text[] = "a\"b\\c\n\x01\xff\xc3\xa9\x00z";
    const size_t len = sizeof text - 1;
    sl_jbuf b = {0};
    sl_oai_response(&b, SL_OAI_COMPLETION, "cmpl-1", 1700000000, "stories", text, len, "length", &u);
    cJSON *j = cJSON_Parse(b.ptr);
    CHECK(j != NULL, "completion JSON parses: %s", b.ptr);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *t = cJSON_GetObjectItem(c0, "text");
    /* cJSON stops a string at \u0000: compare what comes before it. */
    CHECK(cJSON_IsString(t) && !strcmp(t->valuestring, "a\"b\\c\n\x01\xef\xbf\xbd\xc3\xa9"), "text escaped: %s",
          b.ptr);
    CHECK(strstr(b.ptr, "\\u0000z") != NULL, "NUL escaped");
    CHECK(!strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion") &&
              !strcmp(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "length"),
          "object, finish_reason");
    const cJSON *us = cJSON_GetObjectItem(j, "usage");
    CHECK(cJSON_GetObjectItem(us, "prompt_tokens")->valueint == 5 &&
              cJSON_GetObjectItem(us, "completion_tokens")->valueint == 3 &&
              cJSON_GetObjectItem(us, "total_tokens")->valueint == 8,
          "usage");
    const cJSON *tm = cJSON_GetObjectItem(j, "timings");
    CHECK(cJSON_GetObjectItem(tm, "prompt_n")->valueint == 5 && cJSON_GetObjectItem(tm, "predicted_n")->valueint == 3 &&
              cJSON_GetObjectItem(tm, "prompt_ms")->valuedouble == 12.5 &&
              cJSON_GetObjectItem(tm, "predicted_per_second")->valuedouble == 100,
          "timings");
    cJSON_Delete(j);
    sl_jbuf_free(&b);

    sl_oai_response(&b, SL_OAI_CHAT, "chatcmpl-1", 1, "m", "hi", 2, "stop", &u);
    j = cJSON_Parse(b.ptr);
    c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItem(c0, "message");
    CHECK(!strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion") &&
              !strcmp(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant") &&
              !strcmp(cJSON_GetObjectItem(msg, "content")->valuestring, "hi"),
          "chat completion: %s", b.ptr);
    cJSON_Delete(j);
    sl_jbuf_free(&b);

    /* A stream: role, content, finish with timings, usage, [DONE]. */
    sl_oai_chunk(&b, SL_OAI_CHAT, "c", 1, "m", true, NULL, 0, NULL, NULL, false);
    sl_oai_chunk(&b, SL_OAI_CHAT, "c", 1, "m", false, "He", 2, NULL, NULL, false);
    sl_oai_chunk(&b, SL_OAI_CHAT, "c", 1, "m", false, NULL, 0, "stop", &u, false);
    sl_oai_chunk(&b, SL_OAI_CHAT, "c", 1, "m", false, NULL, 0, NULL, &u, true);
    sl_oai_done(&b);
    char *p = b.ptr;
    for (int i = 0; i < 4; i++) {
        CHECK(!strncmp(p, "data: ", 6), "event %d starts with data: ", i);
        char *end = strstr(p, "\n\n");
        if (!end)
            break;
        *end = 0;
        j = cJSON_Parse(p + 6);
        CHECK(j && !strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion.chunk"), "chunk %d: %s",
              i, p);
        const cJSON *ch = cJSON_GetObjectItem(j, "choices");
        const cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(ch, 0), "delta");
        if (i == 0)
            CHECK(!strcmp(cJSON_GetObjectItem(d, "role")->valuestring, "assistant"), "role first");
        if (i == 1)
            CHECK(!strcmp(cJSON_GetObjectItem(d, "content")->valuestring, "He"), "content");
        if (i == 2)
            CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(ch, 0), "finish_reason")->valuestring, "stop") &&
                      cJSON_GetObjectItem(j, "timings"),
                  "finish");
        if (i == 3)
            CHECK(cJSON_GetArraySize(ch) == 0 && cJSON_GetObjectItem(j, "usage"), "usage chunk");
        cJSON_Delete(j);
        p = end + 2;
    }
    CHECK(!strcmp(p, "data: [DONE]\n\n"), "[DONE] last: %s", p);
    sl_jbuf_free(&b);
}

static void test_utf8(void)
{
    CHECK(sl_utf8_complete("ab\xc3", 3) == 2, "a lead byte at the end is held");
    CHECK(sl_utf8_complete("ab\xe2\x82", 4) == 2, "two of three bytes are held");
    CHECK(sl_utf8_complete("ab\xe2\x82\xac", 5) == 5, "a whole character is not");
    CHECK(sl_utf8_complete("ab\xff", 3) == 3, "an invalid byte is not held");
}

int main(void)
{
    sl_log_set_level(SL_LOG_OFF);
    test_bad_requests();
    test_good_requests();
    test_responses();
    test_utf8();
    return sl_test_finish();
}
