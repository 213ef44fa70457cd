/* Tokenizer tests: every reference vocabulary with its inputs and expected
 * ids, the prompts and decoded continuations of the model references, the
 * streaming detokenizer, special-token parsing, buffer sizing, long inputs,
 * and refusal of malformed metadata built in memory. */
#include "common/log.h"
#include "model/detok.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "model/pretok.h"
#include "model/tokenizer.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

/* Prints text with non-printable bytes escaped, for failure reports. */
static void print_escaped(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n && i < 300; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

static void print_ids(FILE *f, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, " %d", ids[i]);
}

static int open_tokenizer(const char *rel, sl_gguf **g, sl_tokenizer **tk)
{
    char path[1024];
    sl_testdata_path(path, sizeof path, rel);
    *tk = NULL;
    int rc = sl_gguf_open(path, g);
    if (rc < 0) {
        fprintf(stderr, "cannot open %s: %s\n", path, sl_strerror(rc));
        return rc;
    }
    rc = sl_tokenizer_new(*g, tk);
    if (rc < 0)
        fprintf(stderr, "cannot build the tokenizer of %s: %s\n", path, sl_strerror(rc));
    return rc;
}

/* Encodes into a growing vector; returns the count or a negative error. */
static int encode(const sl_tokenizer *tk, const char *s, size_t n, unsigned flags, int32_t **ids)
{
    int cnt = sl_tokenizer_encode(tk, s, n, flags, NULL, 0);
    if (cnt < 0)
        return cnt;
    *ids = malloc(((size_t)cnt + 1) * sizeof **ids);
    int again = sl_tokenizer_encode(tk, s, n, flags, *ids, (size_t)cnt);
    if (again != cnt) {
        fprintf(stderr, "encode gave %d tokens, then %d\n", cnt, again);
        return -SL_EINVAL;
    }
    return cnt;
}

/* ---------------------------------------------------------------------------
 * Reference vocabularies
 * ------------------------------------------------------------------------- */

static const char *const vocab_names[] = {"llama-spm", "phi-3",     "gpt-2", "deepseek-llm", "deepseek-coder",
                                          "falcon",    "starcoder", "mpt",   "refact"};

static void test_vocab(const char *name)
{
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", name);
    sl_gguf *g = NULL;
    sl_tokenizer *tk = NULL;
    int rc = open_tokenizer(rel, &g, &tk);
    CHECK(rc == 0, "%s: tokenizer failed to load (%d)", name, rc);
    if (rc < 0) {
        sl_gguf_close(g);
        return;
    }
    size_t inp_len = 0, out_len = 0;
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf.inp", name);
    char *inp = read_file(sl_testdata_path(path, sizeof path, rel), &inp_len);
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf.out", name);
    char *out = read_file(sl_testdata_path(path, sizeof path, rel), &out_len);
    CHECK(inp && out, "%s: cannot read .inp/.out", name);
    if (!inp || !out)
        goto done;

    /* Each input is followed by "\n__ggml_vocab_test__\n"; each output is
     * one line of ids, each written with a leading space. */
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int n_cases = 0, n_pass = 0;
    char *ip = inp, *op = out;
    for (;;) {
        char *end = strstr(ip, sep);
        if (!end)
            break;
        char *eol = strchr(op, '\n');
        CHECK(eol != NULL, "%s: .out has fewer lines than .inp has inputs", name);
        if (!eol)
            break;
        *eol = 0;
        int32_t want[1024];
        size_t n_want = 0;
        for (char *q = op; *q && n_want < 1024;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q)
                break;
            want[n_want++] = (int32_t)v;
            q = e;
        }
        int32_t *got = NULL;
        int n_got = encode(tk, ip, (size_t)(end - ip), 0, &got);
        bool ok = n_got >= 0 && (size_t)n_got == n_want && memcmp(got, want, n_want * sizeof *want) == 0;
        n_cases++;
        n_pass += ok;
        CHECK(ok, "%s: case %d differs", name, n_cases - 1);
        if (!ok) {
            fprintf(stderr, "  input: '");
            print_escaped(stderr, ip, (size_t)(end - ip));
            fprintf(stderr, "'\n  want:");
            print_ids(stderr, want, n_want);
            fprintf(stderr, "\n  got: ");
            if (n_got >= 0)
                print_ids(stderr, got, (size_t)n_got);
            else
                fprintf(stderr, " error %d", n_got);
            fputc('\n', stderr);
        }
        free(got);
        ip = end + sizeof sep - 1;
        op = eol + 1;
    }
    CHECK(n_cases > 40, "%s: only %d cases found", name, n_cases);
    printf("vocab %-15s %d/%d inputs reproduced\n", name, n_pass, n_cases);
done:
    free(inp);
    free(out);
    sl_tokenizer_free(tk);
    sl_gguf_close(g);
}

/* ---------------------------------------------------------------------------
 * Model references: prompts and decoded continuations
 * ------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t unhex(const char *h, char *out)
{
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

static void test_ref(const char *file)
{
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "refs/%s", file);
    cJSON *j = sl_test_load_json(sl_testdata_path(path, sizeof path, rel));
    CHECK(j != NULL, "%s: cannot load", file);
    if (!j)
        return;
    const cJSON *model = cJSON_GetObjectItem(j, "model");
    snprintf(rel, sizeof rel, "models/%s", cJSON_GetStringValue(model));
    sl_gguf *g = NULL;
    sl_tokenizer *tk = NULL;
    int rc = open_tokenizer(rel, &g, &tk);
    CHECK(rc == 0, "%s: tokenizer failed to load", file);
    int n_cases = 0, n_prompt_ok = 0, n_text_ok = 0;
    const cJSON *cases = rc == 0 ? cJSON_GetObjectItem(j, "cases") : NULL, *c;
    cJSON_ArrayForEach(c, cases)
    {
        n_cases++;
        const char *prompt = cJSON_GetStringValue(cJSON_GetObjectItem(c, "prompt"));
        const cJSON *pt = cJSON_GetObjectItem(c, "prompt_tokens");
        int32_t *got = NULL;
        int n_got = encode(tk, prompt, strlen(prompt), SL_TOK_ADD_SPECIAL, &got);
        bool ok = n_got == cJSON_GetArraySize(pt);
        for (int i = 0; ok && i < n_got; i++)
            ok = got[i] == (int32_t)cJSON_GetArrayItem(pt, i)->valuedouble;
        CHECK(ok, "%s: prompt '%s' tokenized differently", file, prompt);
        if (!ok) {
            fprintf(stderr, "  got:");
            if (n_got > 0)
                print_ids(stderr, got, (size_t)n_got);
            fputc('\n', stderr);
        }
        n_prompt_ok += ok;
        free(got);

        /* The continuation, streamed token by token. */
        const char *hex = cJSON_GetStringValue(cJSON_GetObjectItem(c, "greedy_text_hex"));
        char *want = malloc(strlen(hex) / 2 + 1);
        size_t n_want = unhex(hex, want);
        const cJSON *steps = cJSON_GetObjectItem(c, "steps"), *s;
        size_t cap = SL_DETOK_OUT_MAX(tk);
        char *text = malloc(cap * ((size_t)cJSON_GetArraySize(steps) + 1));
        char *chunk = malloc(cap);
        size_t n_text = 0;
        sl_detok d;
        sl_detok_init(&d, 0);
        bool stream_ok = true;
        cJSON_ArrayForEach(s, steps)
        {
            int32_t id = (int32_t)cJSON_GetObjectItem(s, "token")->valuedouble;
            int k = sl_detok_push(&d, tk, id, chunk, cap);
            stream_ok &= k >= 0;
            if (k > 0) {
                memcpy(text + n_text, chunk, (size_t)k);
                n_text += (size_t)k;
            }
        }
        int k = sl_detok_flush(&d, chunk, cap);
        if (k > 0) {
            memcpy(text + n_text, chunk, (size_t)k);
            n_text += (size_t)k;
        }
        ok = stream_ok && n_text == n_want && memcmp(text, want, n_want) == 0;
        CHECK(ok, "%s: continuation of '%s' decodes differently", file, prompt);
        if (!ok) {
            fprintf(stderr, "  want: '");
            print_escaped(stderr, want, n_want);
            fprintf(stderr, "'\n  got:  '");
            print_escaped(stderr, text, n_text);
            fprintf(stderr, "'\n");
        }
        n_text_ok += ok;
        free(want);
        free(text);
        free(chunk);
    }
    printf("ref %-28s prompts %d/%d, continuations %d/%d\n", file, n_prompt_ok, n_cases, n_text_ok, n_cases);
    sl_tokenizer_free(tk);
    sl_gguf_close(g);
    cJSON_Delete(j);
}

static void test_refs(void)
{
    char path[1024];
    DIR *dir = opendir(sl_testdata_path(path, sizeof path, "refs"));
    CHECK(dir != NULL, "cannot list %s", path);
    if (!dir)
        return;
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < 256) {
        size_t l = strlen(e->d_name);
        if (l > 9 && strcmp(e->d_name + l - 9, ".ref.json") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, n, sizeof *names, cmp_str);
    CHECK(n >= 3, "only %zu reference files", n);
    for (size_t i = 0; i < n; i++) {
        test_ref(names[i]);
        free(names[i]);
    }
}

/* ---------------------------------------------------------------------------
 * Behaviour on the real vocabularies
 * ------------------------------------------------------------------------- */

static void test_spm_behaviour(void)
{
    sl_gguf *g;
    sl_tokenizer *tk;
    if (open_tokenizer("tokenizer/ggml-vocab-llama-spm.gguf", &g, &tk) < 0) {
        CHECK(0, "llama-spm vocabulary");
        sl_gguf_close(g);
        return;
    }
    CHECK(sl_tokenizer_kind_get(tk) == SL_TOKENIZER_SPM, "kind");
    CHECK(sl_tokenizer_n_vocab(tk) == 32000, "n_vocab %d", sl_tokenizer_n_vocab(tk));
    CHECK(sl_tokenizer_bos(tk) == 1 && sl_tokenizer_eos(tk) == 2, "bos/eos");
    CHECK(sl_tokenizer_add_bos(tk) && !sl_tokenizer_add_eos(tk), "add_bos/add_eos");
    CHECK(sl_tokenizer_is_eog(tk, 2) && !sl_tokenizer_is_eog(tk, 1) && !sl_tokenizer_is_eog(tk, -5), "eog");
    CHECK(sl_tokenizer_token_type(tk, 0) == SL_TOKEN_UNKNOWN &&
              sl_tokenizer_token_type(tk, 3) == SL_TOKEN_BYTE,
          "types");

    /* Special tokens: recognised only with PARSE_SPECIAL; a space prefix
     * follows each of them. */
    const char *s = "<s>Hello</s>";
    int32_t *a = NULL, *b = NULL, *h = NULL;
    int na = encode(tk, s, strlen(s), SL_TOK_PARSE_SPECIAL, &a);
    int nb = encode(tk, s, strlen(s), 0, &b);
    int nh = encode(tk, "Hello", 5, 0, &h);
    CHECK(na == nh + 2 && a[0] == 1 && a[na - 1] == 2 && memcmp(a + 1, h, (size_t)nh * sizeof *h) == 0,
          "parse_special: %d tokens", na);
    CHECK(nb > 3 && b[0] != 1, "without parse_special <s> is text (%d tokens, first %d)", nb,
          nb > 0 ? b[0] : -1);
    free(a);
    free(b);

    /* add_special puts BOS first. */
    int nc = encode(tk, "Hello", 5, SL_TOK_ADD_SPECIAL, &a);
    CHECK(nc == nh + 1 && a[0] == 1 && memcmp(a + 1, h, (size_t)nh * sizeof *h) == 0, "add_special");
    /* Decoding: the leading space of the first piece goes; after a BOS it
     * stays (the reference's rule); RENDER_SPECIAL shows <s>. */
    char buf[256];
    long n = sl_tokenizer_decode(tk, h, (size_t)nh, 0, buf, sizeof buf);
    CHECK(n == 5 && memcmp(buf, "Hello", 5) == 0, "decode '%.*s'", (int)(n > 0 ? n : 0), buf);
    n = sl_tokenizer_decode(tk, a, (size_t)nc, 0, buf, sizeof buf);
    CHECK(n == 6 && memcmp(buf, " Hello", 6) == 0, "decode after BOS '%.*s'", (int)(n > 0 ? n : 0), buf);
    n = sl_tokenizer_decode(tk, a, (size_t)nc, SL_TOK_RENDER_SPECIAL, buf, sizeof buf);
    CHECK(n == 9 && memcmp(buf, "<s> Hello", 9) == 0, "decode special '%.*s'", (int)(n > 0 ? n : 0), buf);
    n = sl_tokenizer_decode(tk, a, (size_t)nc, 0, buf, 3);
    CHECK(n == 6 && memcmp(buf, " He", 3) == 0, "decode into a short buffer: %ld", n);
    free(a);

    /* Buffer sizing: the count comes back even when it does not fit. */
    int32_t two[2] = {-7, -7};
    int full = sl_tokenizer_encode(tk, "Hello world, again", 18, 0, two, 2);
    CHECK(full > 2 && two[0] >= 0 && two[1] >= 0, "short buffer: %d", full);
    CHECK(sl_tokenizer_encode(tk, "x", 1, 0, NULL, 4) == -SL_EINVAL, "NULL buffer with cap");
    free(h);

    /* Round trip through byte fallback, and the stream holding back a
     * character cut across byte tokens. */
    const char *t = "caf\xC3\xA9 \xF0\x9F\xA6\x99 \xE6\x88\x91";
    int nt = encode(tk, t, strlen(t), 0, &a);
    n = sl_tokenizer_decode(tk, a, (size_t)nt, 0, buf, sizeof buf);
    CHECK(n == (long)strlen(t) && memcmp(buf, t, strlen(t)) == 0, "round trip '%.*s'", (int)(n > 0 ? n : 0),
          buf);
    free(a);
    int32_t euro[3] = {3 + 0xE2, 3 + 0x82, 3 + 0xAC};
    sl_detok d;
    sl_detok_init(&d, 0);
    char out[64];
    int k0 = sl_detok_push(&d, tk, euro[0], out, sizeof out);
    int k1 = sl_detok_push(&d, tk, euro[1], out, sizeof out);
    int k2 = sl_detok_push(&d, tk, euro[2], out, sizeof out);
    CHECK(k0 == 0 && k1 == 0 && k2 == 3 && memcmp(out, "\xE2\x82\xAC", 3) == 0, "stream %d %d %d", k0, k1,
          k2);
    k0 = sl_detok_push(&d, tk, euro[0], out, sizeof out);
    k1 = sl_detok_push(&d, tk, 3 + 'A', out, sizeof out);
    CHECK(k0 == 0 && k1 == 2 &&
              memcmp(out,
                     "\xE2"
                     "A",
                     2) == 0,
          "broken sequence released: %d", k1);
    k0 = sl_detok_push(&d, tk, euro[0], out, sizeof out);
    k1 = sl_detok_flush(&d, out, sizeof out);
    CHECK(k0 == 0 && k1 == 1 && (unsigned char)out[0] == 0xE2, "flush releases the tail");
    CHECK(sl_detok_push(&d, tk, 40000, out, sizeof out) == -SL_ERANGE, "bad id");
    CHECK(sl_detok_push(&d, tk, 1, out, sizeof out) == 0, "control token hidden");
    sl_detok_init(&d, SL_TOK_RENDER_SPECIAL);
    CHECK(sl_detok_push(&d, tk, 1, out, sizeof out) == 3, "control token rendered");
    CHECK(sl_detok_push(&d, tk, 3 + 0xE2, out, 0) == 0 &&
              sl_detok_push(&d, tk, 3 + 'A', out, 1) == -SL_EINVAL,
          "push into a buffer too small");

    sl_tokenizer_free(tk);
    sl_gguf_close(g);
}

static void test_bpe_behaviour(void)
{
    sl_gguf *g;
    sl_tokenizer *tk;
    if (open_tokenizer("tokenizer/ggml-vocab-gpt-2.gguf", &g, &tk) < 0) {
        CHECK(0, "gpt-2 vocabulary");
        sl_gguf_close(g);
        return;
    }
    CHECK(sl_tokenizer_kind_get(tk) == SL_TOKENIZER_BPE, "kind");
    CHECK(!sl_tokenizer_add_bos(tk), "gpt-2 adds no BOS");
    CHECK(sl_tokenizer_is_eog(tk, 50256) && sl_tokenizer_eot(tk) == 50256, "<|endoftext|> ends generation");
    const char *s = "Hello<|endoftext|>";
    int32_t *a = NULL, *b = NULL;
    int na = encode(tk, s, strlen(s), SL_TOK_PARSE_SPECIAL, &a);
    int nb = encode(tk, s, strlen(s), 0, &b);
    CHECK(na == 2 && a[1] == 50256, "parse_special: %d", na);
    CHECK(nb > 2, "control token as text: %d", nb);
    free(a);
    free(b);

    const char *t = " Hello world\n\tcaf\xC3\xA9 \xF0\x9F\xA6\x99 3333";
    int nt = encode(tk, t, strlen(t), 0, &a);
    char buf[256];
    long n = sl_tokenizer_decode(tk, a, (size_t)nt, 0, buf, sizeof buf);
    CHECK(n == (long)strlen(t) && memcmp(buf, t, strlen(t)) == 0, "round trip '%.*s'", (int)(n > 0 ? n : 0),
          buf);
    free(a);

    /* The reference's clean-up of spaces for this vocabulary. */
    const char *u = "a , b ' c 's";
    nt = encode(tk, u, strlen(u), 0, &a);
    n = sl_tokenizer_decode(tk, a, (size_t)nt, 0, buf, sizeof buf);
    CHECK(n == 8 && memcmp(buf, "a, b'c's", 8) == 0, "clean spaces '%.*s'", (int)(n > 0 ? n : 0), buf);
    free(a);

    /* Invalid UTF-8 is taken as U+FFFD, like the reference. */
    int32_t *c = NULL;
    na = encode(tk, "\xFF", 1, 0, &a);
    nb = encode(tk, "\xEF\xBF\xBD", 3, 0, &c);
    CHECK(na == nb && na > 0 && memcmp(a, c, (size_t)na * sizeof *a) == 0, "invalid byte as U+FFFD");
    free(a);
    free(c);
    sl_tokenizer_free(tk);
    sl_gguf_close(g);
}

/* Long inputs: single huge words and runs of white space, through both
 * models; nothing fails and the text survives the round trip. */
static void test_long_inputs(void)
{
    static const char *const files[] = {"tokenizer/ggml-vocab-gpt-2.gguf",
                                        "tokenizer/ggml-vocab-llama-spm.gguf",
                                        "tokenizer/ggml-vocab-deepseek-llm.gguf"};
    size_t len = 200000;
    char *text = malloc(len);
    char *back = malloc(3 * len + 16);
    for (size_t f = 0; f < 3; f++) {
        sl_gguf *g;
        sl_tokenizer *tk;
        if (open_tokenizer(files[f], &g, &tk) < 0) {
            CHECK(0, "%s", files[f]);
            sl_gguf_close(g);
            continue;
        }
        for (int pattern = 0; pattern < 3; pattern++) {
            for (size_t i = 0; i < len; i++)
                text[i] = pattern == 0 ? 'a' : pattern == 1 ? ' ' : "ab c\n9!"[i % 7];
            int32_t *ids = NULL;
            int n = encode(tk, text, len, 0, &ids);
            CHECK(n > 0, "%s pattern %d: %d", files[f], pattern, n);
            if (n > 0) {
                long m = sl_tokenizer_decode(tk, ids, (size_t)n, 0, back, 3 * len + 16);
                /* SentencePiece strips the added space; BPE may clean up
                 * spaces before punctuation in pattern 2. */
                bool ok = m == (long)len && memcmp(back, text, len) == 0;
                CHECK(ok || (f != 1 && pattern == 2), "%s pattern %d: round trip %ld bytes", files[f],
                      pattern, m);
            }
            free(ids);
        }
        sl_tokenizer_free(tk);
        sl_gguf_close(g);
    }
    free(text);
    free(back);
}

/* ---------------------------------------------------------------------------
 * Pre-tokenizers without a reference vocabulary here (Llama 3, Qwen2): the
 * expected words are what the reference's expressions give.
 * ------------------------------------------------------------------------- */

typedef struct joined {
    char buf[512];
    size_t n;
} joined;

static int join_word(void *ctx, const char *w, size_t n)
{
    joined *j = ctx;
    if (j->n && j->n < sizeof j->buf)
        j->buf[j->n++] = '|';
    for (size_t i = 0; i < n && j->n < sizeof j->buf; i++)
        j->buf[j->n++] = w[i];
    return 0;
}

static void test_pretok(void)
{
    static const struct {
        const char *pre, *text, *want;
    } cases[] = {
        {"llama-bpe", "Hello WORLD'S 1234567 x\xC2\xA0\xC2\xA0y\n\n  z!!\n\t'll",
         "Hello| WORLD|'S| |123|456|7| x|\xC2\xA0|\xC2\xA0y|\n\n| | z|!!\n|\t|'ll"},
        {"qwen2", "Hello WORLD'S 1234567 x\xC2\xA0\xC2\xA0y\n\n  z!!\n\t'll",
         "Hello| WORLD|'S| |1|2|3|4|5|6|7| x|\xC2\xA0|\xC2\xA0y|\n\n| | z|!!\n|\t|'ll"},
        {"deepseek-coder", "a\r\nbc 12 \xE4\xB8\xAD\xE6\x96\x87!!",
         "a|\r|\n|bc| |1|2| |\xE4\xB8\xAD\xE6\x96\x87|!!"},
        {"gpt-2", "it's  ok\xFF", "it|'s| | ok|\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_pretok *p;
        int rc = sl_pretok_new(cases[i].pre, strlen(cases[i].pre), &p);
        CHECK(rc == 0, "pre-tokenizer %s", cases[i].pre);
        if (rc)
            continue;
        joined j = {.n = 0};
        rc = sl_pretok_split(p, cases[i].text, strlen(cases[i].text), join_word, &j);
        bool ok = rc == 0 && j.n == strlen(cases[i].want) && memcmp(j.buf, cases[i].want, j.n) == 0;
        CHECK(ok, "%s split differs", cases[i].pre);
        if (!ok) {
            fprintf(stderr, "  got: '");
            print_escaped(stderr, j.buf, j.n);
            fprintf(stderr, "'\n");
        }
        sl_pretok_free(p);
    }
    sl_pretok *p;
    CHECK(sl_pretok_new("llama-bpe", 9, &p) == 0 && sl_pretok_traits_get(p)->ignore_merges &&
              sl_pretok_traits_get(p)->add_bos,
          "llama-bpe traits");
    sl_pretok_free(p);
    for (int b = 0; b < 256; b++)
        CHECK(sl_pretok_cp_to_byte(sl_pretok_byte_to_cp((uint8_t)b)) == b, "byte alphabet round trip %d", b);
    CHECK(sl_pretok_byte_to_cp(' ') == 0x120 && sl_pretok_byte_to_cp('\n') == 0x10A, "Ġ and Ċ");
}

/* Random byte strings, with special-token texts spliced in, through every
 * vocabulary: encoding never fails, a short buffer receives a prefix of
 * the same result, and parsed special tokens come out as their ids. */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

static void test_random_inputs(void)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         " ",
                                         "  ",
                                         "\n",
                                         "\t",
                                         "'s",
                                         "1",
                                         "234",
                                         "!",
                                         "\xC3\xA9",
                                         "\xE4\xB8\xAD",
                                         "\xF0\x9F\xA6\x99",
                                         "\xE2\x96\x81",
                                         "\xFF",
                                         "\xC3",
                                         "\x80",
                                         "\xE2\x80\xAF",
                                         "<s>",
                                         "</s>",
                                         "<|endoftext|>",
                                         "<unk>",
                                         "\xE3\x80\x80",
                                         "\xC3\xBC",
                                         "Hello",
                                         " world"};
    for (size_t v = 0; v < sizeof vocab_names / sizeof vocab_names[0]; v++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", vocab_names[v]);
        sl_gguf *g;
        sl_tokenizer *tk;
        if (open_tokenizer(rel, &g, &tk) < 0) {
            CHECK(0, "%s", rel);
            sl_gguf_close(g);
            continue;
        }
        int bad = 0;
        for (int iter = 0; iter < 200; iter++) {
            char text[512];
            size_t n = 0;
            int k = 1 + (int)rnd(20);
            for (int i = 0; i < k; i++) {
                const char *p = pieces[rnd(sizeof pieces / sizeof pieces[0])];
                size_t l = strlen(p);
                memcpy(text + n, p, l);
                n += l;
            }
            unsigned flags = rnd(4);
            int32_t *ids = NULL;
            int cnt = encode(tk, text, n, flags, &ids);
            if (cnt < 0) {
                bad++;
                continue;
            }
            int32_t part[4];
            int again = sl_tokenizer_encode(tk, text, n, flags, part, 4);
            if (again != cnt || memcmp(part, ids, (size_t)(cnt < 4 ? cnt : 4) * sizeof *part) != 0)
                bad++;
            char out[4096];
            if (sl_tokenizer_decode(tk, ids, (size_t)cnt, SL_TOK_RENDER_SPECIAL, out, sizeof out) < 0)
                bad++;
            free(ids);
        }
        CHECK(bad == 0, "%s: %d random inputs misbehaved", vocab_names[v], bad);
        sl_tokenizer_free(tk);
        sl_gguf_close(g);
    }
}

/* ---------------------------------------------------------------------------
 * Metadata built in memory
 * ------------------------------------------------------------------------- */

enum mutation {
    M_NONE,
    M_NO_TOKENS,
    M_TOKENS_U32,
    M_SCORES_SHORT,
    M_BAD_TYPE,
    M_BOS_OUT_OF_RANGE,
    M_BOS_UNSET,
    M_MODEL_UNKNOWN,
    M_BAD_BYTE_TOKEN,
    M_DUP_TOKEN,
    M_ADD_BOS_NOT_BOOL,
    M_ADD_EOS,
    M_NO_MODEL,
    M_BPE,
    M_BPE_NO_MERGES,
    M_BPE_UNKNOWN_PRE,
};

#define MINI_N 265

/* A SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then
 * "▁" "a" "b" "▁a" "ab" "▁ab" with scores that make "▁a" merge before
 * "ab". Or, for the BPE mutations, a byte-level vocabulary of the same
 * size with merges. */
static int build(enum mutation m, uint8_t **img, size_t *len)
{
    static char byte_names[256][8];
    const char *toks[MINI_N];
    float scores[MINI_N];
    int32_t types[MINI_N];
    toks[0] = "<unk>";
    toks[1] = "<s>";
    toks[2] = "</s>";
    types[0] = SL_TOKEN_UNKNOWN;
    types[1] = types[2] = SL_TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        toks[3 + b] = byte_names[b];
        types[3 + b] = SL_TOKEN_BYTE;
    }
    const char *extra[6] = {"\xE2\x96\x81",
                            "a",
                            "b",
                            "\xE2\x96\x81"
                            "a",
                            "ab",
                            "\xE2\x96\x81"
                            "ab"};
    const float extra_scores[6] = {-1.0f, -2.0f, -3.0f, -0.5f, -0.7f, -0.1f};
    for (int i = 0; i < 6; i++) {
        toks[259 + i] = extra[i];
        types[259 + i] = SL_TOKEN_NORMAL;
        scores[259 + i] = extra_scores[i];
    }
    for (int i = 0; i < 259; i++)
        scores[i] = 0.0f;
    bool bpe = m >= M_BPE;
    if (bpe) {
        /* Byte-level entries: "Ġ" (space), "a", "b", "Ġa", "ab", "Ġab". */
        toks[259] = "\xC4\xA0";
        toks[262] = "\xC4\xA0"
                    "a";
        toks[264] = "\xC4\xA0"
                    "ab";
        for (int b = 0; b < 256; b++)
            types[3 + b] = SL_TOKEN_NORMAL; /* not used by the BPE tests */
    }
    if (m == M_BAD_TYPE)
        types[100] = 9;
    if (m == M_BAD_BYTE_TOKEN)
        toks[7] = "<0xZZ>";
    if (m == M_DUP_TOKEN)
        toks[263] = "a";

    sl_gguf_writer *w;
    if (sl_gguf_writer_new_mem(&w) < 0)
        return -1;
    int rc = sl_gguf_writer_add_str(w, "general.architecture", "llama");
    if (m != M_NO_MODEL)
        rc |= sl_gguf_writer_add_str(w, "tokenizer.ggml.model",
                                     m == M_MODEL_UNKNOWN ? "bert"
                                     : bpe                ? "gpt2"
                                                          : "llama");
    if (bpe)
        rc |=
            sl_gguf_writer_add_str(w, "tokenizer.ggml.pre", m == M_BPE_UNKNOWN_PRE ? "no-such-pre" : "gpt-2");
    if (m == M_TOKENS_U32) {
        rc |= sl_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", SL_GGUF_I32, types, MINI_N);
    } else if (m != M_NO_TOKENS) {
        rc |= sl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, MINI_N);
    }
    if (!bpe)
        rc |= sl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", SL_GGUF_F32, scores,
                                     m == M_SCORES_SHORT ? MINI_N - 1 : MINI_N);
    rc |= sl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", SL_GGUF_I32, types, MINI_N);
    if (bpe && m != M_BPE_NO_MERGES) {
        /* "\xC4\xA0" "a b" is the merge of "Ġa" with "b"; split so that the
         * hex escape does not swallow the 'a'. */
        const char *merges[] = {"\xC4\xA0 a", "a b", ("\xC4\xA0"
                                                       "a b")};
        rc |= sl_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, 3);
    }
    if (m == M_BOS_OUT_OF_RANGE)
        rc |= sl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", MINI_N);
    else if (m == M_BOS_UNSET)
        rc |= sl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", UINT32_MAX);
    else
        rc |= sl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    if (m != M_ADD_EOS)
        rc |= sl_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (m == M_ADD_BOS_NOT_BOOL)
        rc |= sl_gguf_writer_add_u32(w, "tokenizer.ggml.add_bos_token", 1);
    if (m == M_ADD_EOS) /* no eos_token_id: SentencePiece's default, 2, applies */
        rc |= sl_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", true);
    rc |= sl_gguf_writer_finish(w);
    rc |= sl_gguf_writer_mem_take(w, img, len);
    sl_gguf_writer_free(w);
    return rc ? -1 : 0;
}

static int try_build(enum mutation m, sl_tokenizer **tk, sl_gguf **g, uint8_t **img)
{
    size_t len;
    *tk = NULL;
    *g = NULL;
    if (build(m, img, &len) < 0) {
        fprintf(stderr, "cannot build image for mutation %d\n", m);
        return -1000;
    }
    int rc = sl_gguf_open_mem(*img, len, g);
    if (rc < 0) {
        fprintf(stderr, "image for mutation %d does not parse\n", m);
        return -1001;
    }
    return sl_tokenizer_new(*g, tk);
}

static void test_metadata(void)
{
    static const struct {
        enum mutation m;
        int want;
    } cases[] = {
        {M_NONE, 0},
        {M_NO_TOKENS, -SL_EFORMAT},
        {M_TOKENS_U32, -SL_EFORMAT},
        {M_SCORES_SHORT, -SL_EFORMAT},
        {M_BAD_TYPE, -SL_EFORMAT},
        {M_BOS_OUT_OF_RANGE, -SL_EFORMAT},
        {M_BOS_UNSET, 0},
        {M_MODEL_UNKNOWN, -SL_EUNSUPPORTED},
        {M_BAD_BYTE_TOKEN, -SL_EFORMAT},
        {M_DUP_TOKEN, -SL_EFORMAT},
        {M_ADD_BOS_NOT_BOOL, -SL_EFORMAT},
        {M_ADD_EOS, 0},
        {M_NO_MODEL, -SL_EFORMAT},
        {M_BPE, 0},
        {M_BPE_NO_MERGES, -SL_EFORMAT},
        {M_BPE_UNKNOWN_PRE, -SL_EUNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_tokenizer *tk;
        sl_gguf *g;
        uint8_t *img = NULL;
        int rc = try_build(cases[i].m, &tk, &g, &img);
        CHECK(rc == cases[i].want, "mutation %d: got %d, want %d", cases[i].m, rc, cases[i].want);
        CHECK((rc == 0) == (tk != NULL), "mutation %d: handle on failure", cases[i].m);

        if (rc == 0 && cases[i].m == M_NONE) {
            int32_t ids[8];
            int n = sl_tokenizer_encode(tk, "ab", 2, 0, ids, 8);
            CHECK(n == 1 && ids[0] == 264, "'ab' -> %d tokens, first %d", n, ids[0]);
            n = sl_tokenizer_encode(tk, "a c", 3, SL_TOK_ADD_SPECIAL, ids, 8);
            CHECK(n == 4 && ids[0] == 1 && ids[1] == 262 && ids[2] == 259 && ids[3] == 3 + 'c',
                  "'a c' -> %d tokens", n);
            char buf[16];
            long m = sl_tokenizer_decode(tk, ids, (size_t)n, 0, buf, sizeof buf);
            CHECK(m == 4 && memcmp(buf, " a c", 4) == 0, "decode '%.*s'", (int)(m > 0 ? m : 0), buf);
            m = sl_tokenizer_decode(tk, ids + 1, (size_t)n - 1, 0, buf, sizeof buf);
            CHECK(m == 3 && memcmp(buf, "a c", 3) == 0, "decode without BOS '%.*s'", (int)(m > 0 ? m : 0),
                  buf);
            int32_t bad = MINI_N;
            CHECK(sl_tokenizer_decode(tk, &bad, 1, 0, buf, sizeof buf) == -SL_ERANGE, "decode of a bad id");
        }
        if (rc == 0 && cases[i].m == M_BOS_UNSET)
            CHECK(sl_tokenizer_bos(tk) == 1, "UINT32_MAX keeps the default BOS: %d", sl_tokenizer_bos(tk));
        if (rc == 0 && cases[i].m == M_ADD_EOS) {
            int32_t ids[8];
            int n = sl_tokenizer_encode(tk, "b", 1, SL_TOK_ADD_SPECIAL, ids, 8);
            CHECK(n >= 3 && ids[0] == 1 && ids[n - 1] == 2, "EOS added at the end");
        }
        if (rc == 0 && cases[i].m == M_BPE) {
            int32_t ids[8];
            int n = sl_tokenizer_encode(tk, " ab", 3, 0, ids, 8);
            CHECK(n == 1 && ids[0] == 264, "BPE ' ab' -> %d tokens, first %d", n, ids[0]);
            n = sl_tokenizer_encode(tk, "ba", 2, 0, ids, 8);
            CHECK(n == 2 && ids[0] == 261 && ids[1] == 260, "BPE 'ba' -> %d tokens", n);
        }
        sl_tokenizer_free(tk);
        sl_gguf_close(g);
        free(img);
    }
}

int main(void)
{
    for (size_t i = 0; i < sizeof vocab_names / sizeof vocab_names[0]; i++)
        test_vocab(vocab_names[i]);
    test_refs();
    test_spm_behaviour();
    test_bpe_behaviour();
    test_long_inputs();
    test_pretok();
    test_random_inputs();
    test_metadata();
    return sl_test_finish();
}
