/* Fetching units from a GGUF file or a packed model; see fetch.h. */
#include "loader/fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "loader/shard.h"
#include "model/pack.h"
#include "model/source.h"

/* A packed unit found by where its first byte lies in the image. */
typedef struct by_offset {
    uint64_t offset, nbytes;
    uint32_t unit;
} by_offset;

struct sl_fetcher {
    char *path;
    sl_reader *reader;     /* a GGUF file */
    sl_pack *pack;         /* a packed model ... */
    sl_shard_reader *shard;
    by_offset *index;      /* ... its units sorted by offset */
    uint32_t n_index;
    char why[384];
};

static int cmp_offset(const void *a, const void *b)
{
    const by_offset *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int open_packed(sl_fetcher *f, uint64_t model_size, const sl_reader_opts *opts)
{
    int rc = sl_pack_open(f->path, &f->pack);
    if (rc)
        return rc;
    if (sl_pack_image_size(f->pack) != model_size) {
        SL_ERROR("the packed model %s is of a %llu-byte GGUF; the plan was made for %llu bytes: it was swapped",
                 f->path, (unsigned long long)sl_pack_image_size(f->pack), (unsigned long long)model_size);
        return -SL_EFORMAT;
    }
    f->n_index = sl_pack_unit_count(f->pack);
    f->index = malloc(f->n_index * sizeof *f->index);
    if (!f->index) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    for (uint32_t i = 0; i < f->n_index; i++) {
        const sl_pack_unit *u = sl_pack_unit_at(f->pack, i);
        uint64_t n = 0;
        for (uint32_t k = 0; k < u->n_pieces; k++)
            n += u->pieces[k].nbytes;
        f->index[i] = (by_offset){u->pieces[0].offset, n, i};
    }
    qsort(f->index, f->n_index, sizeof *f->index, cmp_offset);
    return sl_shard_reader_open(f->pack, opts, &f->shard);
}

int sl_fetcher_open(const char *path, uint64_t model_size, const sl_reader_opts *opts, sl_fetcher **out)
{
    *out = NULL;
    sl_fetcher *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    int rc;
    if (sl_source_is_packed(path)) {
        rc = open_packed(f, model_size, opts);
    } else if ((rc = sl_reader_open(path, opts, &f->reader)) == 0 && sl_reader_size(f->reader) != model_size) {
        SL_ERROR("%s has %llu bytes; the plan was made for %llu: the file changed since", path,
                 (unsigned long long)sl_reader_size(f->reader), (unsigned long long)model_size);
        rc = -SL_EFORMAT;
    }
    if (rc) {
        sl_fetcher_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

void sl_fetcher_close(sl_fetcher *f)
{
    if (!f)
        return;
    sl_reader_close(f->reader);
    sl_shard_reader_close(f->shard);
    sl_pack_close(f->pack);
    free(f->index);
    free(f->path);
    free(f);
}

bool sl_fetcher_packed(const sl_fetcher *f)
{
    return f->pack != NULL;
}

const char *sl_fetcher_why(const sl_fetcher *f)
{
    return f->why;
}

/* The packed unit with this first offset and length, or -1. */
static int64_t find(const sl_fetcher *f, uint64_t offset, uint64_t nbytes)
{
    uint32_t lo = 0, hi = f->n_index;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->index[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < f->n_index && f->index[lo].offset == offset; lo++)
        if (f->index[lo].nbytes == nbytes)
            return f->index[lo].unit;
    return -1;
}

int sl_fetcher_fetch(sl_fetcher *f, uint64_t offset, uint64_t nbytes, void *dst, size_t dst_size)
{
    f->why[0] = 0;
    int rc;
    if (!f->pack) {
        size_t skip;
        rc = sl_reader_read(f->reader, offset, (size_t)nbytes, dst, dst_size, &skip);
        if (rc)
            snprintf(f->why, sizeof f->why, "%s: reading %llu bytes at offset %llu failed: %s", f->path,
                     (unsigned long long)nbytes, (unsigned long long)offset, sl_strerror(rc));
        SL_ASSERT(rc || skip == offset % SL_READER_ALIGN);
        return rc;
    }
    int64_t unit = find(f, offset, nbytes);
    if (unit < 0) {
        snprintf(f->why, sizeof f->why,
                 "the packed model %s has no unit of %llu bytes at offset %llu: it does not match the model planned",
                 f->path, (unsigned long long)nbytes, (unsigned long long)offset);
        SL_ERROR("%s", f->why);
        return -SL_ENOTFOUND;
    }
    rc = sl_shard_reader_load(f->shard, (uint32_t)unit, dst, dst_size);
    if (rc)
        snprintf(f->why, sizeof f->why, "%s", sl_shard_reader_why(f->shard));
    return rc;
}
