/* Opening a model from a GGUF file or a packed directory; see source.h. */
#include "model/source.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "loader/shard.h"

bool sl_source_is_packed(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whether one of u's pieces holds the tensor t whole. */
static bool holds(const sl_pack_unit *u, const sl_gguf_tensor *t)
{
    for (uint32_t i = 0; i < u->n_pieces; i++)
        if (u->pieces[i].offset <= t->offset && t->offset + t->nbytes <= u->pieces[i].offset + u->pieces[i].nbytes)
            return true;
    return false;
}

static bool wanted(const sl_pack_unit *u, sl_source_load what, const sl_gguf_tensor *embd)
{
    if (what == SL_SOURCE_ALL || u->kind == SL_PACK_MISC)
        return true;
    return what == SL_SOURCE_EMBD && embd && holds(u, embd);
}

/* Reads the units `what` asks for into the image. */
static int load_units(const sl_pack *p, const sl_gguf *g, uint8_t *image, sl_source_load what)
{
    const sl_gguf_tensor *embd = sl_gguf_tensor_find(g, "token_embd.weight");
    uint64_t need = 0;
    for (uint32_t i = 0; i < sl_pack_unit_count(p); i++) {
        const sl_pack_unit *u = sl_pack_unit_at(p, i);
        if (wanted(u, what, embd) && sl_shard_dst_bytes(u) > need)
            need = sl_shard_dst_bytes(u);
    }
    if (!need)
        return 0;
    sl_shard_reader *r = NULL;
    void *buf = aligned_alloc(SL_READER_ALIGN, (size_t)need);
    int rc = buf ? sl_shard_reader_open(p, NULL, &r) : -SL_ENOMEM;
    if (!buf)
        SL_ERROR("out of memory for a unit of %llu bytes", (unsigned long long)need);
    for (uint32_t i = 0; i < sl_pack_unit_count(p) && rc == 0; i++) {
        const sl_pack_unit *u = sl_pack_unit_at(p, i);
        if (!wanted(u, what, embd))
            continue;
        if ((rc = sl_shard_reader_load(r, i, buf, (size_t)need)) == 0)
            sl_pack_unit_place(u, buf, image);
    }
    sl_shard_reader_close(r);
    free(buf);
    return rc;
}

/* The packed model at dir as a GGUF image with `what` loaded. */
static int open_packed(const char *dir, sl_source_load what, sl_gguf **out)
{
    *out = NULL;
    sl_pack *p;
    int rc = sl_pack_open(dir, &p);
    if (rc)
        return rc;
    uint8_t *image;
    sl_gguf *g;
    if ((rc = sl_pack_image_open(p, &g, &image)) == 0 && (rc = load_units(p, g, image, what)) != 0) {
        sl_gguf_close(g);
        g = NULL;
    }
    sl_pack_close(p);
    *out = g;
    return rc;
}

int sl_source_open_gguf(const char *path, sl_gguf **out)
{
    if (sl_source_is_packed(path))
        return open_packed(path, SL_SOURCE_META, out);
    return sl_gguf_open(path, out);
}

int sl_source_open_model(const char *path, sl_source_load what, sl_model **out)
{
    *out = NULL;
    if (!sl_source_is_packed(path))
        return sl_model_open(path, out);
    sl_gguf *g;
    int rc = open_packed(path, what, &g);
    if (rc)
        return rc;
    if ((rc = sl_model_adopt_gguf(g, out)) < 0) /* closes g on failure */
        SL_ERROR("cannot use the packed model %s: %s", path, sl_strerror(rc));
    return rc;
}
