/* `sluice synth`: writes a llama-shaped GGUF of seeded random weights, for
 * testing and benchmarking at sizes no test fixture has (7B, 13B, 70B, and
 * mixture-of-experts shapes: Mixtral 8x7B, and 128 experts of which 8 are
 * used, the shape of Qwen3-30B-A3B).
 *
 * The file is streamed: the header (metadata, a generated SentencePiece
 * vocabulary, tensor infos) goes out first through model/gguf_write.h, then
 * every tensor's data is generated and quantized in chunks of CHUNK_ELEMS
 * elements by worker threads and written in order by the main thread, so
 * memory use is a few chunks whatever the file size. Every chunk is seeded
 * from (seed, tensor, chunk) alone, so the bytes do not depend on the number
 * of threads or on timing: the same seed gives the same file.
 *
 * A regular output file is written under a temporary name beside the target
 * and renamed into place only when complete; on any failure (or SIGINT /
 * SIGTERM) the partial file is removed. Written ranges are pushed to disk and
 * dropped from the page cache as the writing goes, so a file larger than RAM
 * does not evict everything else (and a benchmark that reads it next starts
 * cold). A special file (/dev/null, a pipe) is written as it is. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "compute/quant.h"
#include "model/dtype.h"
#include "model/gguf_write.h"
#include "model/model.h"

/* Elements per generated chunk: a multiple of every block size, big enough
 * that a write(2) moves at least half a MiB even for Q4_0. */
#define CHUNK_ELEMS ((int64_t)1 << 20)
/* Bytes written between pushes of the file to disk (see the top). */
#define FLUSH_WINDOW ((uint64_t)64 << 20)
#define MAX_THREADS 64
#define MAX_VOCAB (1u << 20)
#define WEIGHT_STD 0.02f /* of every matrix; keeps activations of deep stacks finite */
#define NORM_STD 0.02f   /* of the norm weights around 1 */

static const char SPM_SPACE[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's word boundary */

/* ---- shapes and types ------------------------------------------------------ */

/* ff is the FFN width (of each expert, for a mixture of experts). */
typedef struct shape {
    long long layers, dim, ff, heads, kv_heads, vocab, ctx, experts, experts_used;
} shape;
#define SHAPE_FIELDS 9

static const struct {
    const char *name;
    shape s;
} k_shapes[] = {
    {"7b", {32, 4096, 11008, 32, 32, 32000, 4096, 0, 0}},
    {"13b", {40, 5120, 13824, 40, 40, 32000, 4096, 0, 0}},
    {"70b", {80, 8192, 28672, 64, 8, 32000, 4096, 0, 0}},
    {"8x7b", {32, 4096, 14336, 32, 8, 32000, 32768, 8, 2}},
    {"30b-a3b", {48, 2048, 768, 32, 4, 32000, 4096, 128, 8}},
};

/* A --type: one tensor type for every matrix, or the Q4_K_M mixture. The
 * ftype is GGUF's general.file_type number for it. */
#define TYPE_Q4_K_M 1000u
static const struct {
    const char *name;
    uint32_t type;
    uint32_t ftype;
} k_types[] = {
    {"f32", SL_F32, 0},    {"f16", SL_F16, 1},    {"bf16", SL_BF16, 32},       {"q8_0", SL_Q8_0, 7},
    {"q4_0", SL_Q4_0, 2},  {"q4_1", SL_Q4_1, 3},  {"q5_0", SL_Q5_0, 8},        {"q5_1", SL_Q5_1, 9},
    {"q4_k", SL_Q4_K, 14}, {"q6_k", SL_Q6_K, 18}, {"q4_k_m", TYPE_Q4_K_M, 15},
};

/* One tensor to write: a norm (F32 vector around 1), a matrix, or the
 * matrices of a layer's experts (ne2 of them). */
typedef struct tdesc {
    char name[64];
    int64_t ne0, ne1, ne2;
    uint32_t type;
    bool norm;
} tdesc;

/* The Q4_K_M rule of the reference toolchain for attn_v and ffn_down: more
 * bits in the first and last eighth of the layers and every third between. */
static bool more_bits(long long il, long long n)
{
    return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2;
}

static uint32_t matrix_type(uint32_t t, const char *role, long long il, long long n_layer)
{
    if (t != TYPE_Q4_K_M)
        return t;
    if (!strcmp(role, "output"))
        return SL_Q6_K;
    if ((!strcmp(role, "attn_v") || !strcmp(role, "ffn_down")) && more_bits(il, n_layer))
        return SL_Q6_K;
    return SL_Q4_K;
}

/* Describes tensor `role` ("token_embd", "attn_q", ...) of layer il, or a
 * non-layer tensor when il < 0. */
static void describe(tdesc *d, const char *role, long long il, int64_t ne0, int64_t ne1, bool norm,
                     uint32_t type, long long n_layer)
{
    if (il < 0)
        snprintf(d->name, sizeof d->name, "%s.weight", role);
    else
        snprintf(d->name, sizeof d->name, "blk.%lld.%s.weight", il, role);
    d->ne0 = ne0;
    d->ne1 = ne1;
    d->ne2 = 1;
    d->norm = norm;
    d->type = norm ? SL_F32 : matrix_type(type, role, il, n_layer);
}

/* The tensors of a mixture-of-experts layer, in the order converted files
 * have them (sorted by name: the router and ffn_norm between the expert
 * tensors, so a layer without its experts is several file ranges). The
 * router stays F32, as quantizers leave it. */
static size_t moe_layer(const shape *s, uint32_t type, long long il, tdesc *t)
{
    const long long hd = s->dim / s->heads, L = s->layers;
    size_t n = 0;
    describe(&t[n++], "attn_k", il, s->dim, s->kv_heads * hd, false, type, L);
    describe(&t[n++], "attn_norm", il, s->dim, 1, true, type, L);
    describe(&t[n++], "attn_output", il, s->heads * hd, s->dim, false, type, L);
    describe(&t[n++], "attn_q", il, s->dim, s->heads * hd, false, type, L);
    describe(&t[n++], "attn_v", il, s->dim, s->kv_heads * hd, false, type, L);
    describe(&t[n], "ffn_down_exps", il, s->ff, s->dim, false, type, L);
    t[n++].ne2 = s->experts;
    describe(&t[n], "ffn_gate_exps", il, s->dim, s->ff, false, type, L);
    t[n++].ne2 = s->experts;
    describe(&t[n], "ffn_gate_inp", il, s->dim, s->experts, false, type, L);
    t[n++].type = SL_F32;
    describe(&t[n++], "ffn_norm", il, s->dim, 1, true, type, L);
    describe(&t[n], "ffn_up_exps", il, s->dim, s->ff, false, type, L);
    t[n++].ne2 = s->experts;
    return n;
}

/* Fills t[] (room for 3 + 10 * layers) in file order and returns the count:
 * the non-layer tensors first, so that they form one compact unit, then
 * layer after layer. */
static size_t plan_tensors(const shape *s, uint32_t type, tdesc *t)
{
    const long long hd = s->dim / s->heads, L = s->layers;
    size_t n = 0;
    describe(&t[n++], "token_embd", -1, s->dim, s->vocab, false, type, L);
    describe(&t[n++], "output_norm", -1, s->dim, 1, true, type, L);
    describe(&t[n++], "output", -1, s->dim, s->vocab, false, type, L);
    for (long long il = 0; il < L; il++) {
        if (s->experts) {
            n += moe_layer(s, type, il, t + n);
            continue;
        }
        describe(&t[n++], "attn_norm", il, s->dim, 1, true, type, L);
        describe(&t[n++], "attn_q", il, s->dim, s->heads * hd, false, type, L);
        describe(&t[n++], "attn_k", il, s->dim, s->kv_heads * hd, false, type, L);
        describe(&t[n++], "attn_v", il, s->dim, s->kv_heads * hd, false, type, L);
        describe(&t[n++], "attn_output", il, s->heads * hd, s->dim, false, type, L);
        describe(&t[n++], "ffn_norm", il, s->dim, 1, true, type, L);
        describe(&t[n++], "ffn_gate", il, s->dim, s->ff, false, type, L);
        describe(&t[n++], "ffn_up", il, s->dim, s->ff, false, type, L);
        describe(&t[n++], "ffn_down", il, s->ff, s->dim, false, type, L);
    }
    return n;
}

/* ---- the vocabulary ---------------------------------------------------------
 * <unk>, <s>, </s>; the 256 byte tokens <0xXX> (so that any text tokenizes);
 * then pieces: each printable ASCII character alone and after the word
 * boundary, the boundary alone, then lowercase strings of growing length
 * with and without the boundary. Scores fall with the id, so shorter
 * pieces merge first. The same for every seed. */

enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_BYTE = 6 };

typedef struct vocab {
    char **text;
    float *score;
    int32_t *type;
    uint32_t n;
} vocab;

static void vocab_free(vocab *v)
{
    for (uint32_t i = 0; v->text && i < v->n; i++)
        free(v->text[i]);
    free(v->text);
    free(v->score);
    free(v->type);
}

static int vocab_push(vocab *v, uint32_t cap, const char *s, int32_t type)
{
    if (v->n == cap)
        return 0;
    char *c = strdup(s);
    if (!c)
        return -1;
    v->text[v->n] = c;
    v->type[v->n] = type;
    v->score[v->n] = type == TOK_NORMAL ? -(float)v->n : 0.0f;
    v->n++;
    return 0;
}

static int vocab_build(uint32_t n, vocab *v)
{
    memset(v, 0, sizeof *v);
    v->text = calloc(n, sizeof *v->text);
    v->score = calloc(n, sizeof *v->score);
    v->type = calloc(n, sizeof *v->type);
    if (!v->text || !v->score || !v->type)
        return -1;
    int rc = vocab_push(v, n, "<unk>", TOK_UNKNOWN) | vocab_push(v, n, "<s>", TOK_CONTROL) |
             vocab_push(v, n, "</s>", TOK_CONTROL);
    char buf[32];
    for (int b = 0; b < 256; b++) {
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        rc |= vocab_push(v, n, buf, TOK_BYTE);
    }
    rc |= vocab_push(v, n, SPM_SPACE, TOK_NORMAL);
    for (int c = 0x21; c < 0x7f; c++) {
        snprintf(buf, sizeof buf, "%c", c);
        rc |= vocab_push(v, n, buf, TOK_NORMAL);
        snprintf(buf, sizeof buf, "%s%c", SPM_SPACE, c);
        rc |= vocab_push(v, n, buf, TOK_NORMAL);
    }
    /* Lowercase strings of length 2, 3, ...: 26^len each, counted in base 26. */
    for (int len = 2; v->n < n && rc == 0; len++) {
        SL_ASSERT(len <= 8);
        int digit[8] = {0};
        for (;;) {
            char word[9];
            for (int i = 0; i < len; i++)
                word[i] = (char)('a' + digit[i]);
            word[len] = 0;
            snprintf(buf, sizeof buf, "%s%s", SPM_SPACE, word);
            rc |= vocab_push(v, n, buf, TOK_NORMAL);
            rc |= vocab_push(v, n, word, TOK_NORMAL);
            if (v->n == n || rc)
                break;
            int i = len - 1;
            while (i >= 0 && ++digit[i] == 26)
                digit[i--] = 0;
            if (i < 0)
                break;
        }
    }
    return rc;
}

/* ---- random numbers ----------------------------------------------------------
 * Each chunk has its own generator state, seeded by hashing (seed, tensor,
 * chunk) with splitmix64's finaliser, so chunks are independent and
 * reproducible in any order. Inside a chunk a Weyl sequence goes through a
 * 64x64->128-bit multiply-fold (the construction of the wyrand generator):
 * one multiply per 64 random bits, which keeps generation several times
 * faster than quantization. Each 32-bit half gives one weight as the sum of
 * its four bytes, approximately normal (Irwin-Hall, bounded at +-3.5
 * standard deviations, which suits the quantizers). */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t next64(uint64_t *s)
{
    *s += 0xa0761d6478bd642full;
    unsigned __int128 t = (unsigned __int128)*s * (*s ^ 0xe7037ed1a0b428dbull);
    return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* Mean and standard deviation of the sum of four uniform bytes. */
#define BYTES4_MEAN 510
#define BYTES4_STD 147.80f

static inline int32_t sum_bytes(uint32_t z)
{
    return (int32_t)(z & 255) + (int32_t)(z >> 8 & 255) + (int32_t)(z >> 16 & 255) + (int32_t)(z >> 24);
}

/* n is even: every chunk is a whole number of blocks. */
static void fill_chunk(float *x, int64_t n, uint64_t key, float mean, float std)
{
    const float scale = std / BYTES4_STD;
    uint64_t s = key;
    for (int64_t i = 0; i < n; i += 2) {
        uint64_t z = next64(&s);
        x[i] = mean + (float)(sum_bytes((uint32_t)z) - BYTES4_MEAN) * scale;
        x[i + 1] = mean + (float)(sum_bytes((uint32_t)(z >> 32)) - BYTES4_MEAN) * scale;
    }
}

/* ---- the generator: workers fill a ring of slots, main writes in order ----
 * Job j goes to slot j % n_slots. A worker may start job j once job
 * j - n_slots has been written (j < written + n_slots); the main thread may
 * write job j once the slot says it holds it (done == j + 1). Tying each
 * slot to one job number, rather than to "free", keeps a later job from
 * taking the slot that an earlier one is waiting for. */

typedef struct slot {
    uint64_t done; /* under mu: 1 + the job whose bytes the slot holds, 0 for none */
    size_t bytes;
    uint8_t *out;
} slot;

typedef struct job_ref {
    uint32_t tensor;
    int64_t begin, end; /* elements */
} job_ref;

typedef struct gen {
    const tdesc *t;
    uint64_t seed;
    job_ref *jobs; /* owned */
    uint64_t n_jobs;

    pthread_mutex_t mu;
    pthread_cond_t filled, freed;
    uint64_t next_job; /* under mu: the next job to hand out */
    uint64_t written;  /* under mu: jobs written so far */
    bool stop;         /* under mu */
    slot *slots;
    uint32_t n_slots;
} gen;

typedef struct worker {
    gen *g;
    float *scratch;
    pthread_t th;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    gen *g = w->g;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        uint64_t j = g->next_job;
        if (j >= g->n_jobs || g->stop) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        g->next_job++;
        slot *s = &g->slots[j % g->n_slots];
        while (j >= g->written + g->n_slots && !g->stop)
            pthread_cond_wait(&g->freed, &g->mu);
        if (g->stop) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        pthread_mutex_unlock(&g->mu);

        const job_ref *jr = &g->jobs[j];
        const tdesc *t = &g->t[jr->tensor];
        int64_t n = jr->end - jr->begin;
        uint64_t key =
            mix64(g->seed ^ mix64(((uint64_t)jr->tensor << 32) + (uint64_t)(jr->begin / CHUNK_ELEMS)));
        fill_chunk(w->scratch, n, key, t->norm ? 1.0f : 0.0f, t->norm ? NORM_STD : WEIGHT_STD);
        sl_quant_from_float(t->type)(w->scratch, s->out, n);
        size_t bytes = (size_t)sl_dtype_bytes(t->type, (uint64_t)n);

        pthread_mutex_lock(&g->mu);
        s->bytes = bytes;
        s->done = j + 1;
        pthread_cond_broadcast(&g->filled);
        pthread_mutex_unlock(&g->mu);
    }
}

/* ---- output file ----------------------------------------------------------- */

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    g_interrupted = sig;
}

typedef struct out_file {
    const char *path;
    char *tmp; /* the name written to, renamed to path at the end; NULL for special files */
    int fd;
    uint64_t flushed; /* bytes handed to writeback so far */
    uint64_t dropped; /* bytes dropped from the page cache so far */
} out_file;

/* Pushes complete windows of written bytes to disk and drops the window
 * before the previous one from the page cache (by then its writeback has
 * had a window's time to finish, so waiting for it rarely stalls). */
static void out_push(out_file *o)
{
    if (!o->tmp)
        return;
    off_t pos = lseek(o->fd, 0, SEEK_CUR);
    if (pos < 0)
        return;
    uint64_t written = (uint64_t)pos;
    while (written - o->flushed >= FLUSH_WINDOW) {
        sync_file_range(o->fd, (off_t)o->flushed, (off_t)FLUSH_WINDOW, SYNC_FILE_RANGE_WRITE);
        o->flushed += FLUSH_WINDOW;
        if (o->flushed - o->dropped >= 2 * FLUSH_WINDOW) {
            sync_file_range(o->fd, (off_t)o->dropped, (off_t)FLUSH_WINDOW,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
            posix_fadvise(o->fd, (off_t)o->dropped, (off_t)FLUSH_WINDOW, POSIX_FADV_DONTNEED);
            o->dropped += FLUSH_WINDOW;
        }
    }
}

static int out_open(out_file *o, const char *path)
{
    memset(o, 0, sizeof *o);
    o->path = path;
    o->fd = -1;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "sluice synth: %s is a directory\n", path);
            return -1;
        }
        o->fd = open(path, O_WRONLY | O_CLOEXEC);
        if (o->fd < 0) {
            fprintf(stderr, "sluice synth: cannot open %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    size_t n = strlen(path) + 32;
    o->tmp = malloc(n);
    if (!o->tmp)
        return -1;
    snprintf(o->tmp, n, "%s.partial-%ld", path, (long)getpid());
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (o->fd < 0) {
        fprintf(stderr, "sluice synth: cannot create %s: %s\n", o->tmp, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return -1;
    }
    return 0;
}

/* Refuses up front a file that cannot fit, rather than failing hours in. */
static int out_check_space(const out_file *o, uint64_t need_bytes)
{
    struct statvfs vs;
    if (o->tmp && fstatvfs(o->fd, &vs) == 0 && (uint64_t)vs.f_bavail * vs.f_frsize < need_bytes) {
        fprintf(stderr, "sluice synth: %s needs %.2f GiB but its file system has %.2f GiB free\n", o->path,
                (double)need_bytes / (1 << 30), (double)vs.f_bavail * vs.f_frsize / (1 << 30));
        return -1;
    }
    return 0;
}

/* Completes (sync, rename) or, when ok is false, removes the partial file. */
static int out_close(out_file *o, bool ok)
{
    if (o->fd >= 0 && o->tmp && ok && fdatasync(o->fd) != 0) {
        fprintf(stderr, "sluice synth: writing %s failed: %s\n", o->tmp, strerror(errno));
        ok = false;
    }
    if (o->fd >= 0 && close(o->fd) != 0 && ok) {
        fprintf(stderr, "sluice synth: writing %s failed: %s\n", o->tmp ? o->tmp : o->path, strerror(errno));
        ok = false;
    }
    o->fd = -1;
    if (o->tmp && ok && rename(o->tmp, o->path) != 0) {
        fprintf(stderr, "sluice synth: cannot rename %s to %s: %s\n", o->tmp, o->path, strerror(errno));
        ok = false;
    }
    if (o->tmp && !ok)
        unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    return ok ? 0 : -1;
}

/* ---- the command ------------------------------------------------------------ */

static void help(FILE *out)
{
    fprintf(out, "usage: sluice synth -o FILE --shape 7b|13b|70b|8x7b|30b-a3b|custom --type TYPE [options]\n\n"
                 "Writes a llama-architecture GGUF model of seeded random weights (normal-ish,\n"
                 "standard deviation 0.02; norms around 1) with a generated SentencePiece\n"
                 "vocabulary, streaming it to disk: any size is fine as long as the disk can\n"
                 "hold it. The same seed and options give a byte-identical file.\n\n"
                 "  -o, --output FILE    where to write (replaced only once complete)\n"
                 "      --shape S        7b (dim 4096, 32 layers, 32 heads, ff 11008),\n"
                 "                       13b (5120, 40, 40, 13824), 70b (8192, 80, 64 heads,\n"
                 "                       8 kv heads, 28672); mixtures of experts 8x7b (Mixtral:\n"
                 "                       4096, 32, 32 heads, 8 kv heads, 8 experts of ff 14336,\n"
                 "                       2 used per token) and 30b-a3b (Qwen3-30B-A3B's sizes:\n"
                 "                       2048, 48, 32 heads, 4 kv heads, 128 experts of ff 768,\n"
                 "                       8 used); all with a 32000-token vocabulary; or custom\n"
                 "                       (then --layers, --dim, --ff, --heads are needed)\n"
                 "      --type T         every matrix in T: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0\n"
                 "                       q5_1 q4_k q6_k; or q4_k_m (Q4_K, with Q6_K for output\n"
                 "                       and for attn_v and ffn_down in some layers); norms F32\n"
                 "  -s, --seed S         random seed (default 1)\n"
                 "      --layers N --dim D --ff F --heads H --kv-heads K --vocab V --ctx C\n"
                 "                       override the shape (kv-heads defaults to heads, vocab\n"
                 "                       to 32000, ctx, the trained context length, to 4096)\n"
                 "      --experts N --experts-used K\n"
                 "                       a mixture of N experts of width ff per layer, K used\n"
                 "                       per token (Mixtral-style tensors; --experts 0: dense)\n"
                 "  -t, --threads N      generating threads (default: all cores)\n"
                 "  -h, --help           this text\n");
}

typedef struct synth_args {
    const char *out, *shape_name;
    int type_idx;
    unsigned long long seed;
    shape s;
    long long threads;
} synth_args;

/* Returns 0, or 2 after a message (usage error), or 1 for --help. */
static int parse_args(int argc, char **argv, synth_args *a)
{
    enum { O_SHAPE = 256, O_TYPE, O_LAYERS, O_DIM, O_FF, O_HEADS, O_KV, O_VOCAB, O_CTX, O_EXPERTS, O_USED };
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"shape", required_argument, 0, O_SHAPE},
                                         {"type", required_argument, 0, O_TYPE},
                                         {"seed", required_argument, 0, 's'},
                                         {"layers", required_argument, 0, O_LAYERS},
                                         {"dim", required_argument, 0, O_DIM},
                                         {"ff", required_argument, 0, O_FF},
                                         {"heads", required_argument, 0, O_HEADS},
                                         {"kv-heads", required_argument, 0, O_KV},
                                         {"vocab", required_argument, 0, O_VOCAB},
                                         {"ctx", required_argument, 0, O_CTX},
                                         {"experts", required_argument, 0, O_EXPERTS},
                                         {"experts-used", required_argument, 0, O_USED},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    memset(a, 0, sizeof *a);
    a->type_idx = -1;
    a->seed = 1;
    a->threads = sl_cli_default_threads();
    shape over = {-1, -1, -1, -1, -1, -1, -1, -1, -1};
    const char *type_name = NULL;
    long long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:s:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->out = optarg;
            break;
        case O_SHAPE:
            a->shape_name = optarg;
            break;
        case O_TYPE:
            type_name = optarg;
            break;
        case 's':
            if (sl_cli_int("--seed", optarg, 0, INT64_MAX, &v))
                return 2;
            a->seed = (unsigned long long)v;
            break;
        case O_LAYERS:
            if (sl_cli_int("--layers", optarg, 1, 4096, &over.layers))
                return 2;
            break;
        case O_DIM:
            if (sl_cli_int("--dim", optarg, 1, 65536, &over.dim))
                return 2;
            break;
        case O_FF:
            if (sl_cli_int("--ff", optarg, 1, 262144, &over.ff))
                return 2;
            break;
        case O_HEADS:
            if (sl_cli_int("--heads", optarg, 1, 1024, &over.heads))
                return 2;
            break;
        case O_KV:
            if (sl_cli_int("--kv-heads", optarg, 1, 1024, &over.kv_heads))
                return 2;
            break;
        case O_VOCAB:
            if (sl_cli_int("--vocab", optarg, 259, MAX_VOCAB, &over.vocab))
                return 2;
            break;
        case O_CTX:
            if (sl_cli_int("--ctx", optarg, 1, 1 << 24, &over.ctx))
                return 2;
            break;
        case O_EXPERTS:
            if (sl_cli_int("--experts", optarg, 0, SL_MAX_EXPERTS, &over.experts))
                return 2;
            break;
        case O_USED:
            if (sl_cli_int("--experts-used", optarg, 1, SL_MAX_EXPERTS_USED, &over.experts_used))
                return 2;
            break;
        case 't':
            if (sl_cli_int("--threads", optarg, 1, MAX_THREADS, &a->threads))
                return 2;
            break;
        case 'h':
            help(stdout);
            return 1;
        default:
            help(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sluice synth: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!a->out || !a->shape_name || !type_name) {
        fprintf(stderr, "sluice synth: -o FILE, --shape and --type are required\n");
        help(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (!strcmp(type_name, k_types[i].name))
            a->type_idx = (int)i;
    if (a->type_idx < 0) {
        fprintf(stderr,
                "sluice synth: --type '%s' is not one of f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q6_k "
                "q4_k_m\n",
                type_name);
        return 2;
    }
    shape s = {-1, -1, -1, -1, -1, 32000, 4096, 0, 0};
    bool known = !strcmp(a->shape_name, "custom");
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (!strcmp(a->shape_name, k_shapes[i].name)) {
            s = k_shapes[i].s;
            known = true;
        }
    if (!known) {
        fprintf(stderr, "sluice synth: --shape '%s' is not one of 7b 13b 70b 8x7b 30b-a3b custom\n", a->shape_name);
        return 2;
    }
    long long *sv = &s.layers, *ov = &over.layers;
    for (int i = 0; i < SHAPE_FIELDS; i++)
        if (ov[i] >= 0)
            sv[i] = ov[i];
    if (s.kv_heads < 0)
        s.kv_heads = s.heads;
    if (s.layers < 0 || s.dim < 0 || s.ff < 0 || s.heads < 0) {
        fprintf(stderr, "sluice synth: --shape custom needs --layers, --dim, --ff and --heads\n");
        return 2;
    }
    if (s.dim % s.heads || (s.dim / s.heads) % 2 || s.dim / s.heads > 512) {
        fprintf(stderr, "sluice synth: --dim %lld / --heads %lld must be an even head size of at most 512\n",
                s.dim, s.heads);
        return 2;
    }
    if (s.heads % s.kv_heads) {
        fprintf(stderr, "sluice synth: --heads %lld is not a multiple of --kv-heads %lld\n", s.heads,
                s.kv_heads);
        return 2;
    }
    if (s.experts == 1 || (s.experts && (s.experts_used < 1 || s.experts_used > s.experts))) {
        fprintf(stderr, "sluice synth: --experts %lld needs --experts-used in 1..%lld (or --experts 0: dense)\n",
                s.experts, s.experts);
        return 2;
    }
    if (!s.experts)
        s.experts_used = 0;
    uint32_t t = k_types[a->type_idx].type;
    long long block = t == TYPE_Q4_K_M ? SL_QK_K : (long long)sl_dtype_get(t)->block;
    if (s.dim % block || s.ff % block) {
        fprintf(stderr,
                "sluice synth: --type %s needs --dim (%lld) and --ff (%lld) to be multiples of %lld\n",
                type_name, s.dim, s.ff, block);
        return 2;
    }
    a->s = s;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Declares metadata, vocabulary and tensors. Returns 0 or a logged error. */
static int define_model(sl_gguf_writer *w, const synth_args *a, const tdesc *t, size_t n_t, const vocab *voc)
{
    char name[128];
    snprintf(name, sizeof name, "sluice synth %s %s seed %llu", a->shape_name, k_types[a->type_idx].name,
             a->seed);
    const shape *s = &a->s;
    int rc = sl_gguf_writer_add_str(w, "general.architecture", "llama");
    rc = rc ? rc : sl_gguf_writer_add_str(w, "general.name", name);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "general.file_type", k_types[a->type_idx].ftype);
    rc = rc ? rc : sl_gguf_writer_add_u64(w, "sluice.synth.seed", a->seed);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)s->ctx);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)s->dim);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)s->layers);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)s->ff);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)s->heads);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)s->kv_heads);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)(s->dim / s->heads));
    rc = rc ? rc : sl_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f);
    rc = rc ? rc : sl_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.vocab_size", voc->n);
    if (s->experts) {
        rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.expert_count", (uint32_t)s->experts);
        rc = rc ? rc : sl_gguf_writer_add_u32(w, "llama.expert_used_count", (uint32_t)s->experts_used);
    }
    rc = rc ? rc : sl_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    rc = rc ? rc : sl_gguf_writer_add_str(w, "tokenizer.ggml.pre", "default");
    rc = rc ? rc
            : sl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)voc->text, voc->n);
    rc = rc ? rc : sl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", SL_GGUF_F32, voc->score, voc->n);
    rc = rc ? rc : sl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", SL_GGUF_I32, voc->type, voc->n);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    rc = rc ? rc : sl_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    rc = rc ? rc : sl_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    rc = rc ? rc : sl_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false);
    for (size_t i = 0; i < n_t && rc == 0; i++) {
        int64_t ne[3] = {t[i].ne0, t[i].ne1, t[i].ne2};
        rc = sl_gguf_writer_add_tensor(w, t[i].name, t[i].norm ? 1 : t[i].ne2 > 1 ? 3 : 2, ne, t[i].type);
    }
    return rc;
}

/* Builds the job list: each tensor cut into chunks of CHUNK_ELEMS. */
static job_ref *plan_jobs(const tdesc *t, size_t n_t, uint64_t *n_jobs, size_t *max_bytes)
{
    uint64_t n = 0;
    *max_bytes = 0;
    for (size_t i = 0; i < n_t; i++) {
        int64_t ne = t[i].ne0 * t[i].ne1 * t[i].ne2;
        n += (uint64_t)((ne + CHUNK_ELEMS - 1) / CHUNK_ELEMS);
        size_t b = (size_t)sl_dtype_bytes(t[i].type, (uint64_t)(ne < CHUNK_ELEMS ? ne : CHUNK_ELEMS));
        *max_bytes = b > *max_bytes ? b : *max_bytes;
    }
    job_ref *jobs = malloc(n * sizeof *jobs);
    if (!jobs)
        return NULL;
    uint64_t k = 0;
    for (size_t i = 0; i < n_t; i++) {
        int64_t ne = t[i].ne0 * t[i].ne1 * t[i].ne2;
        for (int64_t b = 0; b < ne; b += CHUNK_ELEMS)
            jobs[k++] = (job_ref){(uint32_t)i, b, b + CHUNK_ELEMS < ne ? b + CHUNK_ELEMS : ne};
    }
    *n_jobs = n;
    return jobs;
}

/* Runs the workers and writes every chunk in order. Returns 0, or -1 after
 * a message (write failure or interrupted). */
static int write_data(sl_gguf_writer *w, out_file *o, gen *g, worker *wk, uint32_t n_workers, uint64_t total)
{
    uint32_t started = 0;
    int rc = 0;
    /* Signals go to the main thread only, which checks between chunks. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (; started < n_workers; started++)
        if (pthread_create(&wk[started].th, NULL, worker_main, &wk[started]) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started == 0) {
        fprintf(stderr, "sluice synth: cannot start a thread\n");
        return -1;
    }

    uint64_t written = 0;
    bool tty = isatty(2);
    int last_pct = -1;
    for (uint64_t j = 0; j < g->n_jobs && rc == 0; j++) {
        slot *s = &g->slots[j % g->n_slots];
        pthread_mutex_lock(&g->mu);
        while (s->done != j + 1)
            pthread_cond_wait(&g->filled, &g->mu);
        pthread_mutex_unlock(&g->mu);

        if (sl_gguf_writer_write_data(w, s->out, s->bytes) != 0) {
            fprintf(stderr, "sluice synth: writing %s failed (disk full?); see the message above\n", o->path);
            rc = -1;
        } else if (g_interrupted) {
            fprintf(stderr, "sluice synth: interrupted (signal %d)\n", (int)g_interrupted);
            rc = -1;
        }
        written += s->bytes;
        out_push(o);
        int pct = (int)(100.0 * (double)written / (double)total);
        if (tty && pct != last_pct) {
            fprintf(stderr, "\rsluice synth: %3d%%", pct);
            last_pct = pct;
        }

        pthread_mutex_lock(&g->mu);
        g->written = j + 1;
        if (rc)
            g->stop = true;
        pthread_cond_broadcast(&g->freed);
        pthread_mutex_unlock(&g->mu);
    }
    if (tty)
        fprintf(stderr, "\r");
    for (uint32_t i = 0; i < started; i++)
        pthread_join(wk[i].th, NULL);
    return rc;
}

int sl_cmd_synth(int argc, char **argv)
{
    synth_args a;
    int prc = parse_args(argc, argv, &a);
    if (prc)
        return prc == 1 ? 0 : 2;
    uint32_t n_workers = (uint32_t)a.threads;
    size_t n_t = 3 + 10 * (size_t)a.s.layers;
    tdesc *t = calloc(n_t, sizeof *t);
    vocab voc = {0};
    gen g = {.mu = PTHREAD_MUTEX_INITIALIZER,
             .filled = PTHREAD_COND_INITIALIZER,
             .freed = PTHREAD_COND_INITIALIZER};
    worker *wk = calloc(n_workers, sizeof *wk);
    sl_gguf_writer *w = NULL;
    out_file o = {.fd = -1};
    int status = 1;

    /* Everything is allocated before the output file is touched. */
    bool mem_ok = t && wk && vocab_build((uint32_t)a.s.vocab, &voc) == 0;
    size_t max_bytes = 0;
    if (mem_ok) {
        n_t = plan_tensors(&a.s, k_types[a.type_idx].type, t);
        g.t = t;
        g.seed = a.seed;
        g.jobs = plan_jobs(t, n_t, &g.n_jobs, &max_bytes);
        g.n_slots = 2 * n_workers + 1;
        g.slots = calloc(g.n_slots, sizeof *g.slots);
        mem_ok = g.jobs && g.slots;
    }
    for (uint32_t i = 0; mem_ok && i < g.n_slots; i++)
        mem_ok = (g.slots[i].out = malloc(max_bytes)) != NULL;
    for (uint32_t i = 0; mem_ok && i < n_workers; i++) {
        wk[i].g = &g;
        mem_ok = (wk[i].scratch = malloc(CHUNK_ELEMS * sizeof(float))) != NULL;
    }
    if (!mem_ok) {
        fprintf(stderr, "sluice synth: out of memory\n");
        goto done;
    }

    struct sigaction sa = {0}, old_int, old_term, old_xfsz;
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    /* Past a file size limit, write(2) then fails with EFBIG, like on a full disk. */
    struct sigaction ign = {0};
    ign.sa_handler = SIG_IGN;
    sigaction(SIGXFSZ, &ign, &old_xfsz);

    double t0 = now_s();
    uint64_t file_size = 0;
    if (out_open(&o, a.out) == 0) {
        bool ok = sl_gguf_writer_new_fd(o.fd, &w) == 0 && define_model(w, &a, t, n_t, &voc) == 0;
        ok = ok && out_check_space(&o, sl_gguf_writer_data_remaining(w)) == 0;
        if (ok && sl_gguf_writer_write_header(w) != 0) {
            fprintf(stderr, "sluice synth: writing the header of %s failed (see the message above)\n", a.out);
            ok = false;
        }
        ok = ok && write_data(w, &o, &g, wk, n_workers, sl_gguf_writer_data_remaining(w)) == 0;
        ok = ok && sl_gguf_writer_finish(w) == 0 && sl_gguf_writer_file_size(w, &file_size) == 0;
        if (out_close(&o, ok) == 0)
            status = 0;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGXFSZ, &old_xfsz, NULL);
    if (status == 0) {
        double dt = now_s() - t0;
        char experts[64] = "";
        if (a.s.experts)
            snprintf(experts, sizeof experts, ", %lld experts, %lld used", a.s.experts, a.s.experts_used);
        printf("wrote %s: llama, %s shape (%lld layers, dim %lld, ff %lld, %lld/%lld heads, vocab %lld%s), %s, "
               "seed %llu: %.3f GB in %.1f s (%.0f MB/s, %u threads)\n",
               a.out, a.shape_name, a.s.layers, a.s.dim, a.s.ff, a.s.heads, a.s.kv_heads, a.s.vocab, experts,
               k_types[a.type_idx].name, a.seed, (double)file_size / 1e9, dt,
               (double)file_size / 1e6 / (dt > 0 ? dt : 1e-9), n_workers);
    }

done:
    for (uint32_t i = 0; g.slots && i < g.n_slots; i++)
        free(g.slots[i].out);
    free(g.slots);
    for (uint32_t i = 0; wk && i < n_workers; i++)
        free(wk[i].scratch);
    free(wk);
    free(g.jobs);
    sl_gguf_writer_free(w);
    vocab_free(&voc);
    free(t);
    return status;
}
