/* Streaming GGUF writer; see gguf_write.h for the phases and layout rules.
 *
 * The metadata section is serialised into a growable buffer as entries are
 * added (an open array's count is patched in place when it is closed); tensor
 * infos are kept as records because their offsets depend on the alignment,
 * which may be set after them. Each entry reserves all the bytes it needs
 * before writing any, so a failed call leaves the buffer as it was. */
#include "model/gguf_write.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "model/dtype.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as little-endian u32 */
#define DEFAULT_ALIGNMENT 32u
#define MAX_KEY 65535u
#define MAX_TENSOR_NAME 63u /* the reference toolchain's limit (64 with the NUL) */

enum sink { SINK_FILE, SINK_FD, SINK_MEM };
enum phase { PHASE_DEFINE, PHASE_DATA, PHASE_DONE };

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

typedef struct keyref {
    size_t off; /* of the key's bytes in the metadata buffer */
    size_t len;
} keyref;

typedef struct open_arr {
    sl_gguf_vtype type;
    size_t count_off; /* of the u64 count in the metadata buffer */
    uint64_t count;
} open_arr;

typedef struct tinfo {
    char *name;
    uint32_t n_dims;
    uint32_t type;
    int64_t ne[SL_GGUF_MAX_DIMS];
    uint64_t nbytes;
    uint64_t rel_offset; /* from the data section, set by write_header */
} tinfo;

struct sl_gguf_writer {
    enum sink sink;
    FILE *f;
    int fd;
    buf mem; /* output of a memory sink */
    bool mem_taken;
    int io_err;       /* sticky -SL_EIO */
    uint64_t written; /* bytes sent to the sink */
    enum phase phase;
    uint32_t version;
    uint32_t alignment;

    buf kv; /* serialised metadata entries */
    uint64_t n_kv;
    keyref *keys;
    size_t keys_cap;
    open_arr stack[SL_GGUF_WRITER_MAX_DEPTH];
    int depth;

    tinfo *tensors;
    uint64_t n_tensors, tensors_cap;
    uint64_t *name_index; /* open addressing: tensor number + 1, 0 = empty */
    uint64_t name_index_cap;

    uint64_t data_offset; /* absolute start of the data section */
    uint64_t file_size;
    uint64_t cur;         /* tensor receiving data */
    uint64_t cur_written; /* bytes of it (data, then padding) already written */
};

static const uint8_t k_zeros[4096];

/* ---- small helpers ---- */

static size_t vsize(sl_gguf_vtype t)
{
    switch (t) {
    case SL_GGUF_U8:
    case SL_GGUF_I8:
    case SL_GGUF_BOOL:
        return 1;
    case SL_GGUF_U16:
    case SL_GGUF_I16:
        return 2;
    case SL_GGUF_U32:
    case SL_GGUF_I32:
    case SL_GGUF_F32:
        return 4;
    case SL_GGUF_U64:
    case SL_GGUF_I64:
    case SL_GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

static const char *vname(sl_gguf_vtype t)
{
    static const char *const names[SL_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < SL_GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

static void put_le(uint8_t *p, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Grows b to hold `extra` more bytes; logs and returns -SL_ENOMEM when it
 * cannot. */
static int buf_reserve(buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) {
        SL_ERROR("a buffer of %zu bytes cannot grow by %zu", b->len, extra);
        return -SL_ENOMEM;
    }
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        SL_ERROR("out of memory growing a buffer to %zu bytes", cap);
        return -SL_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Callers have reserved the space. */
static void buf_put(buf *b, const void *p, size_t n)
{
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_put_le(buf *b, uint64_t v, size_t bytes)
{
    put_le(b->p + b->len, v, bytes);
    b->len += bytes;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* ---- sink ---- */

static int sink_write(sl_gguf_writer *w, const void *p, size_t n)
{
    if (w->io_err)
        return w->io_err;
    switch (w->sink) {
    case SINK_FILE:
        if (n && fwrite(p, 1, n, w->f) != n) {
            SL_ERROR("writing %zu bytes at output offset %llu failed: %s", n, (unsigned long long)w->written,
                     strerror(errno));
            return w->io_err = -SL_EIO;
        }
        w->written += n;
        return 0;
    case SINK_FD: {
        const uint8_t *q = p;
        while (n) {
            ssize_t r = write(w->fd, q, n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                SL_ERROR("write of %zu bytes at output offset %llu to fd %d failed: %s", n,
                         (unsigned long long)w->written, w->fd, r < 0 ? strerror(errno) : "wrote nothing");
                return w->io_err = -SL_EIO;
            }
            q += r;
            n -= (size_t)r;
            w->written += (uint64_t)r;
        }
        return 0;
    }
    case SINK_MEM:
        if (buf_reserve(&w->mem, n) < 0)
            return w->io_err = -SL_EIO; /* the image is incomplete from here on */
        buf_put(&w->mem, p, n);
        w->written += n;
        return 0;
    }
    return 0;
}

static int sink_zeros(sl_gguf_writer *w, uint64_t n)
{
    while (n) {
        size_t k = n < sizeof k_zeros ? (size_t)n : sizeof k_zeros;
        int rc = sink_write(w, k_zeros, k);
        if (rc)
            return rc;
        n -= k;
    }
    return 0;
}

/* ---- lifetime ---- */

static int writer_new(enum sink sink, FILE *f, int fd, sl_gguf_writer **out)
{
    if (!out) {
        SL_ERROR("out is NULL");
        return -SL_EINVAL;
    }
    *out = NULL;
    sl_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        SL_ERROR("out of memory for a writer");
        return -SL_ENOMEM;
    }
    w->sink = sink;
    w->f = f;
    w->fd = fd;
    w->version = 3;
    w->alignment = DEFAULT_ALIGNMENT;
    *out = w;
    return 0;
}

int sl_gguf_writer_new_file(FILE *f, sl_gguf_writer **out)
{
    if (!f) {
        SL_ERROR("stream is NULL");
        return -SL_EINVAL;
    }
    return writer_new(SINK_FILE, f, -1, out);
}

int sl_gguf_writer_new_fd(int fd, sl_gguf_writer **out)
{
    if (fd < 0) {
        SL_ERROR("invalid file descriptor %d", fd);
        return -SL_EINVAL;
    }
    return writer_new(SINK_FD, NULL, fd, out);
}

int sl_gguf_writer_new_mem(sl_gguf_writer **out)
{
    return writer_new(SINK_MEM, NULL, -1, out);
}

void sl_gguf_writer_free(sl_gguf_writer *w)
{
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->name_index);
    free(w->keys);
    free(w->kv.p);
    free(w->mem.p);
    free(w);
}

static int check_define(const sl_gguf_writer *w, const char *func)
{
    if (w->io_err)
        return w->io_err;
    if (w->phase != PHASE_DEFINE) {
        sl_log(SL_LOG_ERROR, func,
               "the header has already been written: metadata and tensors "
               "must be added before it");
        return -SL_EINVAL;
    }
    return 0;
}

int sl_gguf_writer_set_version(sl_gguf_writer *w, uint32_t version)
{
    SL_ASSERT(w != NULL);
    int rc = check_define(w, __func__);
    if (rc)
        return rc;
    if (version != 2 && version != 3) {
        SL_ERROR("version %u cannot be written (2 or 3)", version);
        return -SL_EINVAL;
    }
    w->version = version;
    return 0;
}

/* ---- metadata ---- */

/* Starts one value of type `type` whose encoding takes `value_bytes` bytes:
 * either a new top-level entry (key, type) or the next element of the open
 * array. Reserves the entry's bytes in full first; on failure nothing has
 * changed. */
static int begin_value(sl_gguf_writer *w, const char *key, sl_gguf_vtype type, size_t value_bytes,
                       const char *func)
{
    SL_ASSERT(w != NULL);
    int rc = check_define(w, func);
    if (rc)
        return rc;
    if (w->depth > 0) {
        open_arr *a = &w->stack[w->depth - 1];
        if (key) {
            sl_log(SL_LOG_ERROR, func, "key '%s' given while an array is open (elements take a NULL key)",
                   key);
            return -SL_EINVAL;
        }
        if (a->type != type) {
            sl_log(SL_LOG_ERROR, func, "element of type %s added to an array of %s", vname(type),
                   vname(a->type));
            return -SL_EINVAL;
        }
        if (buf_reserve(&w->kv, value_bytes) < 0)
            return -SL_ENOMEM;
        a->count++;
        return 0;
    }
    if (!key) {
        sl_log(SL_LOG_ERROR, func, "NULL key outside an array");
        return -SL_EINVAL;
    }
    size_t klen = strlen(key);
    if (klen == 0 || klen > MAX_KEY) {
        sl_log(SL_LOG_ERROR, func, "key of %zu bytes (allowed 1..%u)", klen, MAX_KEY);
        return -SL_EINVAL;
    }
    for (uint64_t i = 0; i < w->n_kv; i++) {
        if (w->keys[i].len == klen && memcmp(w->kv.p + w->keys[i].off, key, klen) == 0) {
            sl_log(SL_LOG_ERROR, func, "duplicate key '%s'", key);
            return -SL_EINVAL;
        }
    }
    if (strcmp(key, "general.alignment") == 0 && type != SL_GGUF_U32) {
        sl_log(SL_LOG_ERROR, func, "general.alignment must be a u32, not %s", vname(type));
        return -SL_EINVAL;
    }
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
        keyref *k = realloc(w->keys, cap * sizeof *k);
        if (!k) {
            sl_log(SL_LOG_ERROR, func, "out of memory for %zu keys", cap);
            return -SL_ENOMEM;
        }
        w->keys = k;
        w->keys_cap = cap;
    }
    if (value_bytes > SIZE_MAX - 12 - klen) {
        sl_log(SL_LOG_ERROR, func, "value of '%s' too large (%zu bytes)", key, value_bytes);
        return -SL_ENOMEM;
    }
    if (buf_reserve(&w->kv, 12 + klen + value_bytes) < 0)
        return -SL_ENOMEM;
    buf_put_le(&w->kv, klen, 8);
    w->keys[w->n_kv].off = w->kv.len;
    w->keys[w->n_kv].len = klen;
    buf_put(&w->kv, key, klen);
    buf_put_le(&w->kv, (uint64_t)type, 4);
    w->n_kv++;
    return 0;
}

static int add_fixed(sl_gguf_writer *w, const char *key, sl_gguf_vtype type, uint64_t bits, const char *func)
{
    size_t n = vsize(type);
    int rc = begin_value(w, key, type, n, func);
    if (rc)
        return rc;
    buf_put_le(&w->kv, bits, n);
    return 0;
}

int sl_gguf_writer_add_u8(sl_gguf_writer *w, const char *key, uint8_t v)
{
    return add_fixed(w, key, SL_GGUF_U8, v, __func__);
}
int sl_gguf_writer_add_i8(sl_gguf_writer *w, const char *key, int8_t v)
{
    return add_fixed(w, key, SL_GGUF_I8, (uint8_t)v, __func__);
}
int sl_gguf_writer_add_u16(sl_gguf_writer *w, const char *key, uint16_t v)
{
    return add_fixed(w, key, SL_GGUF_U16, v, __func__);
}
int sl_gguf_writer_add_i16(sl_gguf_writer *w, const char *key, int16_t v)
{
    return add_fixed(w, key, SL_GGUF_I16, (uint16_t)v, __func__);
}
int sl_gguf_writer_add_u32(sl_gguf_writer *w, const char *key, uint32_t v)
{
    SL_ASSERT(w != NULL);
    bool is_alignment = key && w->depth == 0 && strcmp(key, "general.alignment") == 0;
    if (is_alignment && (v == 0 || (v & (v - 1)))) {
        SL_ERROR("general.alignment %u is not a power of two", v);
        return -SL_EINVAL;
    }
    int rc = add_fixed(w, key, SL_GGUF_U32, v, __func__);
    if (rc == 0 && is_alignment)
        w->alignment = v;
    return rc;
}
int sl_gguf_writer_add_i32(sl_gguf_writer *w, const char *key, int32_t v)
{
    return add_fixed(w, key, SL_GGUF_I32, (uint32_t)v, __func__);
}
int sl_gguf_writer_add_f32(sl_gguf_writer *w, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return add_fixed(w, key, SL_GGUF_F32, u, __func__);
}
int sl_gguf_writer_add_bool(sl_gguf_writer *w, const char *key, bool v)
{
    return add_fixed(w, key, SL_GGUF_BOOL, v ? 1 : 0, __func__);
}
int sl_gguf_writer_add_u64(sl_gguf_writer *w, const char *key, uint64_t v)
{
    return add_fixed(w, key, SL_GGUF_U64, v, __func__);
}
int sl_gguf_writer_add_i64(sl_gguf_writer *w, const char *key, int64_t v)
{
    return add_fixed(w, key, SL_GGUF_I64, (uint64_t)v, __func__);
}
int sl_gguf_writer_add_f64(sl_gguf_writer *w, const char *key, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return add_fixed(w, key, SL_GGUF_F64, u, __func__);
}

int sl_gguf_writer_add_strn(sl_gguf_writer *w, const char *key, const char *s, uint64_t len)
{
    if (!s && len) {
        SL_ERROR("NULL string of length %llu", (unsigned long long)len);
        return -SL_EINVAL;
    }
    if (len > SIZE_MAX - 8) {
        SL_ERROR("string of %llu bytes does not fit in memory", (unsigned long long)len);
        return -SL_ENOMEM;
    }
    int rc = begin_value(w, key, SL_GGUF_STRING, 8 + (size_t)len, __func__);
    if (rc)
        return rc;
    buf_put_le(&w->kv, len, 8);
    buf_put(&w->kv, s, (size_t)len);
    return 0;
}

int sl_gguf_writer_add_str(sl_gguf_writer *w, const char *key, const char *s)
{
    if (!s) {
        SL_ERROR("NULL string for key '%s'", key ? key : "(array element)");
        return -SL_EINVAL;
    }
    return sl_gguf_writer_add_strn(w, key, s, strlen(s));
}

/* Writes the header of an array value (element type, count placeholder)
 * after begin_value reserved it plus `body` bytes, and pushes it. */
static void push_array(sl_gguf_writer *w, sl_gguf_vtype type)
{
    buf_put_le(&w->kv, (uint64_t)type, 4);
    open_arr *a = &w->stack[w->depth++];
    a->type = type;
    a->count_off = w->kv.len;
    a->count = 0;
    buf_put_le(&w->kv, 0, 8);
}

static void pop_array(sl_gguf_writer *w)
{
    open_arr *a = &w->stack[--w->depth];
    put_le(w->kv.p + a->count_off, a->count, 8);
}

static int check_elem_type(sl_gguf_vtype type, const char *func)
{
    if ((unsigned)type >= SL_GGUF_VTYPE_COUNT) {
        sl_log(SL_LOG_ERROR, func, "unknown array element type %d", (int)type);
        return -SL_EINVAL;
    }
    return 0;
}

int sl_gguf_writer_arr_begin(sl_gguf_writer *w, const char *key, sl_gguf_vtype type)
{
    SL_ASSERT(w != NULL);
    int rc = check_elem_type(type, __func__);
    if (rc)
        return rc;
    if (w->depth >= SL_GGUF_WRITER_MAX_DEPTH) {
        SL_ERROR("arrays nested deeper than %d", SL_GGUF_WRITER_MAX_DEPTH);
        return -SL_EINVAL;
    }
    if ((rc = begin_value(w, key, SL_GGUF_ARRAY, 12, __func__)))
        return rc;
    push_array(w, type);
    return 0;
}

int sl_gguf_writer_arr_end(sl_gguf_writer *w)
{
    SL_ASSERT(w != NULL);
    int rc = check_define(w, __func__);
    if (rc)
        return rc;
    if (w->depth == 0) {
        SL_ERROR("no array is open");
        return -SL_EINVAL;
    }
    pop_array(w);
    return 0;
}

int sl_gguf_writer_add_arr(sl_gguf_writer *w, const char *key, sl_gguf_vtype type, const void *elems,
                           uint64_t count)
{
    SL_ASSERT(w != NULL);
    int rc = check_elem_type(type, __func__);
    if (rc)
        return rc;
    size_t es = vsize(type);
    if (!es) {
        SL_ERROR("element type %s is not fixed-size (use add_arr_str or arr_begin)", vname(type));
        return -SL_EINVAL;
    }
    if (!elems && count) {
        SL_ERROR("NULL elements for an array of %llu", (unsigned long long)count);
        return -SL_EINVAL;
    }
    if (count > (SIZE_MAX - 12) / es) {
        SL_ERROR("array of %llu %s elements does not fit in memory", (unsigned long long)count, vname(type));
        return -SL_ENOMEM;
    }
    if (w->depth >= SL_GGUF_WRITER_MAX_DEPTH) {
        SL_ERROR("arrays nested deeper than %d", SL_GGUF_WRITER_MAX_DEPTH);
        return -SL_EINVAL;
    }
    if ((rc = begin_value(w, key, SL_GGUF_ARRAY, 12 + (size_t)count * es, __func__)))
        return rc;
    push_array(w, type);
    const uint8_t *src = elems;
    for (uint64_t i = 0; i < count; i++, src += type == SL_GGUF_BOOL ? sizeof(bool) : es) {
        uint64_t v = 0;
        switch (es) {
        case 1:
            v = type == SL_GGUF_BOOL ? (uint64_t)(*(const bool *)src ? 1 : 0) : *src;
            break;
        case 2: {
            uint16_t x;
            memcpy(&x, src, 2);
            v = x;
            break;
        }
        case 4: {
            uint32_t x;
            memcpy(&x, src, 4);
            v = x;
            break;
        }
        default:
            memcpy(&v, src, 8);
            break;
        }
        buf_put_le(&w->kv, v, es);
    }
    w->stack[w->depth - 1].count = count;
    pop_array(w);
    return 0;
}

int sl_gguf_writer_add_arr_str(sl_gguf_writer *w, const char *key, const char *const *strs, uint64_t count)
{
    SL_ASSERT(w != NULL);
    if (!strs && count) {
        SL_ERROR("NULL string list for an array of %llu", (unsigned long long)count);
        return -SL_EINVAL;
    }
    size_t body = 12;
    for (uint64_t i = 0; i < count; i++) {
        if (!strs[i]) {
            SL_ERROR("string %llu of %llu is NULL", (unsigned long long)i, (unsigned long long)count);
            return -SL_EINVAL;
        }
        size_t n = strlen(strs[i]);
        if (n > SIZE_MAX - 8 - body) {
            SL_ERROR("string array does not fit in memory at element %llu", (unsigned long long)i);
            return -SL_ENOMEM;
        }
        body += 8 + n;
    }
    if (w->depth >= SL_GGUF_WRITER_MAX_DEPTH) {
        SL_ERROR("arrays nested deeper than %d", SL_GGUF_WRITER_MAX_DEPTH);
        return -SL_EINVAL;
    }
    int rc = begin_value(w, key, SL_GGUF_ARRAY, body, __func__);
    if (rc)
        return rc;
    push_array(w, SL_GGUF_STRING);
    for (uint64_t i = 0; i < count; i++) {
        size_t n = strlen(strs[i]);
        buf_put_le(&w->kv, n, 8);
        buf_put(&w->kv, strs[i], n);
    }
    w->stack[w->depth - 1].count = count;
    pop_array(w);
    return 0;
}

/* ---- tensors ---- */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Index of tensor `name` + 1 in the table, or 0. */
static uint64_t name_lookup(const sl_gguf_writer *w, const char *name)
{
    if (!w->name_index_cap)
        return 0;
    uint64_t mask = w->name_index_cap - 1;
    for (uint64_t h = hash_name(name) & mask; w->name_index[h]; h = (h + 1) & mask)
        if (strcmp(w->tensors[w->name_index[h] - 1].name, name) == 0)
            return w->name_index[h];
    return 0;
}

static void name_insert(uint64_t *index, uint64_t cap, const char *name, uint64_t value)
{
    uint64_t mask = cap - 1;
    uint64_t h = hash_name(name) & mask;
    while (index[h])
        h = (h + 1) & mask;
    index[h] = value;
}

/* Makes room for one more tensor record and its index entry. */
static int tensors_grow(sl_gguf_writer *w)
{
    if (w->n_tensors == w->tensors_cap) {
        uint64_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        tinfo *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) {
            SL_ERROR("out of memory for %llu tensor records", (unsigned long long)cap);
            return -SL_ENOMEM;
        }
        w->tensors = t;
        w->tensors_cap = cap;
    }
    if (2 * (w->n_tensors + 1) > w->name_index_cap) {
        uint64_t cap = w->name_index_cap ? w->name_index_cap * 2 : 128;
        uint64_t *idx = calloc((size_t)cap, sizeof *idx);
        if (!idx) {
            SL_ERROR("out of memory for a name index of %llu slots", (unsigned long long)cap);
            return -SL_ENOMEM;
        }
        for (uint64_t i = 0; i < w->n_tensors; i++)
            name_insert(idx, cap, w->tensors[i].name, i + 1);
        free(w->name_index);
        w->name_index = idx;
        w->name_index_cap = cap;
    }
    return 0;
}

int sl_gguf_writer_add_tensor(sl_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                              uint32_t type)
{
    SL_ASSERT(w != NULL);
    int rc = check_define(w, __func__);
    if (rc)
        return rc;
    if (w->depth > 0) {
        SL_ERROR("an array is still open");
        return -SL_EINVAL;
    }
    size_t nlen = name ? strlen(name) : 0;
    if (nlen == 0 || nlen > MAX_TENSOR_NAME) {
        SL_ERROR("tensor name of %zu bytes (allowed 1..%u)", nlen, MAX_TENSOR_NAME);
        return -SL_EINVAL;
    }
    if (n_dims < 1 || n_dims > SL_GGUF_MAX_DIMS || !ne) {
        SL_ERROR("tensor '%s': %u dimensions (allowed 1..%d)", name, n_dims, SL_GGUF_MAX_DIMS);
        return -SL_EINVAL;
    }
    const sl_dtype_info *info = sl_dtype_get(type);
    if (!info) {
        SL_ERROR("tensor '%s': unknown type id %u", name, type);
        return -SL_EINVAL;
    }
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 0) {
            SL_ERROR("tensor '%s': dimension %u is %lld", name, d, (long long)ne[d]);
            return -SL_EINVAL;
        }
        if (ne[d] && nelem > (uint64_t)INT64_MAX / (uint64_t)ne[d]) {
            SL_ERROR("tensor '%s': element count overflows at dimension %u (%lld)", name, d,
                     (long long)ne[d]);
            return -SL_EINVAL;
        }
        nelem *= (uint64_t)ne[d];
    }
    if ((uint64_t)ne[0] % info->block) {
        SL_ERROR("tensor '%s': row length %lld is not a multiple of the %s block size %u", name,
                 (long long)ne[0], info->name, info->block);
        return -SL_EINVAL;
    }
    uint64_t nbytes = sl_dtype_bytes(type, nelem);
    if (nelem && (!nbytes || nbytes > UINT64_MAX - 2ull * UINT32_MAX)) {
        SL_ERROR("tensor '%s': %llu %s elements overflow the byte size", name, (unsigned long long)nelem,
                 info->name);
        return -SL_EINVAL;
    }
    if (name_lookup(w, name)) {
        SL_ERROR("duplicate tensor name '%s'", name);
        return -SL_EINVAL;
    }
    if ((rc = tensors_grow(w)))
        return rc;
    char *copy = malloc(nlen + 1);
    if (!copy) {
        SL_ERROR("out of memory for tensor name '%s'", name);
        return -SL_ENOMEM;
    }
    memcpy(copy, name, nlen + 1);
    tinfo *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = copy;
    t->n_dims = n_dims;
    t->type = type;
    for (int d = 0; d < SL_GGUF_MAX_DIMS; d++)
        t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    name_insert(w->name_index, w->name_index_cap, copy, w->n_tensors + 1);
    w->n_tensors++;
    return 0;
}

/* ---- output ---- */

int sl_gguf_writer_write_header(sl_gguf_writer *w)
{
    SL_ASSERT(w != NULL);
    int rc = check_define(w, __func__);
    if (rc)
        return rc;
    if (w->depth > 0) {
        SL_ERROR("%d array(s) still open", w->depth);
        return -SL_EINVAL;
    }
    /* Offsets relative to the data section; each tensor padded to the
     * alignment. Sizes were bounded in add_tensor, the sum is checked here. */
    uint64_t rel = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        uint64_t padded = align_up(w->tensors[i].nbytes, w->alignment);
        if (rel > UINT64_MAX / 2 - padded) {
            SL_ERROR("tensor data exceeds 2^63 bytes at tensor '%s'", w->tensors[i].name);
            return -SL_EINVAL;
        }
        w->tensors[i].rel_offset = rel;
        rel += padded;
    }
    size_t info_bytes = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++)
        info_bytes += 8 + strlen(w->tensors[i].name) + 4 + 8 * w->tensors[i].n_dims + 4 + 8;
    if (w->kv.len > SIZE_MAX / 2 || info_bytes > SIZE_MAX / 2 - w->kv.len - 24 - w->alignment) {
        SL_ERROR("header of %zu + %zu bytes does not fit in memory", w->kv.len, info_bytes);
        return -SL_ENOMEM;
    }
    size_t hdr_len = 24 + w->kv.len + info_bytes;
    size_t total = (size_t)align_up(hdr_len, w->alignment);
    buf h = {0};
    if (buf_reserve(&h, total) < 0)
        return -SL_ENOMEM;
    buf_put_le(&h, GGUF_MAGIC, 4);
    buf_put_le(&h, w->version, 4);
    buf_put_le(&h, w->n_tensors, 8);
    buf_put_le(&h, w->n_kv, 8);
    buf_put(&h, w->kv.p, w->kv.len);
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const tinfo *t = &w->tensors[i];
        size_t nlen = strlen(t->name);
        buf_put_le(&h, nlen, 8);
        buf_put(&h, t->name, nlen);
        buf_put_le(&h, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            buf_put_le(&h, (uint64_t)t->ne[d], 8);
        buf_put_le(&h, t->type, 4);
        buf_put_le(&h, t->rel_offset, 8);
    }
    SL_ASSERT(h.len == hdr_len);
    memset(h.p + h.len, 0, total - h.len);
    h.len = total;
    rc = sink_write(w, h.p, h.len);
    free(h.p);
    if (rc)
        return rc;
    w->data_offset = total;
    w->file_size = total + rel;
    w->phase = PHASE_DATA;
    w->cur = 0;
    w->cur_written = 0;
    return 0;
}

/* Bytes of tensor data not yet supplied, over all tensors. */
static uint64_t data_remaining(const sl_gguf_writer *w)
{
    uint64_t left = 0;
    if (w->cur < w->n_tensors && w->cur_written < w->tensors[w->cur].nbytes)
        left = w->tensors[w->cur].nbytes - w->cur_written;
    for (uint64_t i = w->cur + 1; i < w->n_tensors; i++)
        left += w->tensors[i].nbytes;
    return left;
}

uint64_t sl_gguf_writer_data_remaining(const sl_gguf_writer *w)
{
    SL_ASSERT(w != NULL);
    return data_remaining(w);
}

/* Moves past tensors whose data is complete, writing their padding. */
static int advance(sl_gguf_writer *w)
{
    while (w->cur < w->n_tensors && w->cur_written >= w->tensors[w->cur].nbytes) {
        const tinfo *t = &w->tensors[w->cur];
        int rc = sink_zeros(w, align_up(t->nbytes, w->alignment) - t->nbytes);
        if (rc)
            return rc;
        w->cur++;
        w->cur_written = 0;
    }
    return 0;
}

int sl_gguf_writer_write_data(sl_gguf_writer *w, const void *data, size_t n)
{
    SL_ASSERT(w != NULL);
    if (w->io_err)
        return w->io_err;
    if (w->phase != PHASE_DATA) {
        SL_ERROR(w->phase == PHASE_DEFINE ? "tensor data before the header was written"
                                          : "tensor data after finish");
        return -SL_EINVAL;
    }
    if (!data && n) {
        SL_ERROR("NULL data of %zu bytes", n);
        return -SL_EINVAL;
    }
    uint64_t left = data_remaining(w);
    if (n > left) {
        SL_ERROR("%zu bytes of tensor data offered, only %llu still expected", n, (unsigned long long)left);
        return -SL_EINVAL;
    }
    const uint8_t *p = data;
    int rc = advance(w); /* zero-sized tensors at the front */
    while (!rc && n) {
        const tinfo *t = &w->tensors[w->cur];
        uint64_t room = t->nbytes - w->cur_written;
        size_t k = room < n ? (size_t)room : n;
        if ((rc = sink_write(w, p, k)))
            break;
        p += k;
        n -= k;
        w->cur_written += k;
        rc = advance(w);
    }
    return rc;
}

int sl_gguf_writer_finish(sl_gguf_writer *w)
{
    SL_ASSERT(w != NULL);
    int rc;
    if (w->io_err)
        return w->io_err;
    if (w->phase == PHASE_DONE)
        return 0;
    if (w->phase == PHASE_DEFINE && (rc = sl_gguf_writer_write_header(w)))
        return rc;
    if ((rc = advance(w)))
        return rc;
    if (w->cur < w->n_tensors) {
        const tinfo *t = &w->tensors[w->cur];
        SL_ERROR("tensor '%s' (%llu of %llu) has %llu of its %llu data bytes; %llu bytes missing in all",
                 t->name, (unsigned long long)w->cur + 1, (unsigned long long)w->n_tensors,
                 (unsigned long long)w->cur_written, (unsigned long long)t->nbytes,
                 (unsigned long long)data_remaining(w));
        return -SL_EINVAL;
    }
    if (w->sink == SINK_FILE && fflush(w->f) != 0) {
        SL_ERROR("flushing the output failed: %s", strerror(errno));
        return w->io_err = -SL_EIO;
    }
    w->phase = PHASE_DONE;
    return 0;
}

int sl_gguf_writer_tensor_offset(const sl_gguf_writer *w, uint64_t i, uint64_t *offset)
{
    SL_ASSERT(w != NULL && offset != NULL);
    if (w->phase == PHASE_DEFINE || i >= w->n_tensors) {
        SL_ERROR("no offset for tensor %llu (%llu tensors, header %s)", (unsigned long long)i,
                 (unsigned long long)w->n_tensors, w->phase == PHASE_DEFINE ? "not written" : "written");
        return -SL_EINVAL;
    }
    *offset = w->data_offset + w->tensors[i].rel_offset;
    return 0;
}

int sl_gguf_writer_file_size(const sl_gguf_writer *w, uint64_t *size)
{
    SL_ASSERT(w != NULL && size != NULL);
    if (w->phase == PHASE_DEFINE) {
        SL_ERROR("the size is known once the header is written");
        return -SL_EINVAL;
    }
    *size = w->file_size;
    return 0;
}

int sl_gguf_writer_mem_take(sl_gguf_writer *w, uint8_t **out, size_t *len)
{
    SL_ASSERT(w != NULL && out != NULL && len != NULL);
    if (w->sink != SINK_MEM || w->phase != PHASE_DONE || w->mem_taken) {
        SL_ERROR("no image to take (%s writer, %s, %s)", w->sink == SINK_MEM ? "memory" : "stream",
                 w->phase == PHASE_DONE ? "finished" : "not finished", w->mem_taken ? "taken" : "not taken");
        return -SL_EINVAL;
    }
    *out = w->mem.p;
    *len = w->mem.len;
    w->mem = (buf){0};
    w->mem_taken = true;
    return 0;
}
