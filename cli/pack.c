/* `sluice pack`: cuts a GGUF model into per-layer shard files with a
 * manifest (model/pack_write.h), which every command that takes -m MODEL
 * then accepts in place of the GGUF.
 *
 * With --quant the model is first re-quantized by `sluice quantize`
 * (cli/quantize.c, compute/requant.h: the same choice of types per tensor)
 * into a temporary GGUF beside the output directory, which is packed and
 * then removed: the pack's manifest records the re-quantization, and its
 * header describes the new types. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "model/gguf.h"
#include "model/pack_write.h"

static void help(FILE *out)
{
    fprintf(out, "usage: sluice pack -m MODEL.gguf -o DIR [--compress none|lz4|zstd[:LEVEL]] [--quant g2|g3|g4]\n"
                 "                   [--group 128|64|32]\n\n"
                 "Writes the model as a packed directory: one shard file per layer (and one\n"
                 "for the head, one for the embedding and other tensors), each unit 4 KiB-aligned\n"
                 "for direct I/O and checksummed, described by DIR/" SL_PACK_MANIFEST ". Every\n"
                 "command that takes -m MODEL accepts DIR; the output is identical to the GGUF's.\n\n"
                 "  -m, --model PATH     the GGUF model\n"
                 "  -o, --output DIR     the directory to create (it must not exist or be empty)\n"
                 "      --compress C     none (default), lz4, zstd or zstd:LEVEL (1..22, default 3);\n"
                 "                       a unit that compresses by less than 1/32 is stored as it is\n"
                 "      --quant T        re-quantize the matrices to sluice's grouped low-bit type T\n"
                 "                       (g2, g3, g4: 2, 3, 4 bits per weight) first, as `sluice quantize`\n"
                 "                       does (the output projection keeps 8 bits); needs room for the\n"
                 "                       re-quantized model twice while it runs\n"
                 "      --group N        weights per group of --quant: 128 (default), 64 or 32\n"
                 "  -h, --help           this text\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Removes what a failed pack left in a directory that was empty or absent
 * before: every entry is ours. */
static void remove_partial(const char *dir, bool existed)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path)
            unlink(path);
    closedir(d);
    if (!existed)
        rmdir(dir);
}

static bool dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)))
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

/* Re-quantizes `model` into the GGUF `out` with `sluice quantize`. Returns
 * its exit status. */
static int requantize(const char *model, const char *out, const char *type, long long group)
{
    char group_s[16];
    snprintf(group_s, sizeof group_s, "%lld", group);
    char *qargv[] = {"quantize", "-m", (char *)model, "-o", (char *)out, "--type", (char *)type, "--group", group_s,
                     NULL};
    return sl_cmd_quantize(9, qargv);
}

int sl_cmd_pack(int argc, char **argv)
{
    enum { OPT_COMPRESS = 256, OPT_QUANT, OPT_GROUP };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"output", required_argument, 0, 'o'},
                                         {"compress", required_argument, 0, OPT_COMPRESS},
                                         {"quant", required_argument, 0, OPT_QUANT},
                                         {"group", required_argument, 0, OPT_GROUP},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *model = NULL, *dir = NULL, *quant = NULL;
    long long group = 0;
    sl_pack_opts po = {.codec = SL_PACK_CODEC_NONE};
    int c;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'o': dir = optarg; break;
        case OPT_QUANT:
            if (strcmp(optarg, "g2") && strcmp(optarg, "g3") && strcmp(optarg, "g4")) {
                fprintf(stderr, "sluice pack: --quant expects g2, g3 or g4, got '%s'\n", optarg);
                return 2;
            }
            quant = optarg;
            break;
        case OPT_GROUP:
            if (sl_cli_int("--group", optarg, 32, 128, &group))
                return 2;
            if (group != 32 && group != 64 && group != 128) {
                fprintf(stderr, "sluice pack: --group must be 32, 64 or 128, got %lld\n", group);
                return 2;
            }
            break;
        case OPT_COMPRESS:
            if (sl_pack_parse_codec(optarg, &po)) {
                fprintf(stderr, "sluice pack: --compress expects none, lz4, zstd or zstd:LEVEL (1..22), got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (!model || !dir || optind != argc || (group && !quant)) {
        fprintf(stderr, "sluice pack: %s\n",
                optind != argc ? "unexpected argument"
                : group && !quant ? "--group goes with --quant"
                                  : "-m MODEL and -o DIR are required");
        help(stderr);
        return 2;
    }
    struct stat st;
    bool existed = stat(dir, &st) == 0;
    if (existed && (!S_ISDIR(st.st_mode) || !dir_empty(dir))) {
        fprintf(stderr, "sluice pack: %s exists and is not an empty directory; pack into a new one\n", dir);
        return 1;
    }
    double t0 = now_s();
    char tmp[4096], requant[32];
    const char *src = model;
    if (quant) {
        /* The temporary GGUF goes beside DIR (same file system), not in it:
         * the packer wants DIR empty. */
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/')
            n--;
        if ((size_t)snprintf(tmp, sizeof tmp, "%.*s.requant-%d.gguf", (int)n, dir, (int)getpid()) >= sizeof tmp) {
            fprintf(stderr, "sluice pack: the output path is too long\n");
            return 2;
        }
        if (!group)
            group = 128;
        snprintf(requant, sizeof requant, "%s/%lld", quant, group);
        po.requant = requant;
        int qrc = requantize(model, tmp, quant, group);
        if (qrc) {
            unlink(tmp);
            fprintf(stderr, "sluice pack: re-quantizing %s failed (see the message above)\n", model);
            return qrc;
        }
        src = tmp;
    }
    sl_gguf *g;
    int rc = sl_gguf_open(src, &g);
    const char *base = strrchr(model, '/');
    sl_pack_stats ps;
    if (rc == 0) {
        rc = sl_pack_write(g, base ? base + 1 : model, dir, &po, &ps);
        sl_gguf_close(g);
    }
    if (quant)
        unlink(tmp);
    double t = now_s() - t0;
    if (rc) {
        remove_partial(dir, existed);
        fprintf(stderr, "sluice pack: packing %s failed (see the message above)\n", model);
        return 1;
    }
    printf("packed %s into %s%s%s: %u units in %u shard files, %s; %.1f MiB of weights stored in %.1f MiB "
           "(%u units compressed), %.1f MiB in all, in %.1f s\n",
           model, dir, quant ? ", re-quantized to " : "", quant ? requant : "", ps.n_units, ps.n_files,
           sl_pack_codec_name(po.codec), ps.payload_bytes / 1048576.0, ps.stored_bytes / 1048576.0, ps.n_compressed,
           ps.dir_bytes / 1048576.0, t);
    return 0;
}
