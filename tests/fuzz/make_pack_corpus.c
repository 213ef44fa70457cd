/* Writes a seed corpus for fuzz_pack: the manifest bodies (the msgpack
 * after the 32-byte frame; fuzz_pack wraps inputs in a frame) of three
 * reference models packed for the purpose (a dense F32 model, a K-quant
 * mixture, and a mixture of experts when sluice runs it), plus one whole
 * manifest file.
 *
 * Usage: make_pack_corpus DIR   (DIR must exist; files are DIR/seed-N.bin) */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "model/gguf.h"
#include "model/pack.h"
#include "model/pack_write.h"

#ifndef SL_TESTDATA_DIR
#error "SL_TESTDATA_DIR must name ../shared/testdata"
#endif

static int g_n;

static int save(const char *dir, const uint8_t *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%d.bin", dir, g_n++);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "make_pack_corpus: cannot write %s\n", path);
    return ok ? 0 : 1;
}

/* Removes a directory of plain files. Returns 0 or -1. */
static int rm_flat(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    char path[4096];
    int rc = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            rc |= unlink(path);
        }
    closedir(d);
    return rc | rmdir(dir);
}

/* Packs the model into a temporary directory and saves its manifest. */
static int seed(const char *dir, const char *model, sl_pack_codec codec, int whole)
{
    char path[4096], tmp[] = "/tmp/make_pack_corpus.XXXXXX", out[256], file[512];
    snprintf(path, sizeof path, "%s/models/%s", SL_TESTDATA_DIR, model);
    if (!mkdtemp(tmp))
        return 1;
    snprintf(out, sizeof out, "%s/p", tmp);
    sl_gguf *g;
    int failed = 1;
    sl_pack_opts o = {.codec = codec};
    sl_log_set_level(SL_LOG_OFF);
    int rc = sl_gguf_open(path, &g);
    if (rc == 0) {
        rc = sl_pack_write(g, model, out, &o, NULL);
        sl_gguf_close(g);
    }
    sl_log_set_level(SL_LOG_WARN);
    if (rc == -SL_EUNSUPPORTED) { /* a model this build does not run: no seed */
        failed = 0;
    } else if (rc == 0) {
        snprintf(file, sizeof file, "%s/%s", out, SL_PACK_MANIFEST);
        FILE *f = fopen(file, "rb");
        static uint8_t buf[1 << 22];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f)
            fclose(f);
        if (n > SL_PACK_FRAME_BYTES)
            failed = whole ? save(dir, buf, n) : save(dir, buf + SL_PACK_FRAME_BYTES, n - SL_PACK_FRAME_BYTES);
    }
    if ((rc == 0 && rm_flat(out) != 0) || rmdir(tmp) != 0)
        failed = 1;
    if (failed)
        fprintf(stderr, "make_pack_corpus: cannot pack %s\n", path);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_pack_corpus DIR\n");
        return 2;
    }
    int failed = seed(argv[1], "stories260K.gguf", SL_PACK_CODEC_NONE, 0);
    failed |= seed(argv[1], "tiny-llama-q4_k_m.gguf", SL_PACK_CODEC_ZSTD, 0);
    failed |= seed(argv[1], "tiny-moe-q8_0.gguf", SL_PACK_CODEC_LZ4, 0);
    failed |= seed(argv[1], "stories260K.gguf", SL_PACK_CODEC_LZ4, 1);
    return failed;
}
