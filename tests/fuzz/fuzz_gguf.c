/* libFuzzer target for the GGUF reader: parses the input with
 * sl_gguf_open_mem and, when it opens, touches everything the accessors
 * expose (every key through every typed getter, every array element at
 * every nesting level, every tensor's name lookup and first and last data
 * byte), so that AddressSanitizer checks each pointer the reader hands out.
 * Seeds come from make_gguf_corpus; tests/fuzz/run.sh drives it. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/gguf.h"

/* Sinks the values so the reads are not optimised away. */
static volatile uint64_t g_sink;

static void walk_arr(const sl_gguf_arr *a)
{
    for (uint64_t i = 0; i < a->count; i++) {
        switch (a->type) {
        case SL_GGUF_STRING: {
            sl_str s = sl_gguf_arr_str(a, i);
            if (s.len)
                g_sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
            break;
        }
        case SL_GGUF_ARRAY: {
            sl_gguf_arr sub;
            sl_gguf_arr_arr(a, i, &sub);
            walk_arr(&sub);
            break;
        }
        case SL_GGUF_F32:
        case SL_GGUF_F64:
            g_sink += sl_gguf_arr_f64(a, i) > 0;
            break;
        case SL_GGUF_BOOL:
            g_sink += (uint64_t)sl_gguf_arr_i64(a, i);
            break;
        default:
            g_sink += (uint64_t)sl_gguf_arr_i64(a, i) + (sl_gguf_arr_f64(a, i) > 0);
            break;
        }
    }
}

/* Every getter by key, including the ones of the wrong type: they must
 * answer -SL_ETYPE, not misread. */
static void get_all(const sl_gguf *g, const char *key)
{
    uint64_t u;
    uint32_t u32;
    int64_t i;
    float f;
    bool b;
    sl_str s;
    sl_gguf_arr a;
    if (sl_gguf_get_u64(g, key, &u) == 0)
        g_sink += u;
    if (sl_gguf_get_u32(g, key, &u32) == 0)
        g_sink += u32;
    if (sl_gguf_get_i64(g, key, &i) == 0)
        g_sink += (uint64_t)i;
    if (sl_gguf_get_f32(g, key, &f) == 0)
        g_sink += f > 0;
    if (sl_gguf_get_bool(g, key, &b) == 0)
        g_sink += b;
    if (sl_gguf_get_str(g, key, &s) == 0 && s.len)
        g_sink += (uint8_t)s.ptr[s.len - 1];
    if (sl_gguf_get_arr(g, key, &a) == 0)
        g_sink += a.count;
}

static void walk(const sl_gguf *g)
{
    g_sink += sl_gguf_version(g) + sl_gguf_alignment(g) + sl_gguf_data_offset(g) + sl_gguf_file_size(g);
    char name[256];
    for (uint64_t k = 0; k < sl_gguf_kv_count(g); k++) {
        sl_str key = sl_gguf_kv_key(g, k);
        if (key.len < sizeof name && !memchr(key.ptr, 0, key.len)) {
            memcpy(name, key.ptr, key.len);
            name[key.len] = 0;
            get_all(g, name);
        }
        uint64_t u;
        int64_t i;
        double d;
        sl_str s;
        sl_gguf_arr a;
        if (sl_gguf_kv_u64(g, k, &u) == 0)
            g_sink += u;
        if (sl_gguf_kv_i64(g, k, &i) == 0)
            g_sink += (uint64_t)i;
        if (sl_gguf_kv_f64(g, k, &d) == 0)
            g_sink += d > 0;
        if (sl_gguf_kv_str(g, k, &s) == 0 && s.len)
            g_sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
        if (sl_gguf_kv_arr(g, k, &a) == 0)
            walk_arr(&a);
        g_sink += (uint64_t)sl_gguf_kv_type(g, k);
    }
    for (uint64_t t = 0; t < sl_gguf_tensor_count(g); t++) {
        const sl_gguf_tensor *x = sl_gguf_tensor_at(g, t);
        if (x->name.len < sizeof name && !memchr(x->name.ptr, 0, x->name.len)) {
            memcpy(name, x->name.ptr, x->name.len);
            name[x->name.len] = 0;
            g_sink += sl_gguf_tensor_find(g, name) == x;
        }
        const uint8_t *p = sl_gguf_tensor_data(g, x);
        if (x->nbytes)
            g_sink += p[0] + p[x->nbytes - 1];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_gguf *g = NULL;
    if (sl_gguf_open_mem(data, size, &g) == 0) {
        walk(g);
        sl_gguf_close(g);
    }
    return 0;
}
