/* `sluice quantize`: writes a copy of a GGUF model with its matrices in
 * another tensor type: sluice's grouped low-bit types (compute/lowbit.h) or
 * any GGUF type sluice can encode, from any type sluice can read.
 *
 * Which tensor gets which type is compute/requant.h's rule (shared with
 * `sluice pack`). Metadata is copied entry by entry except
 * `general.file_type`, which names the reference toolchain's type mixes and
 * would be wrong (it is rewritten for the GGUF types that have a number).
 * Tensor data is streamed: each tensor is converted in chunks of rows by the
 * pool's threads and written in order, so memory use is a few chunks
 * whatever the model's size. The output is written under a temporary name
 * beside the target and renamed into place only when complete; a failure
 * removes it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "compute/lowbit.h"
#include "compute/pool.h"
#include "compute/requant.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "model/gguf_write.h"

/* Elements converted per chunk (at least one row): a few MiB of floats. */
#define CHUNK_ELEMS ((int64_t)1 << 20)

static void help(FILE *out)
{
    fprintf(out,
            "usage: sluice quantize -m IN.gguf -o OUT.gguf --type TYPE [options]\n\n"
            "Writes a copy of the model with its weight matrices in TYPE. Vectors (norms,\n"
            "biases) and MoE routers keep their type; the output projection gets Q8_0\n"
            "(when TYPE has fewer bits) and the token embedding TYPE, unless told\n"
            "otherwise. A row length TYPE's blocks do not divide falls back to smaller\n"
            "groups (low-bit types), then Q4_K->Q4_1, Q6_K->Q8_0, then Q8_0, then F16.\n\n"
            "  -m, --model PATH       the model to read (any type sluice reads)\n"
            "  -o, --output PATH      where to write (replaced only once complete)\n"
            "      --type TYPE        g2, g3, g4 (sluice's grouped low-bit types: 2, 3, 4 bits\n"
            "                         per weight, per-group scale and zero point), or\n"
            "                         f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k\n"
            "      --group N          low-bit group size: 128 (default), 64 or 32; rows\n"
            "                         that N does not divide take the next smaller group\n"
            "      --output-type TYPE type of the output projection (also g2_64 etc.)\n"
            "      --embd-type TYPE   type of an untied token embedding\n"
            "      --fit search|minmax  low-bit encoder: least-squares search over\n"
            "                         clipping ranges (default), or scale = (max-min)/(2^b-1)\n"
            "                         and zero point = min as they are\n"
            "  -t, --threads N        encoding threads (default: all cores)\n"
            "  -h, --help             this text\n");
}

/* GGUF's general.file_type number of a file of one type, or -1 when the
 * reference toolchain has none for it (the low-bit types, Q4_K alone). */
static int ftype_of(uint32_t type)
{
    switch (type) {
    case SL_F32: return 0;
    case SL_F16: return 1;
    case SL_Q4_0: return 2;
    case SL_Q4_1: return 3;
    case SL_Q8_0: return 7;
    case SL_Q5_0: return 8;
    case SL_Q5_1: return 9;
    case SL_Q6_K: return 18;
    case SL_BF16: return 32;
    default: return -1;
    }
}

/* A type name: g2/g3/g4 (group `group`), g4_64 and the like, or a dtype
 * name sluice can encode, any case. Returns UINT32_MAX (after a message)
 * otherwise. */
static uint32_t parse_type(const char *flag, const char *s, int group)
{
    if ((s[0] == 'g' || s[0] == 'G') && s[1] >= '2' && s[1] <= '4' && s[2] == '\0')
        return sl_lowbit_type(s[1] - '0', group);
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++) {
        const sl_dtype_info *info = sl_dtype_get(t);
        if (info && !strcasecmp(info->name, s)) {
            if (sl_requant_can_encode(t))
                return t;
            fprintf(stderr, "sluice quantize: %s %s: sluice reads this type but cannot write it\n", flag, s);
            return UINT32_MAX;
        }
    }
    fprintf(stderr, "sluice quantize: %s expects g2, g3, g4, g2_64, ..., f32, f16, bf16, q8_0, q4_0, q4_1, "
                    "q5_0, q5_1, q4_k or q6_k; got '%s'\n",
            flag, s);
    return UINT32_MAX;
}

/* ---- metadata ------------------------------------------------------------------ */

/* Appends one array (nested arrays recursively); key NULL inside an array. */
static int copy_arr(sl_gguf_writer *w, const char *key, const sl_gguf_arr *a)
{
    int rc;
    if (a->type != SL_GGUF_STRING && a->type != SL_GGUF_ARRAY && a->type != SL_GGUF_BOOL)
        return sl_gguf_writer_add_arr(w, key, a->type, a->data, a->count);
    if ((rc = sl_gguf_writer_arr_begin(w, key, a->type)))
        return rc;
    for (uint64_t i = 0; i < a->count && rc == 0; i++) {
        if (a->type == SL_GGUF_STRING) {
            const sl_str s = sl_gguf_arr_str(a, i);
            rc = sl_gguf_writer_add_strn(w, NULL, s.ptr, s.len);
        } else if (a->type == SL_GGUF_BOOL) {
            rc = sl_gguf_writer_add_bool(w, NULL, sl_gguf_arr_i64(a, i) != 0);
        } else {
            sl_gguf_arr sub;
            sl_gguf_arr_arr(a, i, &sub);
            rc = copy_arr(w, NULL, &sub);
        }
    }
    return rc ? rc : sl_gguf_writer_arr_end(w);
}

static int copy_kv(sl_gguf_writer *w, const sl_gguf *g, uint64_t i, const char *key)
{
    const sl_gguf_vtype type = sl_gguf_kv_type(g, i);
    uint64_t u = 0;
    int64_t s = 0;
    double f = 0;
    bool b = false;
    sl_str str;
    sl_gguf_arr arr;
    int rc;
    switch (type) {
    case SL_GGUF_U8:
    case SL_GGUF_U16:
    case SL_GGUF_U32:
    case SL_GGUF_U64:
        if ((rc = sl_gguf_kv_u64(g, i, &u)))
            return rc;
        return type == SL_GGUF_U8    ? sl_gguf_writer_add_u8(w, key, (uint8_t)u)
               : type == SL_GGUF_U16 ? sl_gguf_writer_add_u16(w, key, (uint16_t)u)
               : type == SL_GGUF_U32 ? sl_gguf_writer_add_u32(w, key, (uint32_t)u)
                                     : sl_gguf_writer_add_u64(w, key, u);
    case SL_GGUF_I8:
    case SL_GGUF_I16:
    case SL_GGUF_I32:
    case SL_GGUF_I64:
        if ((rc = sl_gguf_kv_i64(g, i, &s)))
            return rc;
        return type == SL_GGUF_I8    ? sl_gguf_writer_add_i8(w, key, (int8_t)s)
               : type == SL_GGUF_I16 ? sl_gguf_writer_add_i16(w, key, (int16_t)s)
               : type == SL_GGUF_I32 ? sl_gguf_writer_add_i32(w, key, (int32_t)s)
                                     : sl_gguf_writer_add_i64(w, key, s);
    case SL_GGUF_F32:
    case SL_GGUF_F64:
        /* float -> double -> float is exact */
        if ((rc = sl_gguf_kv_f64(g, i, &f)))
            return rc;
        return type == SL_GGUF_F32 ? sl_gguf_writer_add_f32(w, key, (float)f) : sl_gguf_writer_add_f64(w, key, f);
    case SL_GGUF_BOOL:
        if ((rc = sl_gguf_get_bool(g, key, &b)))
            return rc;
        return sl_gguf_writer_add_bool(w, key, b);
    case SL_GGUF_STRING:
        if ((rc = sl_gguf_kv_str(g, i, &str)))
            return rc;
        return sl_gguf_writer_add_strn(w, key, str.ptr, str.len);
    case SL_GGUF_ARRAY:
        if ((rc = sl_gguf_kv_arr(g, i, &arr)))
            return rc;
        return copy_arr(w, key, &arr);
    default:
        return -SL_ETYPE;
    }
}

/* Copies every entry but general.file_type, then writes that for `type`
 * when the reference toolchain has a number for a file of it. */
static int copy_metadata(sl_gguf_writer *w, const sl_gguf *g, uint32_t type)
{
    for (uint64_t i = 0; i < sl_gguf_kv_count(g); i++) {
        const sl_str k = sl_gguf_kv_key(g, i);
        char key[1024];
        if (k.len >= sizeof key || memchr(k.ptr, '\0', k.len)) {
            fprintf(stderr, "sluice quantize: metadata key '%.*s' is too long or holds a NUL byte\n",
                    (int)(k.len > 64 ? 64 : k.len), k.ptr);
            return -1;
        }
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        if (!strcmp(key, "general.file_type"))
            continue;
        if (copy_kv(w, g, i, key)) {
            fprintf(stderr, "sluice quantize: cannot copy metadata '%s' (see above)\n", key);
            return -1;
        }
    }
    const int ft = ftype_of(type);
    return ft >= 0 ? sl_gguf_writer_add_u32(w, "general.file_type", (uint32_t)ft) : 0;
}

/* ---- tensor data ------------------------------------------------------------------ */

/* One chunk of rows of one tensor, converted by the pool. */
typedef struct conv_job {
    uint32_t src_type, dst_type;
    const uint8_t *src;
    uint8_t *dst;
    int64_t ne0;
    size_t src_row, dst_row;
    sl_lowbit_fit fit;
    float **tmp; /* one CHUNK_ELEMS (or one row) buffer per worker */
    _Atomic int rc;
} conv_job;

static void conv_rows(void *ctx, int64_t begin, int64_t end, uint32_t worker)
{
    conv_job *j = ctx;
    const int rc = sl_requant_convert(j->src_type, j->src + (size_t)begin * j->src_row, j->dst_type,
                                      j->dst + (size_t)begin * j->dst_row, (end - begin) * j->ne0, j->fit,
                                      j->tmp[worker]);
    if (rc)
        atomic_store(&j->rc, rc);
}

typedef struct plan {
    uint32_t *types;        /* per tensor */
    int64_t max_chunk_elems; /* largest chunk any tensor converts at once */
    size_t buf_bytes;       /* largest converted chunk, in the new type */
} plan;

/* Rows of a tensor converted at once: CHUNK_ELEMS worth, at least one. */
static int64_t chunk_rows(int64_t ne0)
{
    return ne0 >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / ne0;
}

static int write_tensors(sl_gguf_writer *w, const sl_gguf *g, const plan *p, sl_pool *pool, float **tmp,
                         uint8_t *buf, sl_lowbit_fit fit)
{
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        const int64_t ne0 = t->ne[0];
        int64_t rows = 1;
        for (int d = 1; d < SL_GGUF_MAX_DIMS; d++)
            rows *= t->ne[d];
        if (ne0 == 0 || rows == 0)
            continue;
        conv_job j = {.src_type = t->type,
                      .dst_type = p->types[i],
                      .src = sl_gguf_tensor_data(g, t),
                      .dst = buf,
                      .ne0 = ne0,
                      .src_row = (size_t)sl_dtype_bytes(t->type, (uint64_t)ne0),
                      .dst_row = (size_t)sl_dtype_bytes(p->types[i], (uint64_t)ne0),
                      .fit = fit,
                      .tmp = tmp};
        const int64_t step = chunk_rows(ne0);
        for (int64_t r = 0; r < rows; r += step) {
            const int64_t nr = rows - r < step ? rows - r : step;
            atomic_init(&j.rc, 0);
            sl_pool_run(pool, nr, conv_rows, &j);
            if (atomic_load(&j.rc)) {
                fprintf(stderr, "sluice quantize: tensor %.*s cannot be written as %s (see above)\n",
                        (int)t->name.len, t->name.ptr, sl_dtype_name(j.dst_type));
                return -1;
            }
            if (sl_gguf_writer_write_data(w, buf, (size_t)nr * j.dst_row)) {
                fprintf(stderr, "sluice quantize: writing failed (disk full?); see above\n");
                return -1;
            }
            j.src += (size_t)nr * j.src_row;
        }
    }
    return 0;
}

/* ---- the command ---------------------------------------------------------------------- */

typedef struct args {
    const char *in, *out;
    const char *type_s, *output_s, *embd_s;
    long long group, threads;
    sl_lowbit_fit fit;
} args;

static int parse_args(int argc, char **argv, args *a, sl_requant_opts *o)
{
    enum { OPT_TYPE = 256, OPT_GROUP, OPT_OUTPUT_TYPE, OPT_EMBD_TYPE, OPT_FIT };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"output", required_argument, 0, 'o'},
                                         {"type", required_argument, 0, OPT_TYPE},
                                         {"group", required_argument, 0, OPT_GROUP},
                                         {"output-type", required_argument, 0, OPT_OUTPUT_TYPE},
                                         {"embd-type", required_argument, 0, OPT_EMBD_TYPE},
                                         {"fit", required_argument, 0, OPT_FIT},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    *a = (args){.group = 128, .threads = sl_cli_default_threads(), .fit = SL_LOWBIT_FIT_SEARCH};
    optind = 0; /* a full reset: `sluice pack` calls this after its own getopt */
    int c;
    while ((c = getopt_long(argc, argv, "m:o:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->in = optarg; break;
        case 'o': a->out = optarg; break;
        case OPT_TYPE: a->type_s = optarg; break;
        case OPT_OUTPUT_TYPE: a->output_s = optarg; break;
        case OPT_EMBD_TYPE: a->embd_s = optarg; break;
        case OPT_GROUP:
            if (sl_cli_int("--group", optarg, 32, 128, &a->group))
                return 2;
            if (a->group != 32 && a->group != 64 && a->group != 128) {
                fprintf(stderr, "sluice quantize: --group must be 32, 64 or 128, got %lld\n", a->group);
                return 2;
            }
            break;
        case OPT_FIT:
            if (!strcmp(optarg, "search") || !strcmp(optarg, "minmax")) {
                a->fit = optarg[0] == 's' ? SL_LOWBIT_FIT_SEARCH : SL_LOWBIT_FIT_MINMAX;
                break;
            }
            fprintf(stderr, "sluice quantize: --fit expects search or minmax, got '%s'\n", optarg);
            return 2;
        case 't':
            if (sl_cli_int("--threads", optarg, 1, 1024, &a->threads))
                return 2;
            break;
        case 'h': return 1;
        default: return 2;
        }
    }
    if (optind != argc || !a->in || !a->out || !a->type_s) {
        fprintf(stderr, "sluice quantize: %s\n",
                optind != argc ? "unexpected argument" : "-m, -o and --type are required");
        return 2;
    }
    o->type = parse_type("--type", a->type_s, (int)a->group);
    o->output_type = a->output_s ? parse_type("--output-type", a->output_s, (int)a->group) : SL_REQUANT_DEFAULT;
    o->embd_type = a->embd_s ? parse_type("--embd-type", a->embd_s, (int)a->group) : SL_REQUANT_DEFAULT;
    o->fit = a->fit;
    if (o->type == UINT32_MAX || (a->output_s && o->output_type == UINT32_MAX) ||
        (a->embd_s && o->embd_type == UINT32_MAX))
        return 2;
    return 0;
}

/* Checks every tensor's type can be read and decides the new types. */
static int make_plan(const sl_gguf *g, const sl_requant_opts *o, plan *p)
{
    const uint64_t n = sl_gguf_tensor_count(g);
    p->types = calloc(n ? n : 1, sizeof *p->types);
    p->max_chunk_elems = CHUNK_ELEMS;
    if (!p->types) {
        fprintf(stderr, "sluice quantize: out of memory\n");
        return -1;
    }
    const bool tied = sl_gguf_tensor_find(g, "output.weight") == NULL;
    for (uint64_t i = 0; i < n; i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 255 ? t->name.len : 255), t->name.ptr);
        p->types[i] = sl_requant_choose(o, name, t->n_dims, t->ne, t->type, tied);
        if (p->types[i] != t->type && !sl_quant_to_float(t->type)) {
            fprintf(stderr, "sluice quantize: tensor %s has type %s, which sluice cannot read\n", name,
                    sl_dtype_name(t->type));
            return -1;
        }
        if (t->ne[0] > 0) {
            const int64_t elems = chunk_rows(t->ne[0]) * t->ne[0];
            const size_t bytes = (size_t)chunk_rows(t->ne[0]) * sl_dtype_bytes(p->types[i], (uint64_t)t->ne[0]);
            p->max_chunk_elems = elems > p->max_chunk_elems ? elems : p->max_chunk_elems;
            p->buf_bytes = bytes > p->buf_bytes ? bytes : p->buf_bytes;
        }
    }
    return 0;
}

static int define_tensors(sl_gguf_writer *w, const sl_gguf *g, const plan *p)
{
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 255 ? t->name.len : 255), t->name.ptr);
        if (sl_gguf_writer_add_tensor(w, name, t->n_dims, t->ne, p->types[i])) {
            fprintf(stderr, "sluice quantize: cannot declare tensor %s (see above)\n", name);
            return -1;
        }
    }
    return 0;
}

/* Prints, per type of the new file, its tensors and bytes, and the bits
 * per weight over all tensors. */
static void print_summary(const sl_gguf *g, const plan *p, const char *path, double seconds)
{
    uint64_t count[SL_DTYPE_COUNT] = {0}, bytes[SL_DTYPE_COUNT] = {0}, total = 0, elems = 0;
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        uint64_t ne = 1;
        for (int d = 0; d < SL_GGUF_MAX_DIMS; d++)
            ne *= (uint64_t)t->ne[d];
        const uint64_t b = sl_dtype_bytes(p->types[i], ne);
        count[p->types[i]]++;
        bytes[p->types[i]] += b;
        total += b;
        elems += ne;
    }
    printf("wrote %s in %.1f s: %.3f MiB of tensors, %.3f bits per weight\n", path, seconds,
           (double)total / (1 << 20), elems ? 8.0 * (double)total / (double)elems : 0.0);
    for (uint32_t t = 0; t < SL_DTYPE_COUNT; t++)
        if (count[t])
            printf("  %-8s %4llu tensors, %.3f MiB\n", sl_dtype_name(t), (unsigned long long)count[t],
                   (double)bytes[t] / (1 << 20));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int sl_cmd_quantize(int argc, char **argv)
{
    args a;
    sl_requant_opts o;
    const int prc = parse_args(argc, argv, &a, &o);
    if (prc == 1)
        help(stdout);
    else if (prc)
        help(stderr);
    if (prc)
        return prc == 1 ? 0 : 2;

    int status = 1;
    sl_gguf *g = NULL;
    sl_pool *pool = NULL;
    sl_gguf_writer *w = NULL;
    plan p = {0};
    float **tmp = NULL;
    uint8_t *buf = NULL;
    char *tmp_path = NULL;
    int fd = -1;
    const uint32_t threads = (uint32_t)a.threads;
    const double t0 = now_s();

    if (sl_gguf_open(a.in, &g)) {
        fprintf(stderr, "sluice quantize: cannot read %s (see above)\n", a.in);
        goto out;
    }
    if (make_plan(g, &o, &p) || sl_pool_new(threads, &pool))
        goto out;
    /* A chunk of floats per thread, and one chunk of output. */
    tmp = calloc(threads, sizeof *tmp);
    buf = malloc(p.buf_bytes ? p.buf_bytes : 1);
    bool mem_ok = tmp && buf;
    for (uint32_t i = 0; mem_ok && i < threads; i++)
        mem_ok = (tmp[i] = malloc((size_t)p.max_chunk_elems * sizeof(float))) != NULL;
    if (!mem_ok) {
        fprintf(stderr, "sluice quantize: out of memory\n");
        goto out;
    }
    struct stat st;
    if (stat(a.out, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "sluice quantize: %s exists and is not a regular file\n", a.out);
        goto out;
    }
    const size_t tlen = strlen(a.out) + 32;
    if (!(tmp_path = malloc(tlen)))
        goto out;
    snprintf(tmp_path, tlen, "%s.partial-%ld", a.out, (long)getpid());
    fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        fprintf(stderr, "sluice quantize: cannot create %s: %s\n", tmp_path, strerror(errno));
        goto out;
    }
    bool ok = sl_gguf_writer_new_fd(fd, &w) == 0 && copy_metadata(w, g, o.type) == 0 && define_tensors(w, g, &p) == 0;
    if (ok && sl_gguf_writer_write_header(w)) {
        fprintf(stderr, "sluice quantize: writing the header of %s failed (see above)\n", tmp_path);
        ok = false;
    }
    ok = ok && write_tensors(w, g, &p, pool, tmp, buf, o.fit) == 0 && sl_gguf_writer_finish(w) == 0;
    if (ok && (fdatasync(fd) != 0 || close(fd) != 0)) {
        fprintf(stderr, "sluice quantize: writing %s failed: %s\n", tmp_path, strerror(errno));
        ok = false;
    } else if (ok) {
        fd = -1;
    }
    if (ok && rename(tmp_path, a.out) != 0) {
        fprintf(stderr, "sluice quantize: cannot rename %s to %s: %s\n", tmp_path, a.out, strerror(errno));
        ok = false;
    }
    if (!ok) {
        unlink(tmp_path);
        goto out;
    }
    print_summary(g, &p, a.out, now_s() - t0);
    status = 0;
out:
    if (fd >= 0)
        close(fd);
    sl_gguf_writer_free(w);
    for (uint32_t i = 0; tmp && i < threads; i++)
        free(tmp[i]);
    free(tmp);
    free(buf);
    free(tmp_path);
    free(p.types);
    sl_pool_free(pool);
    sl_gguf_close(g);
    return status;
}
