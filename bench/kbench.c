/* sl-kbench: speed of the matrix products (compute/matmul.h) with the kernel
 * table this CPU gets (or SL_CPU's), on random weights in memory.
 *
 *  decode: one token through matrices much larger than the caches, as a
 *          decode step streams a model: reported as GB/s of weights read,
 *          to be set against sl-membw;
 *  prompt: a batch of tokens through one matrix, as prompt processing does:
 *          reported as multiply-adds per second and as the tokens/s a model
 *          of --params weights would get from that rate alone.
 *
 * Best of --reps passes. A measuring tool, never a test.
 *
 * usage: sl-kbench [--type q4_0] [--threads N] [--rows R] [--cols C]
 *                  [--mib M] [--tokens T] [--reps N] [--params P] */
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/half.h"
#include "common/log.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/pool.h"
#include "compute/quant.h"
#include "model/dtype.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared machine, a
 * compute-bound rate per CPU-second is steadier than one per wall second. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Weights: quantize normal-ish floats, a row at a time (valid blocks, any type
 * with a quantizer); for types without one, random bytes. */
static void fill(uint32_t type, uint8_t *dst, int64_t rows, int64_t cols)
{
    const size_t row_bytes = (size_t)sl_dtype_bytes(type, (uint64_t)cols);
    const sl_from_float_fn from = sl_quant_from_float(type);
    float *x = malloc((size_t)cols * sizeof *x);
    for (int64_t r = 0; r < rows; r++) {
        if (from && r < 64) {
            for (int64_t i = 0; i < cols; i++)
                x[i] = (float)((double)(rng() >> 11) * 0x1p-53 - 0.5) * 0.04f;
            from(x, dst + (size_t)r * row_bytes, cols);
        } else if (from) {
            memcpy(dst + (size_t)r * row_bytes, dst + (size_t)(r % 64) * row_bytes, row_bytes);
        } else {
            for (size_t i = 0; i < row_bytes; i++)
                dst[(size_t)r * row_bytes + i] = (uint8_t)rng();
        }
    }
    free(x);
}

/* A plain read of n words by the pool's threads, each its contiguous share
 * (the sum is kept so the loads are not optimised away). */
typedef struct read_job {
    const uint64_t *p;
    size_t n;
    int64_t threads;
    uint64_t sink[64];
} read_job;

static void read_chunk(void *ctx, int64_t begin, int64_t end, uint32_t worker)
{
    (void)end;
    read_job *j = ctx;
    const size_t per = j->n / (size_t)j->threads / 8 * 8, b = per * (size_t)begin;
    uint64_t s[8] = {0};
    for (size_t i = b; i < b + per; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += j->p[i + k];
    j->sink[worker % 64] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static uint32_t type_by_name(const char *name)
{
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        const sl_dtype_info *i = sl_dtype_get(t);
        if (i && i->supported && !strcasecmp(i->name, name))
            return t;
    }
    return SL_DTYPE_COUNT;
}

int main(int argc, char **argv)
{
    const char *tname = "q4_0", *file = NULL;
    long threads = sysconf(_SC_NPROCESSORS_ONLN), rows = 11008, cols = 4096, mib = 1024, tokens = 256,
         reps = 5;
    double params = 6.74e9;
    static const struct option opts[] = {{"type", required_argument, 0, 'y'},
                                         {"threads", required_argument, 0, 't'},
                                         {"rows", required_argument, 0, 'r'},
                                         {"cols", required_argument, 0, 'c'},
                                         {"mib", required_argument, 0, 'm'},
                                         {"tokens", required_argument, 0, 'n'},
                                         {"reps", required_argument, 0, 'k'},
                                         {"params", required_argument, 0, 'p'},
                                         {"file", required_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'y':
            tname = optarg;
            break;
        case 't':
            threads = atol(optarg);
            break;
        case 'r':
            rows = atol(optarg);
            break;
        case 'c':
            cols = atol(optarg);
            break;
        case 'm':
            mib = atol(optarg);
            break;
        case 'n':
            tokens = atol(optarg);
            break;
        case 'k':
            reps = atol(optarg);
            break;
        case 'p':
            params = atof(optarg);
            break;
        case 'f':
            file = optarg;
            break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: sl-kbench [--type q4_0] [--threads N] [--rows R] [--cols C] [--mib M]\n"
                    "                 [--tokens T] [--reps N] [--params P] [--file GGUF]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    const uint32_t type = type_by_name(tname);
    if (type == SL_DTYPE_COUNT || threads < 1 || rows < 1 || cols < 1 || tokens < 1 || reps < 1 || mib < 0 ||
        sl_dtype_bytes(type, (uint64_t)cols) == 0) {
        fprintf(stderr, "sl-kbench: bad arguments (type %s, cols %ld must be a multiple of its block)\n",
                tname, cols);
        return 2;
    }
    const sl_kernels *k = sl_kernels_get();
    sl_pool *pool = NULL;
    if (!k || sl_pool_new((uint32_t)threads, &pool))
        return 1;
    const size_t row_bytes = (size_t)sl_dtype_bytes(type, (uint64_t)cols);
    const size_t mat_bytes = row_bytes * (size_t)rows;
    const int n_mats = (int)(((size_t)mib << 20) / mat_bytes) + 1;
    uint8_t *w = NULL;
    float *x = malloc((size_t)tokens * (size_t)cols * sizeof *x);
    float *y = NULL;
    const size_t qbytes = sl_matmul_scratch_bytes(cols, (uint32_t)tokens, 1);
    void *q = NULL;
    /* 2 MiB-aligned and advised into huge pages, as a model's weights are
     * once mapped: on the kernels measured, the page cache holds a large
     * file in 2 MiB folios and maps them whole (FilePmdMapped). */
    if (posix_memalign((void **)&w, 2u << 20, mat_bytes * (size_t)n_mats) ||
        posix_memalign((void **)&y, 64, (size_t)tokens * (size_t)rows * sizeof *y) ||
        posix_memalign(&q, 64, qbytes) || !x) {
        fprintf(stderr, "sl-kbench: out of memory\n");
        return 1;
    }
    madvise(w, mat_bytes * (size_t)n_mats, MADV_HUGEPAGE); /* best effort */
    if (file) {
        /* Decode over a mapped file's bytes (taken as rows of the type),
         * to compare memory that is a file mapping with anonymous memory. */
        int fd = open(file, O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) || (size_t)st.st_size < mat_bytes * (size_t)n_mats) {
            fprintf(stderr, "sl-kbench: %s: cannot map %zu bytes\n", file, mat_bytes * (size_t)n_mats);
            return 1;
        }
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (map == MAP_FAILED)
            return 1;
        free(w);
        w = map;
        printf("weights: the first %.1f MiB of %s, mapped\n", (double)mat_bytes * n_mats / 1048576.0, file);
    } else {
        for (int m = 0; m < n_mats; m++)
            fill(type, w + (size_t)m * mat_bytes, rows, cols);
    }
    for (long i = 0; i < tokens * cols; i++)
        x[i] = (float)((double)(rng() >> 11) * 0x1p-53 - 0.5);
    printf("kernels %s, %ld threads, %s %ld x %ld (%.1f MiB a matrix)\n", k->name, threads,
           sl_dtype_name(type), rows, cols, (double)mat_bytes / 1048576.0);

    /* decode: one token, every matrix in turn; each pass is followed by a
     * plain read of the same bytes on the same threads, so that the ratio is
     * measured under the same conditions (this machine may be shared). */
    double best = INFINITY, best_read = INFINITY;
    read_job rj = {
        .p = (const uint64_t *)w, .n = mat_bytes * (size_t)n_mats / 8, .threads = (int64_t)threads};
    for (long r = 0; r < reps; r++) {
        double t0 = now_s();
        for (int m = 0; m < n_mats; m++) {
            sl_tensor t = {.type = type, .ne = {cols, rows, 1, 1}, .data = w + (size_t)m * mat_bytes};
            sl_matmul_op op = {&t, x, y};
            sl_matmul(pool, k, &op, 1, 1, q, qbytes);
        }
        best = fmin(best, now_s() - t0);
        t0 = now_s();
        sl_pool_run(pool, threads, read_chunk, &rj);
        best_read = fmin(best_read, now_s() - t0);
    }
    const double gbs = (double)mat_bytes * n_mats / best / 1e9;
    const double read_gbs = (double)mat_bytes * n_mats / best_read / 1e9;
    printf(
        "decode: %d matrices, %.1f MiB: %.2f GB/s of weights; plain read %.2f GB/s; %.0f%% (best of %ld)\n",
        n_mats, (double)mat_bytes * n_mats / 1048576.0, gbs, read_gbs, 100.0 * gbs / read_gbs, reps);

    /* prompt: `tokens` tokens through one matrix */
    best = INFINITY;
    double best_cpu = INFINITY;
    for (long r = 0; r < reps; r++) {
        sl_tensor t = {.type = type, .ne = {cols, rows, 1, 1}, .data = w};
        sl_matmul_op op = {&t, x, y};
        const double t0 = now_s(), c0 = cpu_s();
        sl_matmul(pool, k, &op, 1, (uint32_t)tokens, q, qbytes);
        best = fmin(best, now_s() - t0);
        best_cpu = fmin(best_cpu, cpu_s() - c0);
    }
    const double macs = (double)rows * cols * tokens / best;
    printf("prompt: %ld tokens: %.1f GMAC/s, %.1f tokens/s for %.3g weights (best of %ld); "
           "%.1f GMAC per CPU-second\n",
           tokens, macs / 1e9, macs / params, params, reps, (double)rows * cols * tokens / best_cpu / 1e9);
    if (!file)
        free(w);
    free(x);
    free(y);
    free(q);
    sl_pool_free(pool);
    return 0;
}
