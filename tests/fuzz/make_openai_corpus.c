/* Writes a seed corpus for fuzz_openai: request bodies of
 * /v1/completions and /v1/chat/completions as clients send them, so that
 * the fuzzer starts from the members and values the reader knows.
 *
 * Usage: make_openai_corpus DIR   (DIR must exist; files are DIR/seed-NN.json) */
#include <stdio.h>
#include <string.h>

static const char *const k_seeds[] = {
    "{\"model\":\"m\",\"prompt\":\"Once upon a time\",\"max_tokens\":64,\"temperature\":0}",
    "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stop\":[\"\\n\",\"end\"],"
    "\"seed\":42,\"top_k\":40,\"top_p\":0.9,\"min_p\":0.05,\"repeat_penalty\":1.1,\"repeat_last_n\":64}",
    "{\"prompt\":[1,403,407],\"n\":1,\"logprobs\":null,\"echo\":false,\"suffix\":null,\"best_of\":1,"
    "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"n_predict\":-1,\"cache_prompt\":true,\"user\":\"u\"}",
    "{\"prompt\":[[5,6,7]],\"logit_bias\":{},\"stop\":\"s\"}",
    "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"Hi\"}],"
    "\"max_tokens\":16,\"temperature\":0.7}",
    "{\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]},"
    "{\"role\":\"assistant\",\"content\":null,\"name\":\"x\"}],\"max_completion_tokens\":5,\"tools\":[],"
    "\"tool_choice\":\"none\",\"response_format\":{\"type\":\"text\"},\"logprobs\":false,\"top_logprobs\":0,"
    "\"parallel_tool_calls\":false,\"store\":false,\"metadata\":{},\"service_tier\":\"auto\"}",
    "{\"content\":\"Hello world\",\"add_special\":true,\"parse_special\":false}",
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_openai_corpus DIR\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof k_seeds / sizeof k_seeds[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%02zu.json", argv[1], i);
        FILE *f = fopen(path, "wb");
        size_t len = strlen(k_seeds[i]);
        int ok = f && fwrite(k_seeds[i], 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = 0;
        if (!ok) {
            fprintf(stderr, "make_openai_corpus: cannot write %s\n", path);
            return 1;
        }
    }
    return 0;
}
