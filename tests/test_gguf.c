/* GGUF reader tests: a round trip through the writer covering every value
 * type, the real models and vocabularies in ../shared/testdata, and hostile
 * inputs (truncations, absurd counts and lengths, bad dimensions, types,
 * offsets, alignments, duplicates, deep nesting, byte flips), each of which
 * must fail with a negative code and one log line, never crash. Run it under
 * ASan + UBSan as well: every image is copied into a buffer of exactly its
 * size so that an over-read is caught. */
#include "common/log.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---- */

typedef struct image {
    uint8_t *p;
    size_t len;
} image;

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Offset of the first occurrence of the NUL-terminated `needle`. */
static size_t find(const image *im, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= im->len; i++)
        if (memcmp(im->p + i, needle, n) == 0)
            return i;
    fprintf(stderr, "test bug: '%s' not in image\n", needle);
    abort();
}

static image copy_image(const image *im, size_t len)
{
    image c = {malloc(len ? len : 1), len};
    SL_ASSERT(c.p != NULL);
    memcpy(c.p, im->p, len);
    return c;
}

/* stderr goes to a temporary file while a hostile image is parsed, so that
 * the test can check the reader's message; `quiet` just discards it. */
static int g_saved_stderr = -1;
static FILE *g_capture;

static void capture_begin(void)
{
    fflush(stderr);
    g_capture = tmpfile();
    SL_ASSERT(g_capture != NULL);
    g_saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(g_capture), STDERR_FILENO);
}

/* Restores stderr; copies what was logged into buf. */
static void capture_end(char *buf, size_t n)
{
    fflush(stderr);
    dup2(g_saved_stderr, STDERR_FILENO);
    close(g_saved_stderr);
    size_t got = 0;
    if (buf) {
        rewind(g_capture);
        got = fread(buf, 1, n - 1, g_capture);
        buf[got] = 0;
    }
    fclose(g_capture);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Walks everything the accessors expose, so that ASan sees every pointer the
 * reader hands out being used. Returns a checksum to keep the reads alive. */
static uint64_t walk_arr(const sl_gguf_arr *a, int depth)
{
    uint64_t sum = a->count;
    for (uint64_t i = 0; i < a->count; i++) {
        switch (a->type) {
        case SL_GGUF_STRING: {
            sl_str s = sl_gguf_arr_str(a, i);
            sum += s.len + (s.len ? (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1] : 0);
            break;
        }
        case SL_GGUF_ARRAY: {
            sl_gguf_arr sub;
            sl_gguf_arr_arr(a, i, &sub);
            sum += walk_arr(&sub, depth + 1);
            break;
        }
        case SL_GGUF_F32:
        case SL_GGUF_F64: {
            double d = sl_gguf_arr_f64(a, i);
            sum += d == d ? 1 : 2;
            break;
        }
        default:
            sum += (uint64_t)sl_gguf_arr_i64(a, i);
            if (a->type != SL_GGUF_BOOL)
                sum += (uint64_t)(int64_t)sl_gguf_arr_f64(a, i);
            break;
        }
    }
    return sum;
}

static uint64_t walk(const sl_gguf *g)
{
    uint64_t sum = sl_gguf_version(g) + sl_gguf_alignment(g) + sl_gguf_data_offset(g);
    for (uint64_t i = 0; i < sl_gguf_kv_count(g); i++) {
        sl_str key = sl_gguf_kv_key(g, i);
        sum += key.len + (key.len ? (uint8_t)key.ptr[key.len - 1] : 0);
        uint64_t u;
        int64_t s;
        double d;
        sl_str str;
        sl_gguf_arr arr;
        switch (sl_gguf_kv_type(g, i)) {
        case SL_GGUF_STRING:
            if (sl_gguf_kv_str(g, i, &str) == 0)
                sum += str.len + (str.len ? (uint8_t)str.ptr[str.len - 1] : 0);
            break;
        case SL_GGUF_ARRAY:
            if (sl_gguf_kv_arr(g, i, &arr) == 0)
                sum += walk_arr(&arr, 0);
            break;
        default:
            if (sl_gguf_kv_u64(g, i, &u) == 0)
                sum += u;
            if (sl_gguf_kv_i64(g, i, &s) == 0)
                sum += (uint64_t)s;
            if (sl_gguf_kv_f64(g, i, &d) == 0)
                sum += d == d;
            break;
        }
    }
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        char name[128];
        size_t n = t->name.len < sizeof name - 1 ? (size_t)t->name.len : sizeof name - 1;
        memcpy(name, t->name.ptr, n);
        name[n] = 0;
        const sl_gguf_tensor *f = sl_gguf_tensor_find(g, name);
        sum += f != NULL;
        const uint8_t *data = sl_gguf_tensor_data(g, t);
        if (t->nbytes)
            sum += data[0] + data[t->nbytes - 1];
    }
    return sum;
}

/* Opens a copy of exactly `len` bytes of im; walks it when it opens. */
static int open_prefix(const image *im, size_t len)
{
    image c = copy_image(im, len);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open_mem(c.p, c.len, &g);
    if (rc == 0) {
        volatile uint64_t keep = walk(g);
        (void)keep;
        sl_gguf_close(g);
    } else if (g != NULL) {
        rc = 1000; /* a failed open must leave *out NULL */
    }
    free(c.p);
    return rc;
}

/* ---- building images with the writer ---- */

static uint8_t pattern(uint64_t tensor, uint64_t i)
{
    return (uint8_t)(tensor * 37 + i * 7 + 1);
}

static void write_tensor_data(sl_gguf_writer *w, const uint64_t *nbytes, uint64_t n_tensors)
{
    for (uint64_t t = 0; t < n_tensors; t++) {
        for (uint64_t i = 0; i < nbytes[t]; i++) {
            uint8_t b = pattern(t, i);
            SL_ASSERT(sl_gguf_writer_write_data(w, &b, 1) == 0);
        }
    }
}

static image take(sl_gguf_writer *w)
{
    image im = {0};
    SL_ASSERT(sl_gguf_writer_finish(w) == 0);
    SL_ASSERT(sl_gguf_writer_mem_take(w, &im.p, &im.len) == 0);
    sl_gguf_writer_free(w);
    return im;
}

/* A small file the hostile tests start from: a few keys of several kinds,
 * two tensors. Names are unique byte strings so that tests can find them. */
static image make_small(uint32_t version)
{
    sl_gguf_writer *w;
    SL_ASSERT(sl_gguf_writer_new_mem(&w) == 0);
    SL_ASSERT(sl_gguf_writer_set_version(w, version) == 0);
    SL_ASSERT(sl_gguf_writer_add_str(w, "general.architecture", "llama") == 0);
    SL_ASSERT(sl_gguf_writer_add_u32(w, "general.alignment", 32) == 0);
    SL_ASSERT(sl_gguf_writer_add_u32(w, "key.one", 1) == 0);
    SL_ASSERT(sl_gguf_writer_add_i8(w, "key.two", -2) == 0);
    const uint8_t u8s[3] = {1, 2, 3};
    SL_ASSERT(sl_gguf_writer_add_arr(w, "arr.u8", SL_GGUF_U8, u8s, 3) == 0);
    const char *strs[2] = {"a", "bc"};
    SL_ASSERT(sl_gguf_writer_add_arr_str(w, "arr.str", strs, 2) == 0);
    SL_ASSERT(sl_gguf_writer_arr_begin(w, "arr.nest", SL_GGUF_ARRAY) == 0);
    const uint16_t n1[2] = {1, 2}, n2[1] = {3};
    SL_ASSERT(sl_gguf_writer_add_arr(w, NULL, SL_GGUF_U16, n1, 2) == 0);
    SL_ASSERT(sl_gguf_writer_add_arr(w, NULL, SL_GGUF_U16, n2, 1) == 0);
    SL_ASSERT(sl_gguf_writer_arr_end(w) == 0);
    const int64_t ne_a[2] = {4, 2}, ne_b[1] = {32};
    SL_ASSERT(sl_gguf_writer_add_tensor(w, "tensor_a", 2, ne_a, SL_F32) == 0);
    SL_ASSERT(sl_gguf_writer_add_tensor(w, "tensor_b", 1, ne_b, SL_Q8_0) == 0);
    SL_ASSERT(sl_gguf_writer_write_header(w) == 0);
    const uint64_t nb[2] = {32, 34};
    write_tensor_data(w, nb, 2);
    return take(w);
}

/* ---- round trip ---- */

static void test_round_trip(void)
{
    sl_gguf_writer *w;
    CHECK(sl_gguf_writer_new_mem(&w) == 0, "new");
    sl_gguf_writer_add_u8(w, "t.u8", 200);
    sl_gguf_writer_add_i8(w, "t.i8", -100);
    sl_gguf_writer_add_u16(w, "t.u16", 60000);
    sl_gguf_writer_add_i16(w, "t.i16", -30000);
    sl_gguf_writer_add_u32(w, "t.u32", 4000000000u);
    sl_gguf_writer_add_i32(w, "t.i32", -2000000000);
    sl_gguf_writer_add_f32(w, "t.f32", 1.5f);
    sl_gguf_writer_add_bool(w, "t.bool", true);
    sl_gguf_writer_add_str(w, "t.str", "hello");
    sl_gguf_writer_add_strn(w, "t.strn", "a\0b", 3);
    sl_gguf_writer_add_str(w, "t.empty", "");
    sl_gguf_writer_add_u64(w, "t.u64", UINT64_MAX);
    sl_gguf_writer_add_i64(w, "t.i64", INT64_MIN);
    sl_gguf_writer_add_f64(w, "t.f64", -0.25);
    CHECK(sl_gguf_writer_add_u32(w, "general.alignment", 64) == 0, "alignment 64");

    const uint8_t a_u8[] = {0, 255, 7};
    const int8_t a_i8[] = {-128, 127};
    const uint16_t a_u16[] = {65535, 1};
    const int16_t a_i16[] = {-32768, 5};
    const uint32_t a_u32[] = {1, 2, 3, 0xffffffffu};
    const int32_t a_i32[] = {-1, INT32_MAX};
    const float a_f32[] = {0.5f, -2.0f, 1e30f};
    const bool a_bool[] = {true, false, true};
    const uint64_t a_u64[] = {UINT64_MAX, 0};
    const int64_t a_i64[] = {INT64_MIN, INT64_MAX, -5};
    const double a_f64[] = {3.25, -1e300};
    sl_gguf_writer_add_arr(w, "a.u8", SL_GGUF_U8, a_u8, 3);
    sl_gguf_writer_add_arr(w, "a.i8", SL_GGUF_I8, a_i8, 2);
    sl_gguf_writer_add_arr(w, "a.u16", SL_GGUF_U16, a_u16, 2);
    sl_gguf_writer_add_arr(w, "a.i16", SL_GGUF_I16, a_i16, 2);
    sl_gguf_writer_add_arr(w, "a.u32", SL_GGUF_U32, a_u32, 4);
    sl_gguf_writer_add_arr(w, "a.i32", SL_GGUF_I32, a_i32, 2);
    sl_gguf_writer_add_arr(w, "a.f32", SL_GGUF_F32, a_f32, 3);
    sl_gguf_writer_add_arr(w, "a.bool", SL_GGUF_BOOL, a_bool, 3);
    sl_gguf_writer_add_arr(w, "a.u64", SL_GGUF_U64, a_u64, 2);
    sl_gguf_writer_add_arr(w, "a.i64", SL_GGUF_I64, a_i64, 3);
    sl_gguf_writer_add_arr(w, "a.f64", SL_GGUF_F64, a_f64, 2);
    sl_gguf_writer_add_arr(w, "a.empty", SL_GGUF_U32, NULL, 0);
    const char *words[] = {"alpha", "", "gamma delta"};
    sl_gguf_writer_add_arr_str(w, "a.str", words, 3);
    /* [[1, 2, 3], [], [[-1], ["x", "yz"]]] is not expressible (mixed
     * types), so: nested u32 arrays, nested string arrays, three levels. */
    sl_gguf_writer_arr_begin(w, "n.u32", SL_GGUF_ARRAY);
    sl_gguf_writer_add_arr(w, NULL, SL_GGUF_U32, a_u32, 3);
    sl_gguf_writer_add_arr(w, NULL, SL_GGUF_U32, NULL, 0);
    sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_U32);
    sl_gguf_writer_add_u32(w, NULL, 42);
    sl_gguf_writer_arr_end(w);
    sl_gguf_writer_arr_end(w);
    sl_gguf_writer_arr_begin(w, "n.str", SL_GGUF_ARRAY);
    sl_gguf_writer_add_arr_str(w, NULL, words, 2);
    sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_STRING);
    sl_gguf_writer_add_strn(w, NULL, "x\0y", 3);
    sl_gguf_writer_arr_end(w);
    sl_gguf_writer_arr_end(w);
    sl_gguf_writer_arr_begin(w, "n.deep", SL_GGUF_ARRAY);
    sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_ARRAY);
    sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_F64);
    sl_gguf_writer_add_f64(w, NULL, 2.5);
    sl_gguf_writer_add_f64(w, NULL, -7.0);
    sl_gguf_writer_arr_end(w);
    sl_gguf_writer_arr_end(w);
    sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_ARRAY);
    sl_gguf_writer_arr_end(w);
    CHECK(sl_gguf_writer_arr_end(w) == 0, "nested arrays closed");

    struct {
        const char *name;
        uint32_t n_dims;
        int64_t ne[4];
        uint32_t type;
        uint64_t nbytes;
    } ts[] = {
        {"w.f32", 2, {3, 5}, SL_F32, 60},        {"w.f16", 1, {7}, SL_F16, 14},
        {"w.q8_0", 2, {64, 3}, SL_Q8_0, 6 * 34}, {"w.q4_k", 3, {256, 2, 2}, SL_Q4_K, 4 * 144},
        {"w.empty", 2, {0, 4}, SL_F32, 0},       {"w.bf16", 4, {2, 1, 3, 2}, SL_BF16, 24},
    };
    enum { NT = sizeof ts / sizeof ts[0] };
    uint64_t nb[NT];
    for (int i = 0; i < NT; i++) {
        CHECK(sl_gguf_writer_add_tensor(w, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type) == 0, "add %s",
              ts[i].name);
        nb[i] = ts[i].nbytes;
    }
    CHECK(sl_gguf_writer_write_header(w) == 0, "header");
    uint64_t offs[NT], fsize;
    for (int i = 0; i < NT; i++)
        sl_gguf_writer_tensor_offset(w, (uint64_t)i, &offs[i]);
    sl_gguf_writer_file_size(w, &fsize);
    write_tensor_data(w, nb, NT);
    image im = take(w);
    CHECK(im.len == fsize, "file size %zu vs announced %" PRIu64, im.len, fsize);

    image c = copy_image(&im, im.len);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open_mem(c.p, c.len, &g);
    CHECK(rc == 0 && g, "round trip opens (%d)", rc);
    if (!g) {
        free(c.p);
        free(im.p);
        return;
    }
    CHECK(sl_gguf_version(g) == 3, "version");
    CHECK(sl_gguf_alignment(g) == 64, "alignment %u", sl_gguf_alignment(g));
    CHECK(sl_gguf_data_offset(g) % 64 == 0, "data offset aligned");
    CHECK(sl_gguf_file_size(g) == im.len, "size");
    CHECK(sl_gguf_kv_count(g) == 15 + 13 + 3, "kv count %" PRIu64, sl_gguf_kv_count(g));

    uint64_t u;
    int64_t s;
    float f;
    bool b;
    sl_str str;
    CHECK(sl_gguf_get_u64(g, "t.u8", &u) == 0 && u == 200, "u8");
    CHECK(sl_gguf_get_i64(g, "t.i8", &s) == 0 && s == -100, "i8");
    CHECK(sl_gguf_get_u64(g, "t.u16", &u) == 0 && u == 60000, "u16");
    CHECK(sl_gguf_get_i64(g, "t.i16", &s) == 0 && s == -30000, "i16");
    uint32_t u32;
    CHECK(sl_gguf_get_u32(g, "t.u32", &u32) == 0 && u32 == 4000000000u, "u32");
    CHECK(sl_gguf_get_i64(g, "t.i32", &s) == 0 && s == -2000000000, "i32");
    CHECK(sl_gguf_get_f32(g, "t.f32", &f) == 0 && f == 1.5f, "f32");
    CHECK(sl_gguf_get_bool(g, "t.bool", &b) == 0 && b, "bool");
    CHECK(sl_gguf_get_str(g, "t.str", &str) == 0 && sl_str_eq(str, "hello"), "str");
    CHECK(sl_gguf_get_str(g, "t.strn", &str) == 0 && str.len == 3 && memcmp(str.ptr, "a\0b", 3) == 0,
          "string with NUL");
    CHECK(sl_gguf_get_str(g, "t.empty", &str) == 0 && str.len == 0, "empty string");
    CHECK(sl_gguf_get_u64(g, "t.u64", &u) == 0 && u == UINT64_MAX, "u64");
    CHECK(sl_gguf_get_i64(g, "t.i64", &s) == 0 && s == INT64_MIN, "i64");
    CHECK(sl_gguf_get_f32(g, "t.f64", &f) == 0 && f == -0.25f, "f64");
    CHECK(sl_gguf_get_u64(g, "t.i8", &u) == -SL_ETYPE, "negative into u64 refused");
    CHECK(sl_gguf_get_u64(g, "t.str", &u) == -SL_ETYPE, "string is not an integer");
    CHECK(sl_gguf_get_u64(g, "no.such.key", &u) == -SL_ENOTFOUND, "absent key");
    int64_t ix = sl_gguf_find(g, "t.u8");
    CHECK(ix == 0 && sl_gguf_kv_type(g, 0) == SL_GGUF_U8 && sl_str_eq(sl_gguf_kv_key(g, 0), "t.u8"),
          "entry order kept");

    sl_gguf_arr a, sub, sub2;
    CHECK(sl_gguf_get_arr(g, "a.u8", &a) == 0 && a.type == SL_GGUF_U8 && a.count == 3 &&
              sl_gguf_arr_i64(&a, 1) == 255,
          "u8 array");
    CHECK(sl_gguf_get_arr(g, "a.i8", &a) == 0 && sl_gguf_arr_i64(&a, 0) == -128, "i8 array");
    CHECK(sl_gguf_get_arr(g, "a.u16", &a) == 0 && sl_gguf_arr_i64(&a, 0) == 65535, "u16 array");
    CHECK(sl_gguf_get_arr(g, "a.i16", &a) == 0 && sl_gguf_arr_i64(&a, 0) == -32768, "i16 array");
    CHECK(sl_gguf_get_arr(g, "a.u32", &a) == 0 && a.count == 4 && sl_gguf_arr_i64(&a, 3) == 0xffffffffll,
          "u32 array");
    CHECK(sl_gguf_get_arr(g, "a.i32", &a) == 0 && sl_gguf_arr_i64(&a, 1) == INT32_MAX, "i32 array");
    CHECK(sl_gguf_get_arr(g, "a.f32", &a) == 0 && sl_gguf_arr_f64(&a, 2) == (double)1e30f, "f32 array");
    CHECK(sl_gguf_get_arr(g, "a.bool", &a) == 0 && a.type == SL_GGUF_BOOL && sl_gguf_arr_i64(&a, 0) == 1 &&
              sl_gguf_arr_i64(&a, 1) == 0,
          "bool array");
    CHECK(sl_gguf_get_arr(g, "a.u64", &a) == 0 && (uint64_t)sl_gguf_arr_i64(&a, 0) == UINT64_MAX,
          "u64 array");
    CHECK(sl_gguf_get_arr(g, "a.i64", &a) == 0 && sl_gguf_arr_i64(&a, 0) == INT64_MIN &&
              sl_gguf_arr_i64(&a, 2) == -5,
          "i64 array");
    CHECK(sl_gguf_get_arr(g, "a.f64", &a) == 0 && sl_gguf_arr_f64(&a, 1) == -1e300, "f64 array");
    CHECK(sl_gguf_get_arr(g, "a.empty", &a) == 0 && a.count == 0 && a.type == SL_GGUF_U32, "empty array");
    CHECK(sl_gguf_get_arr(g, "a.str", &a) == 0 && a.type == SL_GGUF_STRING && a.count == 3 &&
              sl_str_eq(sl_gguf_arr_str(&a, 0), "alpha") && sl_gguf_arr_str(&a, 1).len == 0 &&
              sl_str_eq(sl_gguf_arr_str(&a, 2), "gamma delta"),
          "string array");
    CHECK(sl_gguf_get_arr(g, "n.u32", &a) == 0 && a.type == SL_GGUF_ARRAY && a.count == 3, "nested u32");
    if (a.count == 3) {
        sl_gguf_arr_arr(&a, 0, &sub);
        CHECK(sub.type == SL_GGUF_U32 && sub.count == 3 && sl_gguf_arr_i64(&sub, 2) == 3, "nested [0]");
        sl_gguf_arr_arr(&a, 1, &sub);
        CHECK(sub.type == SL_GGUF_U32 && sub.count == 0, "nested [1] empty");
        sl_gguf_arr_arr(&a, 2, &sub);
        CHECK(sub.count == 1 && sl_gguf_arr_i64(&sub, 0) == 42, "nested [2] built element-wise");
    }
    CHECK(sl_gguf_get_arr(g, "n.str", &a) == 0 && a.count == 2, "nested strings");
    if (a.count == 2) {
        sl_gguf_arr_arr(&a, 0, &sub);
        CHECK(sub.type == SL_GGUF_STRING && sub.count == 2 && sl_str_eq(sl_gguf_arr_str(&sub, 0), "alpha"),
              "nested string [0]");
        sl_gguf_arr_arr(&a, 1, &sub);
        str = sub.count == 1 ? sl_gguf_arr_str(&sub, 0) : (sl_str){0};
        CHECK(str.len == 3 && memcmp(str.ptr, "x\0y", 3) == 0, "nested string with NUL");
    }
    CHECK(sl_gguf_get_arr(g, "n.deep", &a) == 0 && a.count == 2, "three levels");
    if (a.count == 2) {
        sl_gguf_arr_arr(&a, 0, &sub);
        CHECK(sub.type == SL_GGUF_ARRAY && sub.count == 1, "level 2");
        if (sub.count == 1) {
            sl_gguf_arr_arr(&sub, 0, &sub2);
            CHECK(sub2.type == SL_GGUF_F64 && sub2.count == 2 && sl_gguf_arr_f64(&sub2, 1) == -7.0,
                  "level 3");
        }
        sl_gguf_arr_arr(&a, 1, &sub);
        CHECK(sub.type == SL_GGUF_ARRAY && sub.count == 0, "empty array of arrays");
    }

    CHECK(sl_gguf_tensor_count(g) == NT, "tensor count");
    for (int i = 0; i < NT && (uint64_t)i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, (uint64_t)i);
        CHECK(sl_str_eq(t->name, ts[i].name), "tensor %d name", i);
        CHECK(sl_gguf_tensor_find(g, ts[i].name) == t, "find %s", ts[i].name);
        CHECK(t->n_dims == ts[i].n_dims && t->type == ts[i].type, "%s dims/type", ts[i].name);
        for (uint32_t d = 0; d < 4; d++)
            CHECK(t->ne[d] == (d < ts[i].n_dims ? ts[i].ne[d] : 1), "%s ne[%u]", ts[i].name, d);
        CHECK(t->nbytes == ts[i].nbytes, "%s nbytes %" PRIu64, ts[i].name, t->nbytes);
        CHECK(t->offset == offs[i], "%s offset %" PRIu64 " vs writer %" PRIu64, ts[i].name, t->offset,
              offs[i]);
        CHECK(t->offset % 64 == 0, "%s aligned", ts[i].name);
        const uint8_t *d = sl_gguf_tensor_data(g, t);
        int same = 1;
        for (uint64_t k = 0; k < t->nbytes; k++)
            same &= d[k] == pattern((uint64_t)i, k);
        CHECK(same, "%s data", ts[i].name);
    }
    CHECK(sl_gguf_tensor_find(g, "w.nope") == NULL, "absent tensor");
    sl_gguf_close(g);
    free(c.p);

    /* Through a file: the same bytes, and sl_gguf_open reads them. */
    char path[] = "/tmp/sl_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) {
        CHECK(write(fd, im.p, im.len) == (ssize_t)im.len, "write");
        close(fd);
        rc = sl_gguf_open(path, &g);
        CHECK(rc == 0, "sl_gguf_open on the written file (%d)", rc);
        if (rc == 0) {
            CHECK(sl_gguf_tensor_count(g) == NT && sl_gguf_alignment(g) == 64, "file view");
            sl_gguf_close(g);
        }
        unlink(path);
    }
    free(im.p);
}

static void test_v2_and_small(void)
{
    image im = make_small(2);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open_mem(im.p, im.len, &g);
    CHECK(rc == 0 && g && sl_gguf_version(g) == 2, "v2 accepted (%d)", rc);
    sl_gguf_close(g);
    free(im.p);
    im = make_small(3);
    CHECK(open_prefix(&im, im.len) == 0, "small v3 opens");
    free(im.p);
}

/* ---- real files ---- */

static void check_against_dequant_json(const sl_gguf *g, const char *model)
{
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "refs/%s.dequant.json", model);
    sl_testdata_path(path, sizeof path, rel);
    if (access(path, R_OK) != 0)
        return;
    cJSON *j = sl_test_load_json(path);
    CHECK(j != NULL, "%s parses", path);
    if (!j)
        return;
    cJSON *ts = cJSON_GetObjectItem(j, "tensors");
    CHECK((uint64_t)cJSON_GetArraySize(ts) == sl_gguf_tensor_count(g),
          "%s: %d tensors in the reference, %" PRIu64, model, cJSON_GetArraySize(ts),
          sl_gguf_tensor_count(g));
    int bad = 0;
    cJSON *t;
    cJSON_ArrayForEach(t, ts)
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(t, "name"));
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(t, "type"));
        cJSON *ne = cJSON_GetObjectItem(t, "ne");
        const sl_gguf_tensor *x = name ? sl_gguf_tensor_find(g, name) : NULL;
        if (!x || !type || strcmp(sl_dtype_name(x->type), type) != 0) {
            bad++;
            continue;
        }
        int n = cJSON_GetArraySize(ne);
        for (int d = 0; d < SL_GGUF_MAX_DIMS; d++) {
            int64_t want = d < n ? (int64_t)cJSON_GetArrayItem(ne, d)->valuedouble : 1;
            bad += x->ne[d] != want;
        }
    }
    CHECK(bad == 0, "%s: %d tensor mismatches against the reference", model, bad);
    cJSON_Delete(j);
}

static void check_model(const char *dir, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    sl_gguf *g = NULL;
    int rc = sl_gguf_open(path, &g);
    CHECK(rc == 0, "%s opens (%d)", file, rc);
    if (rc)
        return;
    CHECK(sl_gguf_version(g) == 3, "%s version", file);
    sl_str arch = {0};
    CHECK(sl_gguf_get_str(g, "general.architecture", &arch) == 0, "%s has an architecture", file);
    sl_gguf_arr tokens;
    CHECK(sl_gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens) == 0 && tokens.type == SL_GGUF_STRING,
          "%s has a vocabulary", file);
    sl_str model = {0};
    CHECK(sl_gguf_get_str(g, "tokenizer.ggml.model", &model) == 0, "%s tokenizer model", file);
    int vocab_only = strncmp(file, "ggml-vocab-", 11) == 0;
    if (vocab_only) {
        CHECK(sl_gguf_tensor_count(g) == 0, "%s has no tensors", file);
        CHECK(tokens.count > 1000, "%s vocabulary of %" PRIu64, file, tokens.count);
    } else {
        char key[128];
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
        uint32_t layers = 0, experts = 0;
        CHECK(sl_gguf_get_u32(g, key, &layers) == 0 && layers > 0, "%s block count", file);
        snprintf(key, sizeof key, "%.*s.expert_count", (int)arch.len, arch.ptr);
        sl_gguf_get_u32(g, key, &experts);
        /* Per layer: attn_norm, q, k, v, o, ffn_norm and three FFN tensors,
         * plus the router for MoE and q/k/v biases for qwen2; then
         * token_embd, output_norm and output. */
        uint64_t per_layer = experts ? 10 : sl_str_eq(arch, "qwen2") ? 12 : 9;
        CHECK(sl_gguf_tensor_count(g) == per_layer * layers + 3, "%s: %" PRIu64 " tensors for %u layers",
              file, sl_gguf_tensor_count(g), layers);
        CHECK(tokens.count == (sl_str_eq(arch, "qwen2") ? 50257u : 512u), "%s vocabulary of %" PRIu64, file,
              tokens.count);
        CHECK(sl_gguf_tensor_find(g, "token_embd.weight") != NULL, "%s token_embd", file);
        CHECK(sl_gguf_tensor_find(g, "blk.0.attn_q.weight") != NULL, "%s attn_q", file);
        int bad = 0;
        for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
            const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
            uint64_t n = 1;
            for (int d = 0; d < SL_GGUF_MAX_DIMS; d++)
                n *= (uint64_t)t->ne[d];
            bad += t->nbytes != sl_dtype_bytes(t->type, n);
            bad += t->offset % sl_gguf_alignment(g) != 0;
            bad += t->offset < sl_gguf_data_offset(g) || t->offset + t->nbytes > sl_gguf_file_size(g);
        }
        CHECK(bad == 0, "%s: %d tensors with a wrong size or offset", file, bad);
        char stem[256];
        snprintf(stem, sizeof stem, "%.*s", (int)(strlen(file) - 5), file);
        check_against_dequant_json(g, stem);
    }
    volatile uint64_t keep = walk(g);
    (void)keep;
    sl_gguf_close(g);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_real_files(const char *sub, int want_at_least)
{
    char dir[512];
    sl_testdata_path(dir, sizeof dir, sub);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "testdata %s present", dir);
    if (!d)
        return;
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".gguf") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    CHECK(n >= want_at_least, "%d GGUF files in %s", n, sub);
    for (int i = 0; i < n; i++) {
        check_model(dir, names[i]);
        free(names[i]);
    }
}

static image read_file(const char *path)
{
    image im = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return im;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    im.p = malloc((size_t)n);
    if (im.p && fread(im.p, 1, (size_t)n, f) == (size_t)n)
        im.len = (size_t)n;
    fclose(f);
    return im;
}

/* ---- truncation ---- */

static void test_truncation_small(void)
{
    image im = make_small(3);
    /* Bytes after the last tensor's data are padding: a file cut there is
     * still complete. Every shorter prefix must be refused. */
    sl_gguf *g = NULL;
    SL_ASSERT(sl_gguf_open_mem(im.p, im.len, &g) == 0);
    uint64_t end = 0;
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        if (t->offset + t->nbytes > end)
            end = t->offset + t->nbytes;
    }
    sl_gguf_close(g);
    size_t wrong_accept = 0, wrong_reject = 0, first_bad = SIZE_MAX;
    capture_begin();
    for (size_t len = 0; len < im.len; len++) {
        int rc = open_prefix(&im, len);
        if (len < end && rc >= 0) {
            wrong_accept++;
            if (first_bad == SIZE_MAX)
                first_bad = len;
        }
        if (len >= end && rc != 0)
            wrong_reject++;
    }
    capture_end(NULL, 0);
    CHECK(wrong_accept == 0, "%zu truncated prefixes accepted (first: %zu of %zu bytes)", wrong_accept,
          first_bad, im.len);
    CHECK(wrong_reject == 0, "%zu prefixes holding all tensor data refused", wrong_reject);
    free(im.p);
}

static void test_truncation_real(void)
{
    char path[512];
    sl_testdata_path(path, sizeof path, "models/stories260K.gguf");
    image im = read_file(path);
    CHECK(im.len > 0, "read %s", path);
    if (!im.len)
        return;
    sl_gguf *g = NULL;
    SL_ASSERT(sl_gguf_open_mem(im.p, im.len, &g) == 0);
    size_t header = (size_t)sl_gguf_data_offset(g);
    sl_gguf_close(g);
    /* Every offset of the header region (a few KB), then a stride through
     * the tensor data: a file missing any tensor byte is refused. */
    size_t accepted = 0, tried = 0, first = SIZE_MAX;
    capture_begin();
    for (size_t len = 0; len < im.len; len += len < header + 64 ? 1 : 4093) {
        tried++;
        if (open_prefix(&im, len) >= 0) {
            accepted++;
            if (first == SIZE_MAX)
                first = len;
        }
    }
    capture_end(NULL, 0);
    CHECK(accepted == 0, "stories260K: %zu of %zu truncations accepted (first at %zu, header %zu)", accepted,
          tried, first, header);
    free(im.p);
}

/* ---- hostile headers ---- */

/* Opens `im` (exact-size copy) and expects a refusal: rc < 0 (or == want
 * when want != 0), exactly one log line, containing `word` when given. */
static void expect_reject(const char *what, const image *im, int want, const char *word)
{
    char log[4096];
    capture_begin();
    int rc = open_prefix(im, im->len);
    capture_end(log, sizeof log);
    CHECK(rc < 0 && rc != 1000, "%s: open returned %d", what, rc);
    if (want)
        CHECK(rc == want, "%s: returned %d (%s), want %d (%s)", what, rc, sl_strerror(rc), want,
              sl_strerror(want));
    int lines = count_lines(log);
    CHECK(lines == 1, "%s: %d log lines: %s", what, lines, log);
    if (word)
        CHECK(strstr(log, word) != NULL, "%s: log does not mention '%s': %s", what, word, log);
    printf("  %-44s -> %-16s %s", what, sl_strerror(rc), log);
}

/* Offsets inside the small image. */
typedef struct small_map {
    size_t key_one, key_two;          /* key bytes */
    size_t arch_str;                  /* bytes of the "llama" value */
    size_t align_val;                 /* u32 value of general.alignment */
    size_t arr_u8, arr_str, arr_nest; /* u32 element type of each array */
    size_t tensor_a, tensor_b;        /* name bytes */
} small_map;

static small_map map_small(const image *im)
{
    small_map m;
    m.key_one = find(im, "key.one");
    m.key_two = find(im, "key.two");
    m.arch_str = find(im, "llama");
    m.align_val = find(im, "general.alignment") + 17 + 4;
    m.arr_u8 = find(im, "arr.u8") + 6 + 4;
    m.arr_str = find(im, "arr.str") + 7 + 4;
    m.arr_nest = find(im, "arr.nest") + 8 + 4;
    m.tensor_a = find(im, "tensor_a");
    m.tensor_b = find(im, "tensor_b");
    return m;
}

/* tensor_a is 2-D: name(8) | n_dims | ne0 | ne1 | type | offset */
#define TA_NDIMS(m) ((m).tensor_a + 8)
#define TA_NE0(m) ((m).tensor_a + 12)
#define TA_NE1(m) ((m).tensor_a + 20)
#define TA_TYPE(m) ((m).tensor_a + 28)
#define TA_OFFSET(m) ((m).tensor_a + 32)
/* tensor_b is 1-D: name(8) | n_dims | ne0 | type | offset */
#define TB_NE0(m) ((m).tensor_b + 12)
#define TB_TYPE(m) ((m).tensor_b + 20)
#define TB_OFFSET(m) ((m).tensor_b + 24)

static void test_hostile(void)
{
    const image base = make_small(3);
    const small_map m = map_small(&base);
    image im;
#define FRESH() (free(im.p), im = copy_image(&base, base.len))
    im = copy_image(&base, base.len);
    SL_ASSERT(get_u64(im.p + TA_OFFSET(m)) == 0 && get_u64(im.p + TB_OFFSET(m)) == 32);
    printf("hostile inputs (what -> error, message):\n");

    expect_reject("empty file", &(image){im.p, 0}, -SL_EFORMAT, NULL);
    expect_reject("3 bytes", &(image){im.p, 3}, -SL_EFORMAT, NULL);
    FRESH(), im.p[0] = 'X';
    expect_reject("wrong magic", &im, -SL_EFORMAT, "magic");
    static const uint32_t versions[] = {0, 1, 4, 0x03000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "version %u", versions[i]);
        FRESH(), put_u32(im.p + 4, versions[i]);
        expect_reject(what, &im, -SL_EUNSUPPORTED, NULL);
    }

    static const uint64_t absurd[] = {1ull << 62, UINT64_MAX, 1ull << 32, 100000};
    for (size_t i = 0; i < sizeof absurd / sizeof absurd[0]; i++) {
        char what[80];
        snprintf(what, sizeof what, "n_tensors %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + 8, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "n_kv %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + 16, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "key length %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.key_one - 8, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "string value length %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.arch_str - 8, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "u8 array count %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.arr_u8 + 4, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "string array count %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.arr_str + 4, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "array-of-arrays count %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.arr_nest + 4, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "inner array count %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.arr_nest + 12 + 4, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "array string length %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.arr_str + 12, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
        snprintf(what, sizeof what, "tensor name length %" PRIu64, absurd[i]);
        FRESH(), put_u64(im.p + m.tensor_a - 8, absurd[i]);
        expect_reject(what, &im, -SL_EFORMAT, NULL);
    }
    FRESH(), put_u64(im.p + m.tensor_a - 8, 0);
    expect_reject("empty tensor name", &im, -SL_EFORMAT, NULL);

    FRESH(), put_u32(im.p + m.key_one + 7, 13);
    expect_reject("unknown value type 13", &im, -SL_EFORMAT, "type");
    FRESH(), put_u32(im.p + m.key_one + 7, 0xffffffffu);
    expect_reject("unknown value type 2^32-1", &im, -SL_EFORMAT, "type");
    FRESH(), put_u32(im.p + m.arr_u8, 13);
    expect_reject("unknown array element type", &im, -SL_EFORMAT, "type");

    FRESH(), put_u32(im.p + TA_NDIMS(m), 5);
    expect_reject("n_dims 5", &im, -SL_EFORMAT, "dimensions");
    FRESH(), put_u32(im.p + TA_NDIMS(m), 0xffffffffu);
    expect_reject("n_dims 2^32-1", &im, -SL_EFORMAT, "dimensions");
    FRESH(), put_u64(im.p + TA_NE0(m), 1ull << 32), put_u64(im.p + TA_NE1(m), 1ull << 32);
    expect_reject("dims 2^32 x 2^32 (count overflows)", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TA_NE0(m), 1ull << 63);
    expect_reject("dim 2^63", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TA_NE0(m), UINT64_MAX);
    expect_reject("dim -1", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TA_NE0(m), 1ull << 61), put_u64(im.p + TA_NE1(m), 2);
    expect_reject("2^62 F32 elements (bytes overflow)", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TA_NE0(m), 1ull << 40);
    expect_reject("2^41 F32 elements (beyond EOF)", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TB_NE0(m), 33);
    expect_reject("Q8_0 row of 33 (not whole blocks)", &im, -SL_EFORMAT, "block");

    static const uint32_t types[] = {4, 5, 31, 33, 40, 1000, 0xffffffffu};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "tensor type id %u", types[i]);
        FRESH(), put_u32(im.p + TA_TYPE(m), types[i]);
        expect_reject(what, &im, 0, "type");
    }

    FRESH(), put_u64(im.p + TB_OFFSET(m), 1ull << 40);
    expect_reject("tensor offset 2^40 (beyond EOF)", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TB_OFFSET(m), UINT64_MAX - 31);
    expect_reject("tensor offset 2^64-32 (wraps)", &im, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TB_OFFSET(m), 64);
    expect_reject("tensor data ends past EOF", &im, -SL_EFORMAT, NULL);
    expect_reject("file cut inside tensor data", &(image){im.p, base.len - 40}, -SL_EFORMAT, NULL);
    FRESH(), put_u64(im.p + TB_OFFSET(m), 33);
    expect_reject("misaligned offset (+1)", &im, -SL_EFORMAT, "align");
    FRESH(), put_u64(im.p + TB_OFFSET(m), 48);
    expect_reject("misaligned offset (16 of 32)", &im, -SL_EFORMAT, "align");
    FRESH(), put_u64(im.p + TB_OFFSET(m), 0);
    expect_reject("overlapping tensors", &im, -SL_EFORMAT, "overlap");

    static const uint32_t aligns[] = {0, 3, 48, 0xffffffffu};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "general.alignment %u", aligns[i]);
        FRESH(), put_u32(im.p + m.align_val, aligns[i]);
        expect_reject(what, &im, -SL_EFORMAT, "alignment");
    }
    FRESH(), put_u32(im.p + m.align_val - 4, SL_GGUF_I32);
    expect_reject("general.alignment as i32", &im, -SL_EFORMAT, "alignment");

    FRESH(), memcpy(im.p + m.tensor_b, "tensor_a", 8);
    expect_reject("duplicate tensor names", &im, -SL_EFORMAT, "duplicate");
    FRESH(), memcpy(im.p + m.key_two, "key.one", 7);
    expect_reject("duplicate keys", &im, -SL_EFORMAT, "duplicate");
#undef FRESH
    free(im.p);
    free(base.p);
}

/* Arrays nested far deeper than anything real: refused, not a stack
 * overflow. Written by hand because the writer refuses to nest this deep. */
static void test_deep_nesting(void)
{
    enum { DEPTH = 100000 };
    image im = {malloc(24 + 8 + 3 + 4 + DEPTH * 12 + 12), 0};
    uint8_t *p = im.p;
    memcpy(p, "GGUF", 4);
    put_u32(p + 4, 3);
    put_u64(p + 8, 0);
    put_u64(p + 16, 1);
    put_u64(p + 24, 3);
    memcpy(p + 32, "k.x", 3);
    put_u32(p + 35, SL_GGUF_ARRAY);
    size_t o = 39;
    for (int i = 0; i < DEPTH; i++, o += 12) {
        put_u32(p + o, SL_GGUF_ARRAY);
        put_u64(p + o + 4, 1);
    }
    put_u32(p + o, SL_GGUF_U8);
    put_u64(p + o + 4, 0);
    im.len = o + 12;
    expect_reject("arrays nested 100000 deep", &im, -SL_EFORMAT, "nest");
    free(im.p);
}

/* Every byte of the small file's header set to a few values: any result is
 * fine except a crash, a sanitizer report or a half-initialised handle. */
static void test_byte_flips(void)
{
    image base = make_small(3);
    sl_gguf *g;
    SL_ASSERT(sl_gguf_open_mem(base.p, base.len, &g) == 0);
    size_t header = (size_t)sl_gguf_data_offset(g);
    sl_gguf_close(g);
    static const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x40};
    int bad = 0, accepted = 0, tried = 0;
    capture_begin();
    for (size_t i = 0; i < header; i++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            if (base.p[i] == vals[v])
                continue;
            image c = copy_image(&base, base.len);
            c.p[i] = vals[v];
            int rc = open_prefix(&c, c.len);
            tried++;
            accepted += rc == 0;
            bad += rc == 1000;
            free(c.p);
        }
    }
    capture_end(NULL, 0);
    CHECK(bad == 0, "%d failed opens left a handle", bad);
    printf("byte flips: %d images, %d accepted, none crashed\n", tried, accepted);
    free(base.p);
}

int main(void)
{
    test_round_trip();
    test_v2_and_small();
    test_real_files("models", 17);
    test_real_files("tokenizer", 9);
    test_truncation_small();
    test_truncation_real();
    test_hostile();
    test_deep_nesting();
    test_byte_flips();
    return sl_test_finish();
}
