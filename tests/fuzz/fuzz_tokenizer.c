/* libFuzzer target for the tokenizers (model/tokenizer.h, model/detok.h)
 * with two real vocabularies from ../shared/testdata/tokenizer, loaded once:
 * GPT-2 (byte-level BPE) and LLaMA (SentencePiece). The coordinator runs
 * these on text from clients, so they see arbitrary bytes.
 *
 * Input: byte 0 chooses the case, the rest is the data.
 *   bit 0   vocabulary: 0 GPT-2, 1 LLaMA SPM
 *   bit 1   encode with SL_TOK_ADD_SPECIAL
 *   bit 2   encode with SL_TOK_PARSE_SPECIAL
 *   bit 3   decode with SL_TOK_RENDER_SPECIAL
 *   bit 4   0: the data is text: encode it, then decode the result;
 *           1: the data is token ids (16-bit little-endian, minus 2, so
 *              that -2, -1 and ids past the vocabulary occur): decode them
 * Checked, beyond the sanitizers: the documented bound on the token count
 * (6 * len + 5), that encode gives the same count with and without room
 * (snprintf style), that decode's count without room bounds the exact one,
 * that neither writes past cap, and that the streaming detokenizer releases
 * exactly the concatenation of the pieces. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "model/detok.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#ifndef SL_TESTDATA_DIR
#error "SL_TESTDATA_DIR must name ../shared/testdata"
#endif

#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_tokenizer: %s:%d: %s\n", __FILE__, __LINE__, #cond);                       \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static const char *const g_vocab_files[2] = {
    SL_TESTDATA_DIR "/tokenizer/ggml-vocab-gpt-2.gguf",
    SL_TESTDATA_DIR "/tokenizer/ggml-vocab-llama-spm.gguf",
};
static sl_tokenizer *g_tk[2];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int k = 0; k < 2; k++) {
        sl_gguf *g = NULL;
        if (sl_gguf_open(g_vocab_files[k], &g) != 0 || sl_tokenizer_new(g, &g_tk[k]) != 0) {
            fprintf(stderr, "fuzz_tokenizer: cannot load %s\n", g_vocab_files[k]);
            abort();
        }
        sl_gguf_close(g);
    }
    return 0;
}

/* Decodes ids in every way the API offers and checks they agree. */
static void decode_all(const sl_tokenizer *tk, const int32_t *ids, size_t n, unsigned dflags)
{
    long len = sl_tokenizer_decode(tk, ids, n, dflags, NULL, 0);
    bool all_valid = true;
    for (size_t k = 0; k < n; k++)
        all_valid = all_valid && ids[k] >= 0 && ids[k] < sl_tokenizer_n_vocab(tk);
    if (len < 0) {
        REQUIRE(!all_valid);
        return;
    }
    REQUIRE(all_valid);
    /* A count from a call without room is an upper bound (the space clean-up
     * some vocabularies ask for needs the whole text, see tokenizer.c);
     * with that much room the exact count comes back. With less room than
     * needed the result is above the room (never a short text passed off as
     * whole) and no byte is written past it. */
    char *out = malloc((size_t)len + 1);
    REQUIRE(out);
    long exact = sl_tokenizer_decode(tk, ids, n, dflags, out, (size_t)len);
    REQUIRE(exact >= 0 && exact <= len);
    size_t small = (size_t)len / 2;
    char *half = malloc(small + 1);
    REQUIRE(half);
    long r = sl_tokenizer_decode(tk, ids, n, dflags, half, small);
    REQUIRE(r > (long)small ? r >= exact : (r == exact && memcmp(half, out, (size_t)r) == 0));
    free(half);

    /* Streaming: what comes out is the concatenation of the pieces. */
    unsigned pflags = dflags & SL_TOK_RENDER_SPECIAL;
    size_t cap = SL_DETOK_OUT_MAX(tk);
    char *chunk = malloc(cap);
    size_t total = 0;
    for (size_t k = 0; k < n; k++) {
        const char *p;
        size_t pl;
        REQUIRE(sl_tokenizer_piece(tk, ids[k], pflags, &p, &pl) == 0);
        total += pl;
    }
    char *pieces = malloc(total + 1), *stream = malloc(total + 1);
    REQUIRE(chunk && pieces && stream);
    size_t at = 0, st = 0;
    sl_detok d;
    sl_detok_init(&d, pflags);
    for (size_t k = 0; k < n; k++) {
        const char *p;
        size_t pl;
        sl_tokenizer_piece(tk, ids[k], pflags, &p, &pl);
        memcpy(pieces + at, p, pl);
        at += pl;
        int got = sl_detok_push(&d, tk, ids[k], chunk, cap);
        REQUIRE(got >= 0 && st + (size_t)got <= total);
        memcpy(stream + st, chunk, (size_t)got);
        st += (size_t)got;
    }
    int got = sl_detok_flush(&d, chunk, cap);
    REQUIRE(got >= 0 && st + (size_t)got == total);
    memcpy(stream + st, chunk, (size_t)got);
    REQUIRE(memcmp(pieces, stream, total) == 0);
    free(pieces);
    free(stream);
    free(chunk);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    const sl_tokenizer *tk = g_tk[mode & 1];
    unsigned eflags = ((mode & 2) ? SL_TOK_ADD_SPECIAL : 0) | ((mode & 4) ? SL_TOK_PARSE_SPECIAL : 0);
    unsigned dflags = (mode & 8) ? SL_TOK_RENDER_SPECIAL : 0;
    const uint8_t *p = data + 1;
    size_t len = size - 1;

    if (mode & 16) {
        size_t n = len / 2;
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        REQUIRE(ids);
        for (size_t k = 0; k < n; k++)
            ids[k] = (int32_t)(p[2 * k] | p[2 * k + 1] << 8) - 2;
        decode_all(tk, ids, n, dflags);
        free(ids);
        return 0;
    }

    /* A copy of exactly len bytes, so reads past the text are caught. */
    char *text = malloc(len ? len : 1);
    REQUIRE(text);
    memcpy(text, p, len);
    int n = sl_tokenizer_encode(tk, text, len, eflags, NULL, 0);
    if (n < 0) { /* the regex engine giving up, or memory */
        REQUIRE(n == -SL_ERANGE || n == -SL_ENOMEM);
        free(text);
        return 0;
    }
    REQUIRE((size_t)n <= 6 * len + 5);
    int32_t *ids = malloc(((size_t)n ? (size_t)n : 1) * sizeof *ids);
    REQUIRE(ids);
    REQUIRE(sl_tokenizer_encode(tk, text, len, eflags, ids, (size_t)n) == n);
    if (n > 1) { /* a short buffer: same count, only cap ids written */
        int32_t *few = malloc((size_t)(n / 2) * sizeof *few);
        REQUIRE(few);
        REQUIRE(sl_tokenizer_encode(tk, text, len, eflags, few, (size_t)(n / 2)) == n);
        REQUIRE(memcmp(few, ids, (size_t)(n / 2) * sizeof *few) == 0);
        free(few);
    }
    for (int k = 0; k < n; k++)
        REQUIRE(ids[k] >= 0 && ids[k] < sl_tokenizer_n_vocab(tk));
    decode_all(tk, ids, (size_t)n, dflags);
    free(ids);
    free(text);
    return 0;
}
