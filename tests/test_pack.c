/* Packed models (model/pack.h, pack_write.h, source.h, loader/shard.h):
 *   - every reference model sluice runs, packed uncompressed, with LZ4 and
 *     with zstd (compression forced on every unit, so that every unit goes
 *     through the codec), gives an image whose tensor bytes equal the GGUF's
 *     and the same greedy tokens (and bit-identical logits) in-process;
 *   - the metadata-only and embedding-only opens load what they promise;
 *   - a flipped byte in a shard, a truncated or missing shard, an edited
 *     manifest (with and without a fixed-up checksum), another format
 *     version and a non-empty output directory are each refused with an
 *     error, and the shard reader names the corrupted shard and unit.
 *
 * usage: test_pack [WORK_DIR [FAST_DIR]]
 *   WORK_DIR (default $TMPDIR or /tmp): the corruption tests, on a file
 *   system with direct I/O; FAST_DIR (default WORK_DIR): the packs of every
 *   model, e.g. a tmpfs, where the reader falls back to buffered reads. */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "compute/engine.h"
#include "loader/shard.h"
#include "model/pack.h"
#include "model/pack_write.h"
#include "model/source.h"
#include "tests/testutil.h"

#define N_GEN 12
#define THREADS 2

static char g_work[512], g_fast[512];

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* Greedy tokens (and the last step's logits) of the engine on m. */
static int greedy(const sl_model *m, int32_t *out, float *last_logits)
{
    const sl_hparams *hp = sl_model_hparams(m);
    sl_engine *e;
    if (sl_engine_new(m, 64, 32, THREADS, &e))
        return -1;
    float *logits = malloc(hp->n_vocab * sizeof *logits);
    int32_t prompt[4] = {1, 15, 200, 42};
    int rc = logits ? sl_engine_eval(e, prompt, 4, false, logits) : -1;
    for (int i = 0; i < N_GEN && rc == 0; i++) {
        int32_t best = 0;
        for (uint32_t v = 1; v < hp->n_vocab; v++)
            if (logits[v] > logits[best])
                best = (int32_t)v;
        out[i] = best;
        rc = sl_engine_eval(e, &best, 1, false, logits);
    }
    if (rc == 0)
        memcpy(last_logits, logits, hp->n_vocab * sizeof *logits);
    free(logits);
    sl_engine_free(e);
    return rc;
}

static bool same_tensor_bytes(const sl_gguf *a, const sl_gguf *b)
{
    if (sl_gguf_tensor_count(a) != sl_gguf_tensor_count(b) || sl_gguf_file_size(a) != sl_gguf_file_size(b))
        return false;
    for (uint64_t i = 0; i < sl_gguf_tensor_count(a); i++) {
        const sl_gguf_tensor *x = sl_gguf_tensor_at(a, i), *y = sl_gguf_tensor_at(b, i);
        if (x->offset != y->offset || x->nbytes != y->nbytes ||
            memcmp(sl_gguf_tensor_data(a, x), sl_gguf_tensor_data(b, y), x->nbytes))
            return false;
    }
    return true;
}

static int pack(const sl_gguf *g, const char *name, const char *dir, sl_pack_codec codec)
{
    sl_pack_opts o = {.codec = codec, .min_gain_div = UINT32_MAX};
    sl_pack_stats st;
    int rc = sl_pack_write(g, name, dir, &o, &st);
    if (rc == 0 && codec != SL_PACK_CODEC_NONE)
        CHECK(st.n_compressed == st.n_units, "%s: %u of %u units compressed", dir, st.n_compressed, st.n_units);
    return rc;
}

static void check_model(const char *name)
{
    char path[512], rel[128];
    snprintf(rel, sizeof rel, "models/%s", name);
    sl_testdata_path(path, sizeof path, rel);
    sl_model *m = NULL;
    sl_log_set_level(SL_LOG_OFF);
    int rc = sl_model_open(path, &m);
    sl_log_set_level(SL_LOG_WARN);
    if (rc == -SL_EUNSUPPORTED) {
        printf("%s: sluice does not run it (yet); not packed\n", name);
        return;
    }
    CHECK(rc == 0, "open %s: %d", name, rc);
    if (rc)
        return;
    const sl_hparams *hp = sl_model_hparams(m);
    int32_t want[N_GEN], got[N_GEN];
    float *want_logits = malloc(hp->n_vocab * sizeof(float)), *got_logits = malloc(hp->n_vocab * sizeof(float));
    CHECK(greedy(m, want, want_logits) == 0, "%s: greedy on the GGUF", name);
    const sl_pack_codec codecs[] = {SL_PACK_CODEC_NONE, SL_PACK_CODEC_LZ4, SL_PACK_CODEC_ZSTD};
    for (int c = 0; c < 3; c++) {
        char dir[700];
        snprintf(dir, sizeof dir, "%s/%s.%s", g_fast, name, sl_pack_codec_name(codecs[c]));
        rc = pack(sl_model_gguf(m), name, dir, codecs[c]);
        CHECK(rc == 0, "pack %s: %d", dir, rc);
        sl_model *pm = NULL;
        if (rc || (rc = sl_source_open_model(dir, SL_SOURCE_ALL, &pm))) {
            CHECK(0, "open the packed %s: %d", dir, rc);
            rm_tree(dir);
            continue;
        }
        CHECK(same_tensor_bytes(sl_model_gguf(m), sl_model_gguf(pm)), "%s: tensor bytes differ", dir);
        CHECK(greedy(pm, got, got_logits) == 0, "%s: greedy on the pack", dir);
        CHECK(!memcmp(want, got, sizeof want), "%s: greedy tokens differ (first %d vs %d)", dir, want[0], got[0]);
        CHECK(!memcmp(want_logits, got_logits, hp->n_vocab * sizeof(float)), "%s: logits differ", dir);
        sl_model_close(pm);

        /* Metadata only: the description is the same; the embedding open
         * also has the token embedding's bytes. */
        sl_model *mm = NULL;
        CHECK(sl_source_open_model(dir, SL_SOURCE_META, &mm) == 0, "%s: meta open", dir);
        if (mm) {
            CHECK(!memcmp(sl_model_hparams(mm), hp, sizeof *hp), "%s: hyper-parameters differ", dir);
            sl_model_close(mm);
        }
        CHECK(sl_source_open_model(dir, SL_SOURCE_EMBD, &mm) == 0, "%s: embd open", dir);
        if (mm) {
            sl_global_weights a, b;
            sl_model_global_weights(m, &a);
            sl_model_global_weights(mm, &b);
            const sl_tensor *ta = &a.t[SL_GW_TOKEN_EMBD], *tb = &b.t[SL_GW_TOKEN_EMBD];
            CHECK(!memcmp(ta->data, tb->data, sl_tensor_row_bytes(ta) * (size_t)ta->ne[1]),
                  "%s: the embedding differs", dir);
            sl_model_close(mm);
        }
        rm_tree(dir);
    }
    free(want_logits);
    free(got_logits);
    sl_model_close(m);
}

/* ---- corruption ------------------------------------------------------------ */

static int copy_tree(const char *from, const char *to)
{
    if (mkdir(to, 0755))
        return -1;
    DIR *d = opendir(from);
    struct dirent *e;
    char a[1024], b[1024];
    int rc = d ? 0 : -1;
    while (d && (e = readdir(d)) && rc == 0) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
        char buf[65536];
        size_t n;
        while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
            rc |= fwrite(buf, 1, n, out) == n ? 0 : -1;
        rc |= in && out ? 0 : -1;
        if (in)
            fclose(in);
        if (out)
            fclose(out);
    }
    if (d)
        closedir(d);
    return rc;
}

static void flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL, "open %s", path);
    if (!f)
        return;
    fseek(f, at, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
}

static int open_quiet(const char *dir, sl_source_load what)
{
    sl_model *m = NULL;
    sl_log_set_level(SL_LOG_OFF);
    int rc = sl_source_open_model(dir, what, &m);
    sl_log_set_level(SL_LOG_WARN);
    sl_model_close(m);
    return rc;
}

/* Rewrites the manifest's frame checksum after an edit of its body, so
 * that what the edit did is what gets caught. */
static void fix_checksum(const char *path)
{
    FILE *f = fopen(path, "r+b");
    uint8_t *buf = malloc(1 << 24);
    size_t n = f && buf ? fread(buf, 1, 1 << 24, f) : 0;
    CHECK(n > SL_PACK_FRAME_BYTES, "read %s", path);
    if (n > SL_PACK_FRAME_BYTES) {
        uint64_t sum = sl_pack_checksum(buf + SL_PACK_FRAME_BYTES, n - SL_PACK_FRAME_BYTES);
        fseek(f, 24, SEEK_SET);
        for (int i = 0; i < 8; i++)
            fputc((int)(sum >> (8 * i)) & 0xff, f);
    }
    if (f)
        fclose(f);
    free(buf);
}

/* Offset of the first occurrence of `what` in the file, or -1. */
static long find_in(const char *path, const void *what, size_t len)
{
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 24];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    for (size_t i = 0; i + len <= n; i++)
        if (!memcmp(buf + i, what, len))
            return (long)i;
    return -1;
}

static void check_corruption(void)
{
    char model[512], good[700], bad[700], p[800];
    sl_testdata_path(model, sizeof model, "models/stories260K.gguf");
    sl_gguf *g;
    if (sl_gguf_open(model, &g)) {
        CHECK(0, "open %s", model);
        return;
    }
    for (int c = 0; c < 2; c++) {
        sl_pack_codec codec = c ? SL_PACK_CODEC_ZSTD : SL_PACK_CODEC_NONE;
        snprintf(good, sizeof good, "%s/good.%d", g_work, c);
        snprintf(bad, sizeof bad, "%s/bad.%d", g_work, c);
        CHECK(pack(g, "stories260K.gguf", good, codec) == 0, "pack %s", good);
        CHECK(open_quiet(good, SL_SOURCE_ALL) == 0, "the intact pack opens");

        /* A flipped byte inside layer 2's unit: the open that loads it
         * fails, the one that does not load it succeeds, and the shard
         * reader names the shard and the unit. */
        CHECK(copy_tree(good, bad) == 0, "copy");
        sl_pack *pk = NULL;
        CHECK(sl_pack_open(bad, &pk) == 0, "pack open");
        int64_t unit = -1;
        for (uint32_t i = 0; pk && i < sl_pack_unit_count(pk); i++)
            if (!strcmp(sl_pack_unit_at(pk, i)->name, "blk.2"))
                unit = i;
        CHECK(unit >= 0, "unit blk.2");
        if (unit >= 0) {
            const sl_pack_unit *u = sl_pack_unit_at(pk, (uint32_t)unit);
            snprintf(p, sizeof p, "%s/%s", bad, sl_pack_file_name(pk, u->file));
            flip_byte(p, (long)(u->offset + u->stored / 2));
            CHECK(open_quiet(bad, SL_SOURCE_ALL) == -SL_EFORMAT, "a flipped byte is caught at load");
            CHECK(open_quiet(bad, SL_SOURCE_META) == 0, "loading nothing of it does not fail");
            sl_shard_reader *r = NULL;
            CHECK(sl_shard_reader_open(pk, NULL, &r) == 0, "shard reader");
            size_t dst_size = ((size_t)sl_pack_max_size(pk) + 4095) / 4096 * 4096;
            uint8_t *dst = aligned_alloc(4096, dst_size);
            sl_log_set_level(SL_LOG_OFF);
            int rc = r ? sl_shard_reader_load(r, (uint32_t)unit, dst, dst_size) : 0;
            sl_log_set_level(SL_LOG_WARN);
            CHECK(rc == -SL_EFORMAT, "load of the corrupted unit: %d", rc);
            CHECK(r && strstr(sl_shard_reader_why(r), "blk.2.shard") && strstr(sl_shard_reader_why(r), "blk.2"),
                  "the message names the shard: %s", r ? sl_shard_reader_why(r) : "");
            /* The others still load. */
            CHECK(r && sl_shard_reader_load(r, (uint32_t)unit + 1, dst, dst_size) == 0, "a good unit loads");
            free(dst);
            sl_shard_reader_close(r);
        }
        sl_pack_close(pk);
        rm_tree(bad);

        /* A truncated shard and a missing one: refused at open. */
        CHECK(copy_tree(good, bad) == 0, "copy");
        snprintf(p, sizeof p, "%s/blk.1.shard", bad);
        struct stat st;
        CHECK(stat(p, &st) == 0 && truncate(p, st.st_size - 1) == 0, "truncate");
        sl_log_set_level(SL_LOG_OFF);
        CHECK(sl_pack_open(bad, &pk) == -SL_EIO && !pk, "a truncated shard is refused");
        sl_log_set_level(SL_LOG_WARN);
        CHECK(open_quiet(bad, SL_SOURCE_META) == -SL_EIO, "... also by the model open");
        unlink(p);
        CHECK(open_quiet(bad, SL_SOURCE_META) == -SL_EIO, "a missing shard is refused");
        rm_tree(bad);

        /* An edited manifest: caught by the checksum; with the checksum
         * fixed up, by what the edit broke. */
        CHECK(copy_tree(good, bad) == 0, "copy");
        snprintf(p, sizeof p, "%s/%s", bad, SL_PACK_MANIFEST);
        long at = find_in(p, "\xa4" "head", 5); /* the unit name "head" */
        CHECK(at > 0, "find the head unit");
        flip_byte(p, at + 1);
        CHECK(open_quiet(bad, SL_SOURCE_META) == -SL_EFORMAT, "an edited manifest is refused");
        fix_checksum(p);
        CHECK(open_quiet(bad, SL_SOURCE_META) == 0, "a renamed unit is still a valid manifest");
        at = find_in(p, "\xa6" "pieces", 7);
        CHECK(at > 0, "find pieces");
        flip_byte(p, at + 10); /* the high byte of the first piece's offset */
        fix_checksum(p);
        CHECK(open_quiet(bad, SL_SOURCE_META) < 0, "a moved piece is refused");
        rm_tree(bad);

        CHECK(copy_tree(good, bad) == 0, "copy");
        snprintf(p, sizeof p, "%s/%s", bad, SL_PACK_MANIFEST);
        flip_byte(p, 8); /* version 1 -> 17 */
        CHECK(open_quiet(bad, SL_SOURCE_META) == -SL_EVERSION, "another version is refused");
        CHECK(truncate(p, 100) == 0, "truncate the manifest");
        CHECK(open_quiet(bad, SL_SOURCE_META) == -SL_EFORMAT || open_quiet(bad, SL_SOURCE_META) == -SL_EVERSION,
              "a truncated manifest is refused");
        rm_tree(bad);

        /* Packing into a non-empty directory is refused. */
        sl_pack_opts o = {.codec = SL_PACK_CODEC_NONE};
        sl_log_set_level(SL_LOG_OFF);
        CHECK(sl_pack_write(g, "x", good, &o, NULL) == -SL_EINVAL, "a non-empty directory is refused");
        sl_log_set_level(SL_LOG_WARN);
        rm_tree(good);
    }
    sl_gguf_close(g);
}

static void check_codec_parse(void)
{
    sl_pack_opts o;
    CHECK(sl_pack_parse_codec("none", &o) == 0 && o.codec == SL_PACK_CODEC_NONE, "none");
    CHECK(sl_pack_parse_codec("lz4", &o) == 0 && o.codec == SL_PACK_CODEC_LZ4, "lz4");
    CHECK(sl_pack_parse_codec("zstd", &o) == 0 && o.codec == SL_PACK_CODEC_ZSTD && o.level == 0, "zstd");
    CHECK(sl_pack_parse_codec("zstd:19", &o) == 0 && o.level == 19, "zstd:19");
    CHECK(sl_pack_parse_codec("zstd:0", &o) != 0 && sl_pack_parse_codec("zstd:", &o) != 0 &&
              sl_pack_parse_codec("gzip", &o) != 0 && sl_pack_parse_codec("zstd:99", &o) != 0,
          "bad codecs are refused");
    sl_pack *p;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_pack_parse("", 0, NULL, &p) == -SL_EFORMAT && !p, "an empty manifest");
    uint8_t frame[SL_PACK_FRAME_BYTES] = {0};
    memcpy(frame, SL_PACK_MAGIC, 8);
    frame[8] = SL_PACK_VERSION;
    CHECK(sl_pack_parse(frame, sizeof frame, NULL, &p) == -SL_EFORMAT, "an empty body (checksum of nothing)");
    frame[8] = SL_PACK_VERSION + 1;
    CHECK(sl_pack_parse(frame, sizeof frame, NULL, &p) == -SL_EVERSION, "another version");
    sl_log_set_level(SL_LOG_WARN);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_work, sizeof g_work, "%s/test_pack.XXXXXX", base);
    snprintf(g_fast, sizeof g_fast, "%s/test_pack.XXXXXX", argc > 2 ? argv[2] : base);
    if (!mkdtemp(g_work) || !mkdtemp(g_fast)) {
        perror("mkdtemp");
        rmdir(g_work);
        return 1;
    }
    check_codec_parse();
    char dir[512];
    DIR *d = opendir(sl_testdata_path(dir, sizeof dir, "models"));
    CHECK(d != NULL, "open %s", dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 5 && !strcmp(e->d_name + n - 5, ".gguf"))
            check_model(e->d_name);
    }
    if (d)
        closedir(d);
    check_corruption();
    rmdir(g_work);
    rmdir(g_fast);
    return sl_test_finish();
}
