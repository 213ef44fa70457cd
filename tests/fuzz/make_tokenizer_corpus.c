/* Writes a seed corpus for fuzz_tokenizer: the reference tokenizer test
 * texts of ../shared/testdata/tokenizer (the GPT-2 and LLaMA SPM `.inp`
 * files: entries separated by "\n__ggml_vocab_test__\n"), each prefixed with
 * a mode byte (see fuzz_tokenizer.c) cycling through vocabularies and flags,
 * plus a few token-id seeds.
 *
 * Usage: make_tokenizer_corpus DIR   (DIR must exist; files are DIR/seed-NNN.bin) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SL_TESTDATA_DIR
#error "SL_TESTDATA_DIR must name ../shared/testdata"
#endif

static int g_failed, g_n;

static void save(const char *dir, unsigned mode, const void *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%03d.bin", dir, g_n++);
    FILE *f = fopen(path, "wb");
    unsigned char m = (unsigned char)mode;
    int ok = f && fwrite(&m, 1, 1, f) == 1 && (len == 0 || fwrite(p, 1, len, f) == len);
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "make_tokenizer_corpus: cannot write %s\n", path);
        g_failed = 1;
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 4096 > cap) {
            cap = cap ? 2 * cap : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    static const char *const inputs[2] = {
        SL_TESTDATA_DIR "/tokenizer/ggml-vocab-gpt-2.gguf.inp",
        SL_TESTDATA_DIR "/tokenizer/ggml-vocab-llama-spm.gguf.inp",
    };
    static const char sep[] = "\n__ggml_vocab_test__\n";
    unsigned flags = 0;
    for (unsigned v = 0; v < 2; v++) {
        size_t len = 0;
        char *buf = slurp(inputs[v], &len);
        if (!buf) {
            fprintf(stderr, "make_tokenizer_corpus: cannot read %s\n", inputs[v]);
            return 1;
        }
        for (char *p = buf, *end = buf + len; p < end;) {
            char *q = memmem(p, (size_t)(end - p), sep, sizeof sep - 1);
            size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
            save(argv[1], v | ((flags++ % 8) << 1), p, n);
            p += n + (q ? sizeof sep - 1 : 0);
        }
        free(buf);
        /* Special tokens written in the text, with and without parsing. */
        static const char special[] = "<s>Hi</s><|endoftext|> <unk>";
        save(argv[1], v, special, sizeof special - 1);
        save(argv[1], v | 4 | 8, special, sizeof special - 1);
        /* Token ids (16-bit little-endian, minus 2): BOS-ish, bytes, words. */
        static const unsigned char ids[] = {3, 0, 2, 0, 1, 0, 0, 1, 30, 1, 40, 40, 0x00, 0x7d};
        save(argv[1], v | 16, ids, sizeof ids);
        save(argv[1], v | 16 | 8, ids, sizeof ids);
    }
    if (!g_failed)
        printf("make_tokenizer_corpus: %d seeds in %s\n", g_n, argv[1]);
    return g_failed;
}
