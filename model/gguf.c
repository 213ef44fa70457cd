/* GGUF reader; see gguf.h for the layout and the guarantees.
 *
 * The file is mapped read-only and parsed in one pass with a bounds-checked
 * cursor. Nothing is copied: keys, strings and tensor names point into the
 * mapping. The only allocations are the entry tables, whose sizes are bounded
 * by the bytes the entries occupy in the file, so a hostile count cannot ask
 * for more memory than a small multiple of the file size. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "model/dtype.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 63       /* longest tensor name the format allows (64 with a NUL) */
#define GGUF_MAX_NESTING 8     /* arrays of arrays deeper than this are refused */

typedef struct kv {
    sl_str key;
    sl_gguf_vtype type;
    const uint8_t *val; /* scalar value or string length prefix */
    sl_gguf_arr arr;    /* when type == ARRAY */
} kv;

/* Every allocation made while parsing hangs off this list, freed at close. */
typedef struct alloc_node {
    struct alloc_node *next;
    max_align_t data[];
} alloc_node;

struct sl_gguf {
    const uint8_t *base;
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t n_kv;
    kv *kvs;
    uint64_t n_tensors;
    sl_gguf_tensor *tensors;
    uint64_t *tensor_index; /* open-addressing hash of names: tensor number + 1, 0 = empty */
    uint64_t tensor_index_mask;
    alloc_node *allocs;
};

typedef struct cursor {
    const uint8_t *base;
    uint64_t pos, size;
} cursor;

static void *arena_alloc(sl_gguf *g, uint64_t count, uint64_t elem)
{
    if (elem && count > (UINT64_MAX - sizeof(alloc_node)) / elem)
        return NULL;
    alloc_node *n = calloc(1, sizeof(alloc_node) + count * elem);
    if (!n)
        return NULL;
    n->next = g->allocs;
    g->allocs = n;
    return n->data;
}

static uint64_t rd_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t remaining(const cursor *c) { return c->size - c->pos; }

/* Reads an unsigned little-endian integer of `bytes` bytes; `what` names the
 * field for the error message. */
static int cur_uint(cursor *c, int bytes, uint64_t *out, const char *what)
{
    if (remaining(c) < (uint64_t)bytes) {
        SL_ERROR("truncated file: %s at offset %llu needs %d bytes, %llu remain", what,
                 (unsigned long long)c->pos, bytes, (unsigned long long)remaining(c));
        return -SL_EFORMAT;
    }
    *out = rd_le(c->base + c->pos, bytes);
    c->pos += (uint64_t)bytes;
    return 0;
}

static int cur_str(cursor *c, sl_str *out, const char *what)
{
    uint64_t len;
    uint64_t at = c->pos;
    int rc = cur_uint(c, 8, &len, what);
    if (rc)
        return rc;
    if (len > remaining(c)) {
        SL_ERROR("%s at offset %llu has length %llu but only %llu bytes remain", what,
                 (unsigned long long)at, (unsigned long long)len, (unsigned long long)remaining(c));
        return -SL_EFORMAT;
    }
    out->ptr = (const char *)c->base + c->pos;
    out->len = len;
    c->pos += len;
    return 0;
}

/* Size in the file of one fixed-size value, or 0 for STRING/ARRAY/unknown. */
static uint64_t vtype_size(uint32_t t)
{
    switch (t) {
    case SL_GGUF_U8: case SL_GGUF_I8: case SL_GGUF_BOOL: return 1;
    case SL_GGUF_U16: case SL_GGUF_I16: return 2;
    case SL_GGUF_U32: case SL_GGUF_I32: case SL_GGUF_F32: return 4;
    case SL_GGUF_U64: case SL_GGUF_I64: case SL_GGUF_F64: return 8;
    default: return 0;
    }
}

static int parse_array(sl_gguf *g, cursor *c, sl_gguf_arr *a, int depth);

/* Parses one array body (element type, count, elements) into *a. */
static int parse_array(sl_gguf *g, cursor *c, sl_gguf_arr *a, int depth)
{
    uint64_t t, count;
    uint64_t at = c->pos;
    int rc;
    if (depth > GGUF_MAX_NESTING) {
        SL_ERROR("arrays nested deeper than %d levels at offset %llu", GGUF_MAX_NESTING,
                 (unsigned long long)at);
        return -SL_EFORMAT;
    }
    if ((rc = cur_uint(c, 4, &t, "array element type")) || (rc = cur_uint(c, 8, &count, "array count")))
        return rc;
    if (t >= SL_GGUF_VTYPE_COUNT) {
        SL_ERROR("array at offset %llu has unknown element type %llu", (unsigned long long)at,
                 (unsigned long long)t);
        return -SL_EFORMAT;
    }
    a->type = (sl_gguf_vtype)t;
    a->count = count;
    a->data = c->base + c->pos;
    a->offs = NULL;
    a->sub = NULL;
    uint64_t esize = vtype_size((uint32_t)t);
    /* Smallest possible encoding of one element: bounds the count before any
     * allocation. */
    uint64_t min_size = esize ? esize : (t == SL_GGUF_STRING ? 8 : 12);
    if (count > remaining(c) / min_size) {
        SL_ERROR("array at offset %llu claims %llu elements of type %llu; only %llu bytes remain",
                 (unsigned long long)at, (unsigned long long)count, (unsigned long long)t,
                 (unsigned long long)remaining(c));
        return -SL_EFORMAT;
    }
    if (esize) {
        c->pos += count * esize;
        return 0;
    }
    if (t == SL_GGUF_STRING) {
        uint64_t *offs = arena_alloc(g, count, sizeof *offs);
        if (!offs && count)
            return -SL_ENOMEM;
        for (uint64_t i = 0; i < count; i++) {
            sl_str s;
            offs[i] = (uint64_t)(c->base + c->pos - a->data);
            if ((rc = cur_str(c, &s, "array string")))
                return rc;
        }
        a->offs = offs;
        return 0;
    }
    sl_gguf_arr *sub = arena_alloc(g, count, sizeof *sub);
    if (!sub && count)
        return -SL_ENOMEM;
    for (uint64_t i = 0; i < count; i++)
        if ((rc = parse_array(g, c, &sub[i], depth + 1)))
            return rc;
    a->sub = sub;
    return 0;
}

static uint64_t hash_bytes(const char *p, uint64_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static bool str_eq2(sl_str a, sl_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

bool sl_str_eq(sl_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

/* Builds an open-addressing table of `n` names with get(i) returning name i;
 * fails on a duplicate. Returns the table (size mask+1) via out params. */
static int build_index(sl_gguf *g, uint64_t n, sl_str (*get)(const sl_gguf *, uint64_t), const char *what,
                       uint64_t **out, uint64_t *mask_out)
{
    uint64_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    uint64_t *idx = arena_alloc(g, cap, sizeof *idx);
    if (!idx)
        return -SL_ENOMEM;
    uint64_t mask = cap - 1;
    for (uint64_t i = 0; i < n; i++) {
        sl_str name = get(g, i);
        uint64_t h = hash_bytes(name.ptr, name.len) & mask;
        while (idx[h]) {
            if (str_eq2(get(g, idx[h] - 1), name)) {
                SL_ERROR("duplicate %s '%.*s'", what, (int)(name.len > 64 ? 64 : name.len), name.ptr);
                return -SL_EFORMAT;
            }
            h = (h + 1) & mask;
        }
        idx[h] = i + 1;
    }
    *out = idx;
    *mask_out = mask;
    return 0;
}

static sl_str kv_name(const sl_gguf *g, uint64_t i) { return g->kvs[i].key; }
static sl_str tensor_name(const sl_gguf *g, uint64_t i) { return g->tensors[i].name; }

static int parse_kvs(sl_gguf *g, cursor *c)
{
    int rc;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        kv *e = &g->kvs[i];
        uint64_t t;
        if ((rc = cur_str(c, &e->key, "metadata key")) || (rc = cur_uint(c, 4, &t, "metadata value type")))
            return rc;
        if (t >= SL_GGUF_VTYPE_COUNT) {
            SL_ERROR("metadata '%.*s' has unknown value type %llu", (int)(e->key.len > 64 ? 64 : e->key.len),
                     e->key.ptr, (unsigned long long)t);
            return -SL_EFORMAT;
        }
        e->type = (sl_gguf_vtype)t;
        e->val = c->base + c->pos;
        if (t == SL_GGUF_STRING) {
            sl_str s;
            rc = cur_str(c, &s, "metadata string");
        } else if (t == SL_GGUF_ARRAY) {
            rc = parse_array(g, c, &e->arr, 0);
        } else {
            uint64_t sz = vtype_size((uint32_t)t), dummy;
            rc = cur_uint(c, (int)sz, &dummy, "metadata value");
        }
        if (rc)
            return rc;
    }
    uint64_t *unused_idx, unused_mask;
    return build_index(g, g->n_kv, kv_name, "metadata key", &unused_idx, &unused_mask);
}

static int parse_tensor_info(cursor *c, sl_gguf_tensor *t)
{
    uint64_t at = c->pos, v;
    int rc;
    if ((rc = cur_str(c, &t->name, "tensor name")))
        return rc;
    if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME) {
        SL_ERROR("tensor at offset %llu has a name of %llu bytes (allowed 1..%d)", (unsigned long long)at,
                 (unsigned long long)t->name.len, GGUF_MAX_NAME);
        return -SL_EFORMAT;
    }
    const int nl = (int)t->name.len;
    if ((rc = cur_uint(c, 4, &v, "tensor n_dims")))
        return rc;
    if (v > SL_GGUF_MAX_DIMS) {
        SL_ERROR("tensor '%.*s' has %llu dimensions (at most %d)", nl, t->name.ptr, (unsigned long long)v,
                 SL_GGUF_MAX_DIMS);
        return -SL_EFORMAT;
    }
    t->n_dims = (uint32_t)v;
    uint64_t nelem = 1;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims && (rc = cur_uint(c, 8, &ne, "tensor dimension")))
            return rc;
        if (ne > (uint64_t)INT64_MAX || (ne && nelem > (uint64_t)INT64_MAX / ne)) {
            SL_ERROR("tensor '%.*s': dimension %d (%llu) overflows the element count", nl, t->name.ptr, d,
                     (unsigned long long)ne);
            return -SL_EFORMAT;
        }
        nelem *= ne;
        t->ne[d] = (int64_t)ne;
    }
    if ((rc = cur_uint(c, 4, &v, "tensor type")))
        return rc;
    const sl_dtype_info *info = sl_dtype_get((uint32_t)v);
    if (!info) {
        SL_ERROR("tensor '%.*s' has unknown type id %llu", nl, t->name.ptr, (unsigned long long)v);
        return -SL_EFORMAT;
    }
    t->type = (uint32_t)v;
    if (t->ne[0] % info->block != 0) {
        SL_ERROR("tensor '%.*s': row length %lld is not a multiple of the %s block size %u", nl, t->name.ptr,
                 (long long)t->ne[0], info->name, info->block);
        return -SL_EFORMAT;
    }
    t->nbytes = sl_dtype_bytes(t->type, nelem);
    if (nelem && !t->nbytes) {
        SL_ERROR("tensor '%.*s': size of %llu %s elements overflows", nl, t->name.ptr,
                 (unsigned long long)nelem, info->name);
        return -SL_EFORMAT;
    }
    return cur_uint(c, 8, &t->offset, "tensor offset");
}

static int cmp_by_offset(const void *a, const void *b)
{
    const sl_gguf_tensor *x = *(const sl_gguf_tensor *const *)a, *y = *(const sl_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Places every tensor inside the data section, aligned, without overlaps. */
static int check_tensor_layout(sl_gguf *g)
{
    uint64_t data_size = g->size - g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        sl_gguf_tensor *t = &g->tensors[i];
        const int nl = (int)t->name.len;
        if (t->offset % g->alignment) {
            SL_ERROR("tensor '%.*s': offset %llu is not a multiple of the alignment %u", nl, t->name.ptr,
                     (unsigned long long)t->offset, g->alignment);
            return -SL_EFORMAT;
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            SL_ERROR("tensor '%.*s': bytes [%llu, +%llu) lie beyond the end of the data section (%llu bytes)",
                     nl, t->name.ptr, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                     (unsigned long long)data_size);
            return -SL_EFORMAT;
        }
        t->offset += g->data_offset;
    }
    if (g->n_tensors < 2)
        return 0;
    const sl_gguf_tensor **sorted = malloc(g->n_tensors * sizeof *sorted);
    if (!sorted)
        return -SL_ENOMEM;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        sorted[i] = &g->tensors[i];
    qsort(sorted, g->n_tensors, sizeof *sorted, cmp_by_offset);
    int rc = 0;
    for (uint64_t i = 1; i < g->n_tensors && !rc; i++) {
        const sl_gguf_tensor *a = sorted[i - 1], *b = sorted[i];
        if (a->offset + a->nbytes > b->offset) {
            SL_ERROR("tensors '%.*s' and '%.*s' overlap", (int)a->name.len, a->name.ptr, (int)b->name.len,
                     b->name.ptr);
            rc = -SL_EFORMAT;
        }
    }
    free(sorted);
    return rc;
}

static int read_alignment(sl_gguf *g)
{
    int64_t i = sl_gguf_find(g, "general.alignment");
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return 0;
    uint64_t v;
    if (g->kvs[i].type != SL_GGUF_U32 || sl_gguf_kv_u64(g, (uint64_t)i, &v)) {
        SL_ERROR("general.alignment must be a u32 (found value type %d)", (int)g->kvs[i].type);
        return -SL_EFORMAT;
    }
    if (v == 0 || (v & (v - 1))) {
        SL_ERROR("general.alignment %llu is not a power of two", (unsigned long long)v);
        return -SL_EFORMAT;
    }
    g->alignment = (uint32_t)v;
    return 0;
}

static int parse(sl_gguf *g)
{
    cursor c = {g->base, 0, g->size};
    uint64_t magic, version;
    int rc;
    if ((rc = cur_uint(&c, 4, &magic, "magic")))
        return rc;
    if (magic != GGUF_MAGIC) {
        SL_ERROR("not a GGUF file: magic is 0x%08llx, expected 0x%08x (\"GGUF\")", (unsigned long long)magic,
                 GGUF_MAGIC);
        return -SL_EFORMAT;
    }
    if ((rc = cur_uint(&c, 4, &version, "version")))
        return rc;
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0 && version != 0)
            SL_ERROR("big-endian GGUF files are not supported");
        else
            SL_ERROR("GGUF version %llu is not supported (only 2 and 3)", (unsigned long long)version);
        return -SL_EUNSUPPORTED;
    }
    g->version = (uint32_t)version;
    if ((rc = cur_uint(&c, 8, &g->n_tensors, "tensor count")) || (rc = cur_uint(&c, 8, &g->n_kv, "metadata count")))
        return rc;
    /* A key-value pair takes at least 8 + 4 + 1 bytes, a tensor info at least
     * 8 + 1 + 4 + 4 + 8: counts beyond what the file can hold are lies. */
    if (g->n_kv > remaining(&c) / 13 || g->n_tensors > remaining(&c) / 25) {
        SL_ERROR("counts too large for a %llu-byte file: %llu metadata entries, %llu tensors",
                 (unsigned long long)g->size, (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors);
        return -SL_EFORMAT;
    }
    g->kvs = arena_alloc(g, g->n_kv, sizeof *g->kvs);
    g->tensors = arena_alloc(g, g->n_tensors, sizeof *g->tensors);
    if (!g->kvs || !g->tensors)
        return -SL_ENOMEM;
    if ((rc = parse_kvs(g, &c)) || (rc = read_alignment(g)))
        return rc;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor_info(&c, &g->tensors[i])))
            return rc;
    if ((rc = build_index(g, g->n_tensors, tensor_name, "tensor name", &g->tensor_index, &g->tensor_index_mask)))
        return rc;
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = c.pos + pad;
    if (g->data_offset > g->size) {
        /* A file without tensors (a vocabulary-only file) may end right after
         * its metadata, without padding. */
        if (g->n_tensors == 0) {
            g->data_offset = g->size;
        } else {
            SL_ERROR("truncated file: tensor data would start at %llu, file has %llu bytes",
                     (unsigned long long)g->data_offset, (unsigned long long)g->size);
            return -SL_EFORMAT;
        }
    }
    return check_tensor_layout(g);
}

static int finish_open(sl_gguf *g, sl_gguf **out)
{
    int rc = parse(g);
    if (rc) {
        sl_gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int sl_gguf_open_mem(const void *buf, size_t len, sl_gguf **out)
{
    *out = NULL;
    sl_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return -SL_ENOMEM;
    g->base = buf;
    g->size = len;
    return finish_open(g, out);
}

int sl_gguf_open_mapping(void *map, size_t len, sl_gguf **out)
{
    *out = NULL;
    sl_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, len);
        return -SL_ENOMEM;
    }
    g->base = map;
    g->size = len;
    g->mapped = true;
    return finish_open(g, out); /* closing on failure unmaps */
}

int sl_gguf_open(const char *path, sl_gguf **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        SL_ERROR("cannot open '%s': %s", path, strerror(errno));
        return -SL_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        SL_ERROR("'%s' is not a regular file", path);
        close(fd);
        return -SL_EIO;
    }
    if (st.st_size == 0) {
        SL_ERROR("'%s' is empty", path);
        close(fd);
        return -SL_EFORMAT;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) {
        SL_ERROR("cannot map '%s' (%lld bytes): %s", path, (long long)st.st_size, strerror(err));
        return -SL_EIO;
    }
    sl_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, (size_t)st.st_size);
        return -SL_ENOMEM;
    }
    g->base = map;
    g->size = (uint64_t)st.st_size;
    g->mapped = true;
    return finish_open(g, out);
}

void sl_gguf_close(sl_gguf *g)
{
    if (!g)
        return;
    while (g->allocs) {
        alloc_node *n = g->allocs;
        g->allocs = n->next;
        free(n);
    }
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g);
}

uint32_t sl_gguf_version(const sl_gguf *g) { return g->version; }
uint64_t sl_gguf_file_size(const sl_gguf *g) { return g->size; }
uint32_t sl_gguf_alignment(const sl_gguf *g) { return g->alignment; }
uint64_t sl_gguf_data_offset(const sl_gguf *g) { return g->data_offset; }
const uint8_t *sl_gguf_base(const sl_gguf *g) { return g->base; }
uint64_t sl_gguf_kv_count(const sl_gguf *g) { return g->n_kv; }

sl_str sl_gguf_kv_key(const sl_gguf *g, uint64_t i)
{
    SL_ASSERT(i < g->n_kv);
    return g->kvs[i].key;
}

sl_gguf_vtype sl_gguf_kv_type(const sl_gguf *g, uint64_t i)
{
    SL_ASSERT(i < g->n_kv);
    return g->kvs[i].type;
}

int64_t sl_gguf_find(const sl_gguf *g, const char *key)
{
    /* Metadata tables are small (tens of entries): a scan is enough. */
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (sl_str_eq(g->kvs[i].key, key))
            return (int64_t)i;
    return -1;
}

/* Reads a fixed-size numeric value of type t at p as int64 / uint64 / double. */
static bool is_signed(sl_gguf_vtype t) { return t == SL_GGUF_I8 || t == SL_GGUF_I16 || t == SL_GGUF_I32 || t == SL_GGUF_I64; }
static bool is_int(sl_gguf_vtype t)
{
    return t == SL_GGUF_U8 || t == SL_GGUF_U16 || t == SL_GGUF_U32 || t == SL_GGUF_U64 || is_signed(t);
}

static int64_t load_signed(sl_gguf_vtype t, const uint8_t *p)
{
    int bytes = (int)vtype_size(t);
    uint64_t u = rd_le(p, bytes);
    if (bytes < 8 && (u >> (bytes * 8 - 1)) & 1)
        u |= ~0ull << (bytes * 8);
    return (int64_t)u;
}

static double load_f64(sl_gguf_vtype t, const uint8_t *p)
{
    if (t == SL_GGUF_F32) {
        uint32_t u = (uint32_t)rd_le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (t == SL_GGUF_F64) {
        uint64_t u = rd_le(p, 8);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    if (is_signed(t))
        return (double)load_signed(t, p);
    return (double)rd_le(p, (int)vtype_size(t));
}

int sl_gguf_kv_u64(const sl_gguf *g, uint64_t i, uint64_t *out)
{
    SL_ASSERT(i < g->n_kv);
    const kv *e = &g->kvs[i];
    if (!is_int(e->type))
        return -SL_ETYPE;
    if (is_signed(e->type)) {
        int64_t v = load_signed(e->type, e->val);
        if (v < 0)
            return -SL_ETYPE;
        *out = (uint64_t)v;
    } else {
        *out = rd_le(e->val, (int)vtype_size(e->type));
    }
    return 0;
}

int sl_gguf_kv_i64(const sl_gguf *g, uint64_t i, int64_t *out)
{
    SL_ASSERT(i < g->n_kv);
    const kv *e = &g->kvs[i];
    if (!is_int(e->type))
        return -SL_ETYPE;
    if (is_signed(e->type)) {
        *out = load_signed(e->type, e->val);
    } else {
        uint64_t u = rd_le(e->val, (int)vtype_size(e->type));
        if (u > (uint64_t)INT64_MAX)
            return -SL_ETYPE;
        *out = (int64_t)u;
    }
    return 0;
}

int sl_gguf_kv_f64(const sl_gguf *g, uint64_t i, double *out)
{
    SL_ASSERT(i < g->n_kv);
    const kv *e = &g->kvs[i];
    if (!vtype_size(e->type) || e->type == SL_GGUF_BOOL)
        return -SL_ETYPE;
    *out = load_f64(e->type, e->val);
    return 0;
}

int sl_gguf_kv_str(const sl_gguf *g, uint64_t i, sl_str *out)
{
    SL_ASSERT(i < g->n_kv);
    const kv *e = &g->kvs[i];
    if (e->type != SL_GGUF_STRING)
        return -SL_ETYPE;
    out->len = rd_le(e->val, 8);
    out->ptr = (const char *)e->val + 8;
    return 0;
}

int sl_gguf_kv_arr(const sl_gguf *g, uint64_t i, sl_gguf_arr *out)
{
    SL_ASSERT(i < g->n_kv);
    if (g->kvs[i].type != SL_GGUF_ARRAY)
        return -SL_ETYPE;
    *out = g->kvs[i].arr;
    return 0;
}

static int find_or(const sl_gguf *g, const char *key, uint64_t *i)
{
    int64_t k = sl_gguf_find(g, key);
    if (k < 0)
        return -SL_ENOTFOUND;
    *i = (uint64_t)k;
    return 0;
}

int sl_gguf_get_u64(const sl_gguf *g, const char *key, uint64_t *out)
{
    uint64_t i;
    int rc = find_or(g, key, &i);
    return rc ? rc : sl_gguf_kv_u64(g, i, out);
}

int sl_gguf_get_u32(const sl_gguf *g, const char *key, uint32_t *out)
{
    uint64_t v;
    int rc = sl_gguf_get_u64(g, key, &v);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return -SL_ETYPE;
    *out = (uint32_t)v;
    return 0;
}

int sl_gguf_get_i64(const sl_gguf *g, const char *key, int64_t *out)
{
    uint64_t i;
    int rc = find_or(g, key, &i);
    return rc ? rc : sl_gguf_kv_i64(g, i, out);
}

int sl_gguf_get_f32(const sl_gguf *g, const char *key, float *out)
{
    uint64_t i;
    double d;
    int rc = find_or(g, key, &i);
    if (rc || (rc = sl_gguf_kv_f64(g, i, &d)))
        return rc;
    *out = (float)d;
    return 0;
}

int sl_gguf_get_bool(const sl_gguf *g, const char *key, bool *out)
{
    uint64_t i;
    int rc = find_or(g, key, &i);
    if (rc)
        return rc;
    if (g->kvs[i].type != SL_GGUF_BOOL)
        return -SL_ETYPE;
    *out = g->kvs[i].val[0] != 0;
    return 0;
}

int sl_gguf_get_str(const sl_gguf *g, const char *key, sl_str *out)
{
    uint64_t i;
    int rc = find_or(g, key, &i);
    return rc ? rc : sl_gguf_kv_str(g, i, out);
}

int sl_gguf_get_arr(const sl_gguf *g, const char *key, sl_gguf_arr *out)
{
    uint64_t i;
    int rc = find_or(g, key, &i);
    return rc ? rc : sl_gguf_kv_arr(g, i, out);
}

sl_str sl_gguf_arr_str(const sl_gguf_arr *a, uint64_t i)
{
    SL_ASSERT(a->type == SL_GGUF_STRING && i < a->count);
    const uint8_t *p = a->data + a->offs[i];
    sl_str s = {(const char *)p + 8, rd_le(p, 8)};
    return s;
}

void sl_gguf_arr_arr(const sl_gguf_arr *a, uint64_t i, sl_gguf_arr *out)
{
    SL_ASSERT(a->type == SL_GGUF_ARRAY && i < a->count);
    *out = a->sub[i];
}

int64_t sl_gguf_arr_i64(const sl_gguf_arr *a, uint64_t i)
{
    SL_ASSERT((is_int(a->type) || a->type == SL_GGUF_BOOL) && i < a->count);
    uint64_t sz = vtype_size(a->type);
    const uint8_t *p = a->data + i * sz;
    if (is_signed(a->type))
        return load_signed(a->type, p);
    return (int64_t)rd_le(p, (int)sz);
}

double sl_gguf_arr_f64(const sl_gguf_arr *a, uint64_t i)
{
    uint64_t sz = vtype_size(a->type);
    SL_ASSERT(sz && a->type != SL_GGUF_BOOL && i < a->count);
    return load_f64(a->type, a->data + i * sz);
}

uint64_t sl_gguf_tensor_count(const sl_gguf *g) { return g->n_tensors; }

const sl_gguf_tensor *sl_gguf_tensor_at(const sl_gguf *g, uint64_t i)
{
    SL_ASSERT(i < g->n_tensors);
    return &g->tensors[i];
}

const sl_gguf_tensor *sl_gguf_tensor_find(const sl_gguf *g, const char *name)
{
    size_t len = strlen(name);
    uint64_t h = hash_bytes(name, len) & g->tensor_index_mask;
    while (g->tensor_index[h]) {
        const sl_gguf_tensor *t = &g->tensors[g->tensor_index[h] - 1];
        if (sl_str_eq(t->name, name))
            return t;
        h = (h + 1) & g->tensor_index_mask;
    }
    return NULL;
}

const void *sl_gguf_tensor_data(const sl_gguf *g, const sl_gguf_tensor *t) { return g->base + t->offset; }
