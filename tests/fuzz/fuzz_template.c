/* libFuzzer target for the chat-template interpreter (chat/template.h):
 * the input is Jinja source. When it parses, it is rendered with a fixed
 * small conversation (a system prompt, a tool call and its result, tools,
 * BOS/EOS texts) under small limits, so that a template that loops forever,
 * recurses without end or builds huge values fails with -SL_ERANGE within a
 * fraction of a second instead of hanging the fuzzer. Templates come from a
 * model file, so sluice must survive any of them.
 *
 * Checked, beyond the sanitizers: every failure is one of the documented
 * codes with *out NULL and a NUL-terminated message; every success gives a
 * NUL-terminated string within the output limit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/template.h"
#include "common/log.h"

#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_template: %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static const char k_vars[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Weather in Paris? \\u00e9\\ud83e\\udd99\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\","
    "  \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": [1, 2.5, true]}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"21C\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nok\\n</think>\\n\\nWarm.\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather\","
    "  \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}},"
    "  \"required\": [\"city\"]}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

static cJSON *g_vars;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sl_log_set_level(SL_LOG_OFF);
    g_vars = cJSON_Parse(k_vars);
    REQUIRE(g_vars != NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_template *t = NULL;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = sl_template_parse((const char *)data, size, &t, err, sizeof err);
    REQUIRE(memchr(err, 0, sizeof err) != NULL);
    if (rc) {
        REQUIRE(t == NULL);
        REQUIRE(rc == -SL_EFORMAT || rc == -SL_EUNSUPPORTED || rc == -SL_ERANGE || rc == -SL_ENOMEM);
        return 0;
    }
    const sl_template_limits lim = {.max_steps = 200000, .max_output = 1 << 20, .max_memory = 32 << 20,
                                    .max_depth = 200};
    sl_template_set_limits(t, &lim);
    char *out = (char *)1;
    size_t len = 0;
    memset(err, 'x', sizeof err);
    rc = sl_template_render(t, g_vars, &out, &len, err, sizeof err);
    REQUIRE(memchr(err, 0, sizeof err) != NULL);
    if (rc) {
        REQUIRE(out == NULL);
        REQUIRE(rc == -SL_EINVAL || rc == -SL_EFORMAT || rc == -SL_EUNSUPPORTED || rc == -SL_ERANGE ||
                rc == -SL_ENOMEM);
    } else {
        REQUIRE(out != NULL && out[len] == 0 && len <= lim.max_output);
    }
    free(out == (char *)1 ? NULL : out);
    sl_template_free(t);
    return 0;
}
