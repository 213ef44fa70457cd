/* The packer; see pack_write.h for what it writes and pack.h for the
 * format. */
#include "model/pack_write.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/log.h"
#include "model/model.h"

#define DEFAULT_MIN_GAIN_DIV 32u

typedef struct wunit {
    sl_pack_unit u; /* name points at `name` */
    char name[128];
} wunit;

typedef struct wfile {
    char name[64];
    int fd;
    uint64_t size;
} wfile;

typedef struct packer {
    const sl_gguf *g;
    const char *dir;
    sl_pack_opts opts;
    wunit *units;
    uint32_t n_units, cap_units;
    wfile *files;
    uint32_t n_files, cap_files;
    uint8_t *payload, *packed;
    size_t payload_cap, packed_cap;
    ZSTD_CCtx *zstd;
} packer;

int sl_pack_parse_codec(const char *s, sl_pack_opts *opts)
{
    if (!strcmp(s, "none") || !strcmp(s, "lz4") || !strcmp(s, "zstd")) {
        opts->codec = s[0] == 'n' ? SL_PACK_CODEC_NONE : s[0] == 'l' ? SL_PACK_CODEC_LZ4 : SL_PACK_CODEC_ZSTD;
        opts->level = 0;
        return 0;
    }
    if (strncmp(s, "zstd:", 5) != 0)
        return -SL_EINVAL;
    char *end;
    errno = 0;
    long v = strtol(s + 5, &end, 10);
    if (errno || end == s + 5 || *end || v < 1 || v > ZSTD_maxCLevel())
        return -SL_EINVAL;
    opts->codec = SL_PACK_CODEC_ZSTD;
    opts->level = (int)v;
    return 0;
}

/* ---- the unit list -------------------------------------------------------- */

static int file_index(packer *pk, const char *name, uint32_t *out)
{
    for (uint32_t i = 0; i < pk->n_files; i++)
        if (!strcmp(pk->files[i].name, name)) {
            *out = i;
            return 0;
        }
    if (pk->n_files == pk->cap_files) {
        uint32_t cap = pk->cap_files ? 2 * pk->cap_files : 16;
        wfile *f = realloc(pk->files, cap * sizeof *f);
        if (!f)
            return -SL_ENOMEM;
        pk->files = f;
        pk->cap_files = cap;
    }
    wfile *f = &pk->files[pk->n_files];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->fd = -1;
    *out = pk->n_files++;
    return 0;
}

/* Appends a unit of kind `kind` with the given pieces. */
static int add_unit(packer *pk, sl_pack_kind kind, uint32_t layer, uint32_t expert, const char *name,
                    const char *file, const sl_pack_piece *pieces, uint32_t n_pieces)
{
    SL_ASSERT(n_pieces >= 1 && n_pieces <= SL_PACK_MAX_PIECES);
    if (pk->n_units == pk->cap_units) {
        uint32_t cap = pk->cap_units ? 2 * pk->cap_units : 64;
        wunit *u = realloc(pk->units, cap * sizeof *u);
        if (!u)
            return -SL_ENOMEM;
        pk->units = u;
        pk->cap_units = cap;
    }
    wunit *w = &pk->units[pk->n_units];
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    sl_pack_unit *u = &w->u;
    u->kind = kind;
    u->layer = layer;
    u->expert = expert;
    u->n_pieces = n_pieces;
    memcpy(u->pieces, pieces, n_pieces * sizeof *pieces);
    u->size = sl_pack_unit_layout(u);
    int rc = file_index(pk, file, &u->file);
    if (rc)
        return rc;
    pk->n_units++;
    return 0;
}

/* A unit of the model (its ranges are the pieces). */
static int add_model_unit(packer *pk, sl_pack_kind kind, const sl_unit *mu, const char *name, const char *file)
{
    _Static_assert(SL_UNIT_MAX_RANGES <= SL_PACK_MAX_PIECES, "a model unit's ranges must fit a pack unit");
    sl_pack_piece pieces[SL_PACK_MAX_PIECES];
    for (uint32_t i = 0; i < mu->n_ranges; i++)
        pieces[i] = (sl_pack_piece){mu->ranges[i].offset, mu->ranges[i].nbytes, 0};
    return add_unit(pk, kind, kind == SL_PACK_LAYER || kind == SL_PACK_EXPERT ? mu->layer : SL_PACK_NONE,
                    kind == SL_PACK_EXPERT ? mu->expert : SL_PACK_NONE, name, file, pieces, mu->n_ranges);
}

/* Whether the pieces of the units so far cover t's bytes (an expert tensor
 * is covered by one piece per expert): advance through t while some piece
 * holds the next byte. Quadratic, but on a model's few hundred units. */
static bool held(const packer *pk, const sl_gguf_tensor *t)
{
    uint64_t at = t->offset, end = t->offset + t->nbytes;
    for (bool moved = true; at < end && moved;) {
        moved = false;
        for (uint32_t i = 0; i < pk->n_units; i++)
            for (uint32_t k = 0; k < pk->units[i].u.n_pieces; k++) {
                const sl_pack_piece *p = &pk->units[i].u.pieces[k];
                if (p->offset <= at && at < p->offset + p->nbytes) {
                    at = p->offset + p->nbytes;
                    moved = true;
                }
            }
    }
    return at >= end;
}

/* Layers (each followed by its experts, in the layer's file), the head,
 * then whatever tensor none of them holds. */
static int plan_units(packer *pk, const sl_model *m)
{
    const sl_hparams *hp = sl_model_hparams(m);
    char name[64], file[64];
    int rc = 0;
    for (uint32_t il = 0; il < hp->n_layer && rc == 0; il++) {
        snprintf(name, sizeof name, "blk.%u", il);
        snprintf(file, sizeof file, "blk.%u.shard", il);
        rc = add_model_unit(pk, SL_PACK_LAYER, sl_model_layer_unit(m, il), name, file);
        for (uint32_t e = 0; e < hp->n_expert && rc == 0; e++) {
            sl_unit eu;
            sl_model_expert_unit(m, il, e, &eu);
            snprintf(name, sizeof name, "blk.%u.expert.%u", il, e);
            rc = add_model_unit(pk, SL_PACK_EXPERT, &eu, name, file);
        }
    }
    if (rc == 0)
        rc = add_model_unit(pk, SL_PACK_HEAD, sl_model_head_unit(m), "head", "head.shard");
    for (uint64_t i = 0; i < sl_gguf_tensor_count(pk->g) && rc == 0; i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(pk->g, i);
        if (t->nbytes == 0 || held(pk, t))
            continue;
        /* Tensors between the main units are stored as they are; two
         * outside them are never in one unit, so each is read alone. */
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        bool embd = sl_str_eq(t->name, "token_embd.weight");
        const sl_pack_piece piece = {t->offset, t->nbytes, 0};
        rc = add_unit(pk, embd ? SL_PACK_EMBD : SL_PACK_MISC, SL_PACK_NONE, SL_PACK_NONE, name, "globals.shard",
                      &piece, 1);
    }
    return rc;
}

/* ---- files ------------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t n, const char *path)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            SL_ERROR("writing %s failed: %s", path, k < 0 ? strerror(errno) : "no progress");
            return -SL_EIO;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0755) == 0)
        return 0;
    if (errno != EEXIST) {
        SL_ERROR("cannot create the directory %s: %s", dir, strerror(errno));
        return -SL_EIO;
    }
    DIR *d = opendir(dir);
    if (!d) {
        SL_ERROR("%s exists and is not a directory I can read: %s", dir, strerror(errno));
        return -SL_EINVAL;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            SL_ERROR("the directory %s is not empty (it has %s): pack into a new or empty directory", dir,
                     e->d_name);
            rc = -SL_EINVAL;
        }
    closedir(d);
    return rc;
}

static int path_of(const char *dir, const char *name, char *buf, size_t n)
{
    if ((size_t)snprintf(buf, n, "%s/%s", dir, name) >= n) {
        SL_ERROR("path %s/%s is too long", dir, name);
        return -SL_EINVAL;
    }
    return 0;
}

/* Appends the unit's stored bytes to its file, 4 KiB-aligned. */
static int append(packer *pk, sl_pack_unit *u, const void *data, uint64_t n)
{
    static const uint8_t zeros[SL_PACK_ALIGN];
    wfile *f = &pk->files[u->file];
    char path[4096];
    int rc = path_of(pk->dir, f->name, path, sizeof path);
    if (rc)
        return rc;
    if (f->fd < 0 && (f->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        SL_ERROR("cannot create %s: %s", path, strerror(errno));
        return -SL_EIO;
    }
    uint64_t pad = (SL_PACK_ALIGN - f->size % SL_PACK_ALIGN) % SL_PACK_ALIGN;
    if (pad && (rc = write_all(f->fd, zeros, (size_t)pad, path)))
        return rc;
    u->offset = f->size + pad;
    if ((rc = write_all(f->fd, data, (size_t)n, path)))
        return rc;
    f->size = u->offset + n;
    return 0;
}

/* Builds, compresses, checksums and writes one unit. */
static int write_unit(packer *pk, wunit *w, sl_pack_stats *st)
{
    sl_pack_unit *u = &w->u;
    const uint8_t *base = sl_gguf_base(pk->g);
    uint64_t at = 0; /* the payload up to here is written */
    for (uint32_t i = 0; i < u->n_pieces; i++) {
        const sl_pack_piece *pc = &u->pieces[i];
        memset(pk->payload + at, 0, (size_t)(pc->at - at));
        memcpy(pk->payload + pc->at, base + pc->offset, (size_t)pc->nbytes);
        at = pc->at + pc->nbytes;
    }
    SL_ASSERT(at == u->size);
    const uint8_t *stored = pk->payload;
    uint64_t n = u->size;
    u->codec = SL_PACK_CODEC_NONE;
    if (pk->opts.codec != SL_PACK_CODEC_NONE) {
        size_t c;
        if (pk->opts.codec == SL_PACK_CODEC_LZ4) {
            int k = LZ4_compress_default((const char *)pk->payload, (char *)pk->packed, (int)u->size,
                                         (int)pk->packed_cap);
            c = k > 0 ? (size_t)k : 0;
        } else {
            c = ZSTD_compressCCtx(pk->zstd, pk->packed, pk->packed_cap, pk->payload, (size_t)u->size,
                                  pk->opts.level);
            c = ZSTD_isError(c) ? 0 : c;
        }
        if (!c) {
            SL_ERROR("unit %s: %s compression of %llu bytes failed", w->name, sl_pack_codec_name(pk->opts.codec),
                     (unsigned long long)u->size);
            return -SL_EIO;
        }
        bool keep = pk->opts.min_gain_div == UINT32_MAX || c <= u->size - u->size / pk->opts.min_gain_div;
        if (keep) {
            stored = pk->packed;
            n = c;
            u->codec = pk->opts.codec;
            st->n_compressed++;
        }
    }
    u->stored = n;
    u->xxh3 = sl_pack_checksum(stored, (size_t)n);
    st->payload_bytes += u->size;
    st->stored_bytes += n;
    return append(pk, u, stored, n);
}

/* ---- the manifest ------------------------------------------------------------ */

static int pk_str(msgpack_packer *p, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(p, n) || msgpack_pack_str_body(p, s, n);
}

static int pack_unit(msgpack_packer *p, const sl_pack_unit *u)
{
    int rc = msgpack_pack_map(p, 11);
    rc |= pk_str(p, "name") | pk_str(p, u->name);
    rc |= pk_str(p, "kind") | pk_str(p, sl_pack_kind_name(u->kind));
    rc |= pk_str(p, "layer") | msgpack_pack_uint32(p, u->layer);
    rc |= pk_str(p, "expert") | msgpack_pack_uint32(p, u->expert);
    rc |= pk_str(p, "file") | msgpack_pack_uint32(p, u->file);
    rc |= pk_str(p, "offset") | msgpack_pack_uint64(p, u->offset);
    rc |= pk_str(p, "stored") | msgpack_pack_uint64(p, u->stored);
    rc |= pk_str(p, "size") | msgpack_pack_uint64(p, u->size);
    rc |= pk_str(p, "codec") | pk_str(p, sl_pack_codec_name(u->codec));
    rc |= pk_str(p, "xxh3") | msgpack_pack_uint64(p, u->xxh3);
    rc |= pk_str(p, "pieces") | msgpack_pack_array(p, u->n_pieces);
    for (uint32_t i = 0; i < u->n_pieces; i++)
        rc |= msgpack_pack_array(p, 2) | msgpack_pack_uint64(p, u->pieces[i].offset) |
              msgpack_pack_uint64(p, u->pieces[i].nbytes);
    return rc;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int write_manifest(packer *pk, const char *source, sl_pack_stats *st)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer p;
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    const char *requant = pk->opts.requant ? pk->opts.requant : "";
    int rc = msgpack_pack_map(&p, 6);
    rc |= pk_str(&p, "source") | pk_str(&p, source);
    rc |= pk_str(&p, "image_size") | msgpack_pack_uint64(&p, sl_gguf_file_size(pk->g));
    rc |= pk_str(&p, "header") | msgpack_pack_bin(&p, (size_t)sl_gguf_data_offset(pk->g)) |
          msgpack_pack_bin_body(&p, sl_gguf_base(pk->g), (size_t)sl_gguf_data_offset(pk->g));
    rc |= pk_str(&p, "requant") | pk_str(&p, requant);
    rc |= pk_str(&p, "files") | msgpack_pack_array(&p, pk->n_files);
    for (uint32_t i = 0; i < pk->n_files; i++)
        rc |= msgpack_pack_array(&p, 2) | pk_str(&p, pk->files[i].name) | msgpack_pack_uint64(&p, pk->files[i].size);
    rc |= pk_str(&p, "units") | msgpack_pack_array(&p, pk->n_units);
    for (uint32_t i = 0; i < pk->n_units; i++)
        rc |= pack_unit(&p, &pk->units[i].u);
    char path[4096], tmp[4096];
    int fd = -1;
    if (rc) {
        SL_ERROR("out of memory while encoding the manifest");
        rc = -SL_ENOMEM;
    } else if ((rc = path_of(pk->dir, SL_PACK_MANIFEST, path, sizeof path)) == 0 &&
               (rc = path_of(pk->dir, SL_PACK_MANIFEST ".tmp", tmp, sizeof tmp)) == 0) {
        uint8_t frame[SL_PACK_FRAME_BYTES];
        memcpy(frame, SL_PACK_MAGIC, 8);
        put_le(frame + 8, SL_PACK_VERSION, 4);
        put_le(frame + 12, 0, 4);
        put_le(frame + 16, sb.size, 8);
        put_le(frame + 24, sl_pack_checksum(sb.data, sb.size), 8);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            SL_ERROR("cannot create %s: %s", tmp, strerror(errno));
            rc = -SL_EIO;
        } else if ((rc = write_all(fd, frame, sizeof frame, tmp)) == 0 &&
                   (rc = write_all(fd, sb.data, sb.size, tmp)) == 0) {
            if (close(fd) != 0 || rename(tmp, path) != 0) {
                SL_ERROR("cannot finish %s: %s", path, strerror(errno));
                rc = -SL_EIO;
            }
            fd = -1;
            st->dir_bytes += sizeof frame + sb.size;
        }
        if (fd >= 0)
            close(fd);
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- the whole ---------------------------------------------------------------- */

int sl_pack_write(const sl_gguf *g, const char *source, const char *dir, const sl_pack_opts *opts,
                  sl_pack_stats *stats)
{
    sl_pack_stats st = {0};
    packer pk = {.g = g, .dir = dir, .opts = *opts};
    if (!pk.opts.min_gain_div)
        pk.opts.min_gain_div = DEFAULT_MIN_GAIN_DIV;
    if (pk.opts.codec == SL_PACK_CODEC_ZSTD && !pk.opts.level)
        pk.opts.level = SL_PACK_ZSTD_DEFAULT_LEVEL;
    if ((unsigned)pk.opts.codec >= SL_PACK_CODEC_COUNT ||
        (pk.opts.codec == SL_PACK_CODEC_ZSTD && (pk.opts.level < 1 || pk.opts.level > ZSTD_maxCLevel()))) {
        SL_ERROR("bad options: codec %d, level %d", (int)pk.opts.codec, pk.opts.level);
        return -SL_EINVAL;
    }
    sl_model *m = NULL;
    int rc = sl_model_from_gguf(g, &m);
    if (rc) {
        SL_ERROR("cannot pack %s: sluice cannot run it (see above)", source);
        return rc;
    }
    rc = plan_units(&pk, m);
    sl_model_close(m);
    uint64_t max_size = 0;
    for (uint32_t i = 0; i < pk.n_units && rc == 0; i++) {
        const sl_pack_unit *u = &pk.units[i].u;
        max_size = u->size > max_size ? u->size : max_size;
        if (pk.opts.codec == SL_PACK_CODEC_LZ4 && u->size > LZ4_MAX_INPUT_SIZE) {
            SL_ERROR("unit %s has %llu bytes, more than one LZ4 block holds (%d): use zstd", pk.units[i].name,
                     (unsigned long long)u->size, LZ4_MAX_INPUT_SIZE);
            rc = -SL_ERANGE;
        }
    }
    if (rc == 0) {
        pk.payload_cap = (size_t)max_size;
        pk.payload = malloc(pk.payload_cap);
        if (pk.opts.codec == SL_PACK_CODEC_LZ4)
            pk.packed_cap = (size_t)LZ4_compressBound((int)max_size);
        else if (pk.opts.codec == SL_PACK_CODEC_ZSTD)
            pk.packed_cap = ZSTD_compressBound((size_t)max_size);
        if (pk.packed_cap)
            pk.packed = malloc(pk.packed_cap);
        if (pk.opts.codec == SL_PACK_CODEC_ZSTD)
            pk.zstd = ZSTD_createCCtx();
        if (!pk.payload || (pk.packed_cap && !pk.packed) || (pk.opts.codec == SL_PACK_CODEC_ZSTD && !pk.zstd)) {
            SL_ERROR("out of memory for units of %llu bytes", (unsigned long long)max_size);
            rc = -SL_ENOMEM;
        }
    }
    if (rc == 0)
        rc = make_dir(dir);
    for (uint32_t i = 0; i < pk.n_units && rc == 0; i++) {
        pk.units[i].u.name = pk.units[i].name;
        rc = write_unit(&pk, &pk.units[i], &st);
    }
    for (uint32_t i = 0; i < pk.n_files; i++) {
        if (pk.files[i].fd >= 0 && close(pk.files[i].fd) != 0 && rc == 0) {
            SL_ERROR("closing %s/%s failed: %s", dir, pk.files[i].name, strerror(errno));
            rc = -SL_EIO;
        }
        st.dir_bytes += pk.files[i].size;
    }
    st.n_units = pk.n_units;
    st.n_files = pk.n_files;
    if (rc == 0)
        rc = write_manifest(&pk, source, &st);
    ZSTD_freeCCtx(pk.zstd);
    free(pk.payload);
    free(pk.packed);
    free(pk.units);
    free(pk.files);
    if (rc == 0 && stats)
        *stats = st;
    return rc;
}
