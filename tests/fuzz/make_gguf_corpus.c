/* Writes a seed corpus for fuzz_gguf: small valid GGUF images, built with
 * the writer, that between them use every metadata value type, nested
 * arrays, both versions, several alignments, a file without tensors and
 * one tensor of every type the dtype table knows. Starting from valid files
 * lets the fuzzer reach the deep parts of the reader (tensor infos, layout
 * checks) instead of spending its time on the magic number.
 *
 * Usage: make_gguf_corpus DIR   (DIR must exist; files are DIR/seed-NN.gguf) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "model/dtype.h"
#include "model/gguf_write.h"

static int g_failed;

#define OK(call)                                                                                             \
    do {                                                                                                     \
        int rc_ = (call);                                                                                    \
        if (rc_ != 0) {                                                                                      \
            fprintf(stderr, "make_gguf_corpus: %s failed: %s\n", #call, sl_strerror(rc_));                   \
            g_failed = 1;                                                                                    \
        }                                                                                                    \
    } while (0)

/* Writes the tensors' data (a byte pattern) and saves the image. */
static void save(sl_gguf_writer *w, const char *dir, int n)
{
    OK(sl_gguf_writer_write_header(w));
    uint8_t chunk[256];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (uint8_t)(i * 29 + 3);
    for (uint64_t left; (left = sl_gguf_writer_data_remaining(w)) > 0;) {
        if (sl_gguf_writer_write_data(w, chunk, left < sizeof chunk ? (size_t)left : sizeof chunk) != 0) {
            g_failed = 1;
            break;
        }
    }
    OK(sl_gguf_writer_finish(w));
    uint8_t *p = NULL;
    size_t len = 0;
    OK(sl_gguf_writer_mem_take(w, &p, &len));
    sl_gguf_writer_free(w);
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%02d.gguf", dir, n);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "make_gguf_corpus: cannot write %s\n", path);
        g_failed = 1;
    }
    free(p);
}

static sl_gguf_writer *fresh(void)
{
    sl_gguf_writer *w = NULL;
    if (sl_gguf_writer_new_mem(&w) != 0) {
        fprintf(stderr, "make_gguf_corpus: out of memory\n");
        exit(1);
    }
    return w;
}

static void model_like(sl_gguf_writer *w)
{
    OK(sl_gguf_writer_add_str(w, "general.architecture", "llama"));
    OK(sl_gguf_writer_add_u32(w, "llama.block_count", 1));
    OK(sl_gguf_writer_add_u32(w, "llama.embedding_length", 32));
    OK(sl_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f));
    OK(sl_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"));
    const char *toks[] = {"<unk>", "<s>", "</s>", "a", "b"};
    const float scores[] = {0, 0, 0, -1, -2};
    const int32_t types[] = {2, 3, 3, 1, 1};
    OK(sl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 5));
    OK(sl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", SL_GGUF_F32, scores, 5));
    OK(sl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", SL_GGUF_I32, types, 5));
    const int64_t emb[2] = {32, 5}, norm[1] = {32};
    OK(sl_gguf_writer_add_tensor(w, "token_embd.weight", 2, emb, SL_Q8_0));
    OK(sl_gguf_writer_add_tensor(w, "output_norm.weight", 1, norm, SL_F32));
}

static void every_value_type(sl_gguf_writer *w)
{
    OK(sl_gguf_writer_add_u8(w, "u8", 1));
    OK(sl_gguf_writer_add_i8(w, "i8", -1));
    OK(sl_gguf_writer_add_u16(w, "u16", 2));
    OK(sl_gguf_writer_add_i16(w, "i16", -2));
    OK(sl_gguf_writer_add_u32(w, "u32", 3));
    OK(sl_gguf_writer_add_i32(w, "i32", -3));
    OK(sl_gguf_writer_add_f32(w, "f32", 0.5f));
    OK(sl_gguf_writer_add_bool(w, "bool", true));
    OK(sl_gguf_writer_add_str(w, "str", "text"));
    OK(sl_gguf_writer_add_u64(w, "u64", 4));
    OK(sl_gguf_writer_add_i64(w, "i64", -4));
    OK(sl_gguf_writer_add_f64(w, "f64", 0.25));
    const uint8_t b[2] = {1, 2};
    const bool bl[2] = {true, false};
    const double d[2] = {1.0, -1.0};
    OK(sl_gguf_writer_add_arr(w, "a.u8", SL_GGUF_U8, b, 2));
    OK(sl_gguf_writer_add_arr(w, "a.bool", SL_GGUF_BOOL, bl, 2));
    OK(sl_gguf_writer_add_arr(w, "a.f64", SL_GGUF_F64, d, 2));
    OK(sl_gguf_writer_arr_begin(w, "a.nested", SL_GGUF_ARRAY));
    OK(sl_gguf_writer_add_arr(w, NULL, SL_GGUF_U8, b, 2));
    OK(sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_ARRAY));
    const char *s[2] = {"x", "yz"};
    OK(sl_gguf_writer_add_arr_str(w, NULL, s, 2));
    OK(sl_gguf_writer_arr_end(w));
    OK(sl_gguf_writer_arr_end(w));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int n = 0;
    sl_gguf_writer *w;

    w = fresh();
    model_like(w);
    save(w, dir, n++);
    w = fresh();
    OK(sl_gguf_writer_set_version(w, 2));
    model_like(w);
    save(w, dir, n++);
    w = fresh();
    every_value_type(w);
    save(w, dir, n++);
    static const uint32_t aligns[] = {1, 8, 64, 256};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        w = fresh();
        OK(sl_gguf_writer_add_u32(w, "general.alignment", aligns[i]));
        model_like(w);
        save(w, dir, n++);
    }
    /* A vocabulary-only file: no tensors. */
    w = fresh();
    const char *toks[] = {"a", "b", "ab"};
    OK(sl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3));
    OK(sl_gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt-2"));
    save(w, dir, n++);
    /* One tensor of every type, each a single block (4-D for some). */
    w = fresh();
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        const sl_dtype_info *info = sl_dtype_get(t);
        if (!info)
            continue;
        char name[64];
        snprintf(name, sizeof name, "t.%s", info->name);
        const int64_t ne[4] = {info->block, 1, 1, 1};
        OK(sl_gguf_writer_add_tensor(w, name, t % 2 ? 4 : 1, ne, t));
    }
    save(w, dir, n++);
    /* A file with neither metadata nor tensors. */
    w = fresh();
    save(w, dir, n++);
    if (!g_failed)
        printf("make_gguf_corpus: %d seeds in %s\n", n, dir);
    return g_failed;
}
