/* Loading units of a packed model; see shard.h.
 *
 * One sl_reader serves every shard file: it is switched to the unit's file
 * when that differs from the last one (sl_reader_reopen), so a loader has
 * a fixed set of I/O threads however many shards a model has. */
#include "loader/shard.h"

#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/log.h"

struct sl_shard_reader {
    const sl_pack *pack;
    sl_reader *reader;
    int64_t open_file; /* index of the file the reader has open; -1 none */
    uint8_t *staging;  /* compressed units are read here */
    size_t staging_size;
    ZSTD_DCtx *zstd;
    char why[320];
};

static uint64_t align_up(uint64_t v) { return (v + SL_READER_ALIGN - 1) / SL_READER_ALIGN * SL_READER_ALIGN; }

uint64_t sl_shard_dst_bytes(const sl_pack_unit *u)
{
    return align_up(u->size);
}

int sl_shard_reader_open(const sl_pack *p, const sl_reader_opts *opts, sl_shard_reader **out)
{
    *out = NULL;
    sl_shard_reader *r = calloc(1, sizeof *r);
    if (!r) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    r->pack = p;
    r->open_file = -1;
    int rc = 0;
    uint64_t staging = align_up(sl_pack_max_compressed(p));
    if (staging) {
        r->staging_size = (size_t)staging;
        r->staging = aligned_alloc(SL_READER_ALIGN, r->staging_size);
        r->zstd = ZSTD_createDCtx();
        if (!r->staging || !r->zstd) {
            SL_ERROR("out of memory for a staging buffer of %llu bytes", (unsigned long long)staging);
            rc = -SL_ENOMEM;
        }
    }
    /* The reader starts on the first shard; loads switch it as needed. */
    if (rc == 0 && (rc = sl_reader_open(sl_pack_file_path(p, 0), opts, &r->reader)) == 0)
        r->open_file = 0;
    if (rc) {
        sl_shard_reader_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

void sl_shard_reader_close(sl_shard_reader *r)
{
    if (!r)
        return;
    sl_reader_close(r->reader);
    ZSTD_freeDCtx(r->zstd);
    free(r->staging);
    free(r);
}

const char *sl_shard_reader_why(const sl_shard_reader *r)
{
    return r->why;
}

/* Records why a load failed, logs it once, and returns err. */
__attribute__((format(printf, 3, 4))) static int fail(sl_shard_reader *r, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
    sl_log(SL_LOG_ERROR, "sl_shard_reader_load", "%s", r->why);
    return err;
}

int sl_shard_reader_load(sl_shard_reader *r, uint32_t unit, void *dst, size_t dst_size)
{
    r->why[0] = 0;
    if (unit >= sl_pack_unit_count(r->pack))
        return fail(r, -SL_EINVAL, "unit %u of a packed model with %u units", unit, sl_pack_unit_count(r->pack));
    const sl_pack_unit *u = sl_pack_unit_at(r->pack, unit);
    const char *file = sl_pack_file_path(r->pack, u->file);
    if (!dst || (uintptr_t)dst % SL_READER_ALIGN || dst_size < sl_shard_dst_bytes(u))
        return fail(r, -SL_EINVAL, "unit %s: a destination of %zu bytes at %p (needs %llu, %u-aligned)", u->name,
                    dst_size, dst, (unsigned long long)sl_shard_dst_bytes(u), SL_READER_ALIGN);
    if (r->open_file != (int64_t)u->file) {
        r->open_file = -1;
        if (sl_reader_reopen(r->reader, file))
            return fail(r, -SL_EIO, "shard %s (unit %s) cannot be opened", file, u->name);
        r->open_file = u->file;
    }
    if (sl_reader_size(r->reader) != sl_pack_file_size(r->pack, u->file))
        return fail(r, -SL_EIO, "shard %s has %llu bytes, the manifest says %llu: it was truncated or replaced",
                    file, (unsigned long long)sl_reader_size(r->reader),
                    (unsigned long long)sl_pack_file_size(r->pack, u->file));

    const bool direct = u->codec == SL_PACK_CODEC_NONE;
    uint8_t *buf = direct ? dst : r->staging;
    size_t buf_size = direct ? dst_size : r->staging_size, skip;
    int rc = sl_reader_read(r->reader, u->offset, (size_t)u->stored, buf, buf_size, &skip);
    if (rc)
        return fail(r, rc, "shard %s: reading unit %s (%llu bytes at offset %llu) failed: %s", file, u->name,
                    (unsigned long long)u->stored, (unsigned long long)u->offset, sl_strerror(rc));
    SL_ASSERT(skip == 0); /* the manifest's offsets are 4 KiB-aligned */
    uint64_t sum = sl_pack_checksum(buf, (size_t)u->stored);
    if (sum != u->xxh3)
        return fail(r, -SL_EFORMAT,
                    "shard %s is corrupted: unit %s (%llu bytes at offset %llu) has checksum %016llx, the manifest "
                    "says %016llx",
                    file, u->name, (unsigned long long)u->stored, (unsigned long long)u->offset,
                    (unsigned long long)sum, (unsigned long long)u->xxh3);
    size_t got = (size_t)u->size;
    if (u->codec == SL_PACK_CODEC_LZ4) {
        /* check_unit bounded both lengths by the LZ4 block limit (< INT_MAX). */
        int n = LZ4_decompress_safe((const char *)buf, dst, (int)u->stored, (int)u->size);
        got = n < 0 ? SIZE_MAX : (size_t)n;
    } else if (u->codec == SL_PACK_CODEC_ZSTD) {
        size_t n = ZSTD_decompressDCtx(r->zstd, dst, (size_t)u->size, buf, (size_t)u->stored);
        got = ZSTD_isError(n) ? SIZE_MAX : n;
    }
    if (got != u->size)
        return fail(r, -SL_EFORMAT, "shard %s: unit %s does not decompress (%s) to its %llu bytes: the shard is corrupted",
                    file, u->name, sl_pack_codec_name(u->codec), (unsigned long long)u->size);
    return 0;
}
