/* GGUF writer tests: the same bytes through every sink and any chunking,
 * the layout (alignment, padding, offsets beyond 4 GiB), and a clear error
 * for each kind of misuse and for a failing sink. The reader round trip of
 * every value type lives in test_gguf.c. */
#include "common/log.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/testutil.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { N_T = 3 };
static const uint64_t k_nbytes[N_T] = {4 * 10, 0, 34 * 2}; /* F32 [10], F32 [0], Q8_0 [32, 2] */

/* Defines the same small model on any writer. */
static void define(sl_gguf_writer *w, uint32_t alignment)
{
    SL_ASSERT(sl_gguf_writer_add_str(w, "general.architecture", "llama") == 0);
    if (alignment)
        SL_ASSERT(sl_gguf_writer_add_u32(w, "general.alignment", alignment) == 0);
    const char *toks[] = {"<s>", "</s>", "a"};
    SL_ASSERT(sl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3) == 0);
    const int64_t a[1] = {10}, b[2] = {0, 3}, c[2] = {32, 2};
    SL_ASSERT(sl_gguf_writer_add_tensor(w, "a", 1, a, SL_F32) == 0);
    SL_ASSERT(sl_gguf_writer_add_tensor(w, "b", 2, b, SL_F32) == 0);
    SL_ASSERT(sl_gguf_writer_add_tensor(w, "c", 2, c, SL_Q8_0) == 0);
}

static uint8_t *data_bytes(size_t *n)
{
    *n = (size_t)(k_nbytes[0] + k_nbytes[1] + k_nbytes[2]);
    uint8_t *d = malloc(*n);
    for (size_t i = 0; i < *n; i++)
        d[i] = (uint8_t)(i * 13 + 5);
    return d;
}

/* Writes the model to w in chunks of `chunk` bytes. */
static int write_all(sl_gguf_writer *w, size_t chunk)
{
    size_t n;
    uint8_t *d = data_bytes(&n);
    int rc = sl_gguf_writer_write_header(w);
    for (size_t off = 0; rc == 0 && off < n; off += chunk)
        rc = sl_gguf_writer_write_data(w, d + off, off + chunk <= n ? chunk : n - off);
    if (rc == 0)
        rc = sl_gguf_writer_finish(w);
    free(d);
    return rc;
}

static uint8_t *mem_image(size_t chunk, uint32_t alignment, size_t *len)
{
    sl_gguf_writer *w;
    SL_ASSERT(sl_gguf_writer_new_mem(&w) == 0);
    define(w, alignment);
    uint8_t *p = NULL;
    if (write_all(w, chunk) == 0)
        sl_gguf_writer_mem_take(w, &p, len);
    sl_gguf_writer_free(w);
    return p;
}

static uint8_t *read_fd(int fd, size_t *len)
{
    off_t n = lseek(fd, 0, SEEK_END);
    uint8_t *p = malloc((size_t)n);
    *len = (size_t)pread(fd, p, (size_t)n, 0);
    return p;
}

static void test_sinks_and_chunking(void)
{
    size_t ref_len, len;
    uint8_t *ref = mem_image(1 << 20, 0, &ref_len);
    CHECK(ref != NULL, "memory image");
    if (!ref)
        return;
    static const size_t chunks[] = {1, 3, 33, 40, 41, 108};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        uint8_t *p = mem_image(chunks[i], 0, &len);
        CHECK(p && len == ref_len && memcmp(p, ref, len) == 0, "chunks of %zu give the same bytes",
              chunks[i]);
        free(p);
    }

    FILE *f = tmpfile();
    sl_gguf_writer *w;
    CHECK(sl_gguf_writer_new_file(f, &w) == 0, "file writer");
    define(w, 0);
    CHECK(write_all(w, 7) == 0, "file write");
    uint8_t *tmp;
    CHECK(sl_gguf_writer_mem_take(w, &tmp, &len) == -SL_EINVAL, "no image from a file writer");
    sl_gguf_writer_free(w);
    uint8_t *p = read_fd(fileno(f), &len);
    CHECK(len == ref_len && memcmp(p, ref, len) == 0, "stdio sink writes the same bytes");
    free(p);
    fclose(f);

    char path[] = "/tmp/sl_test_gguf_write_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    CHECK(sl_gguf_writer_new_fd(fd, &w) == 0, "fd writer");
    define(w, 0);
    CHECK(write_all(w, 5) == 0, "fd write");
    sl_gguf_writer_free(w);
    p = read_fd(fd, &len);
    CHECK(len == ref_len && memcmp(p, ref, len) == 0, "fd sink writes the same bytes");
    free(p);
    close(fd);
    sl_gguf *g = NULL;
    CHECK(sl_gguf_open(path, &g) == 0 && sl_gguf_tensor_count(g) == N_T, "reader opens the fd output");
    sl_gguf_close(g);
    unlink(path);
    free(ref);
}

static void test_layout(void)
{
    static const uint32_t aligns[] = {0, 1, 8, 32, 64, 4096};
    for (size_t k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
        uint32_t al = aligns[k] ? aligns[k] : 32;
        sl_gguf_writer *w;
        sl_gguf_writer_new_mem(&w);
        define(w, aligns[k]);
        SL_ASSERT(sl_gguf_writer_write_header(w) == 0);
        uint64_t off[N_T], size;
        for (int i = 0; i < N_T; i++)
            sl_gguf_writer_tensor_offset(w, (uint64_t)i, &off[i]);
        sl_gguf_writer_file_size(w, &size);
        uint64_t data_start = off[0];
        CHECK(data_start % al == 0, "alignment %u: data section at %" PRIu64, al, data_start);
        /* Each tensor padded to the alignment, the last one too. */
        uint64_t expect = data_start;
        for (int i = 0; i < N_T; i++) {
            CHECK(off[i] == expect, "alignment %u: tensor %d at %" PRIu64 ", want %" PRIu64, al, i, off[i],
                  expect);
            expect += (k_nbytes[i] + al - 1) / al * al;
        }
        CHECK(size == expect, "alignment %u: file size %" PRIu64 ", want %" PRIu64, al, size, expect);
        sl_gguf_writer_free(w);

        size_t len;
        uint8_t *p = mem_image(64, aligns[k], &len);
        sl_gguf *g = NULL;
        CHECK(p && len == size && sl_gguf_open_mem(p, len, &g) == 0, "alignment %u reads back", al);
        if (g) {
            CHECK(sl_gguf_alignment(g) == al, "reader sees alignment %u", sl_gguf_alignment(g));
            for (int i = 0; i < N_T; i++)
                CHECK(sl_gguf_tensor_at(g, (uint64_t)i)->offset == off[i], "offset of %d", i);
            CHECK(memcmp(sl_gguf_tensor_data(g, sl_gguf_tensor_find(g, "c")), p + off[2], 68) == 0, "data");
        }
        sl_gguf_close(g);
        free(p);
    }

    /* No tensors: finish alone writes a complete file. */
    sl_gguf_writer *w;
    sl_gguf_writer_new_mem(&w);
    sl_gguf_writer_add_str(w, "general.name", "vocab only");
    CHECK(sl_gguf_writer_finish(w) == 0, "finish writes the header");
    CHECK(sl_gguf_writer_finish(w) == 0, "finish twice is harmless");
    uint8_t *p;
    size_t len;
    CHECK(sl_gguf_writer_mem_take(w, &p, &len) == 0, "take");
    CHECK(sl_gguf_writer_mem_take(w, &p, &len) == -SL_EINVAL, "take twice refused");
    sl_gguf_writer_free(w);
    sl_gguf *g = NULL;
    CHECK(sl_gguf_open_mem(p, len, &g) == 0 && sl_gguf_tensor_count(g) == 0 && sl_gguf_kv_count(g) == 1,
          "tensor-less file reads back");
    sl_gguf_close(g);
    free(p);

    /* Offsets past 4 GiB are computed in 64 bits (no data written). */
    sl_gguf_writer_new_mem(&w);
    const int64_t big[2] = {1 << 20, 1 << 10}; /* 2^30 F32 = 4 GiB */
    sl_gguf_writer_add_tensor(w, "big0", 2, big, SL_F32);
    sl_gguf_writer_add_tensor(w, "big1", 2, big, SL_F32);
    sl_gguf_writer_write_header(w);
    uint64_t o0, o1, size;
    sl_gguf_writer_tensor_offset(w, 0, &o0);
    sl_gguf_writer_tensor_offset(w, 1, &o1);
    sl_gguf_writer_file_size(w, &size);
    CHECK(o1 - o0 == 1ull << 32 && size - o0 == 1ull << 33, "4 GiB tensors: offsets %" PRIu64 " %" PRIu64, o0,
          o1);
    CHECK(sl_gguf_writer_finish(w) == -SL_EINVAL, "finish without the data refused");
    sl_gguf_writer_free(w);
}

static void test_misuse(void)
{
    sl_gguf_writer *w;
    sl_gguf_writer_new_mem(&w);
    CHECK(sl_gguf_writer_set_version(w, 1) == -SL_EINVAL, "version 1");
    CHECK(sl_gguf_writer_set_version(w, 4) == -SL_EINVAL, "version 4");
    CHECK(sl_gguf_writer_add_u32(w, NULL, 1) == -SL_EINVAL, "NULL key");
    CHECK(sl_gguf_writer_add_u32(w, "", 1) == -SL_EINVAL, "empty key");
    CHECK(sl_gguf_writer_add_u32(w, "k", 1) == 0, "key");
    CHECK(sl_gguf_writer_add_str(w, "k", "x") == -SL_EINVAL, "duplicate key");
    CHECK(sl_gguf_writer_add_str(w, "s", NULL) == -SL_EINVAL, "NULL string");
    CHECK(sl_gguf_writer_add_u32(w, "general.alignment", 0) == -SL_EINVAL, "alignment 0");
    CHECK(sl_gguf_writer_add_u32(w, "general.alignment", 48) == -SL_EINVAL, "alignment 48");
    CHECK(sl_gguf_writer_add_u64(w, "general.alignment", 32) == -SL_EINVAL, "alignment as u64");
    CHECK(sl_gguf_writer_add_arr(w, "a", SL_GGUF_STRING, NULL, 0) == -SL_EINVAL, "add_arr of strings");
    CHECK(sl_gguf_writer_add_arr(w, "a", (sl_gguf_vtype)13, NULL, 0) == -SL_EINVAL, "unknown element type");
    CHECK(sl_gguf_writer_add_arr(w, "a", SL_GGUF_U8, NULL, 3) == -SL_EINVAL, "NULL elements");
    const char *bad_strs[] = {"x", NULL};
    CHECK(sl_gguf_writer_add_arr_str(w, "a", bad_strs, 2) == -SL_EINVAL, "NULL string in list");
    CHECK(sl_gguf_writer_arr_end(w) == -SL_EINVAL, "arr_end without arr_begin");

    CHECK(sl_gguf_writer_arr_begin(w, "arr", SL_GGUF_U16) == 0, "begin");
    CHECK(sl_gguf_writer_add_u16(w, "named", 1) == -SL_EINVAL, "key inside an array");
    CHECK(sl_gguf_writer_add_u32(w, NULL, 1) == -SL_EINVAL, "wrong element type");
    CHECK(sl_gguf_writer_add_u16(w, NULL, 1) == 0, "element");
    const int64_t ne[2] = {32, 2};
    CHECK(sl_gguf_writer_add_tensor(w, "t", 1, ne, SL_F32) == -SL_EINVAL, "tensor while an array is open");
    CHECK(sl_gguf_writer_write_header(w) == -SL_EINVAL, "header while an array is open");
    CHECK(sl_gguf_writer_arr_end(w) == 0, "end");
    CHECK(sl_gguf_writer_arr_begin(w, "deep", SL_GGUF_ARRAY) == 0, "deep begin");
    int depth = 1;
    while (depth < SL_GGUF_WRITER_MAX_DEPTH && sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_ARRAY) == 0)
        depth++;
    CHECK(depth == SL_GGUF_WRITER_MAX_DEPTH, "nesting to the limit");
    CHECK(sl_gguf_writer_arr_begin(w, NULL, SL_GGUF_ARRAY) == -SL_EINVAL, "nesting past the limit");
    CHECK(sl_gguf_writer_add_arr(w, NULL, SL_GGUF_U8, NULL, 0) == -SL_EINVAL, "add_arr past the limit");
    while (depth-- > 0)
        sl_gguf_writer_arr_end(w);

    CHECK(sl_gguf_writer_add_tensor(w, NULL, 1, ne, SL_F32) == -SL_EINVAL, "NULL name");
    CHECK(sl_gguf_writer_add_tensor(w, "", 1, ne, SL_F32) == -SL_EINVAL, "empty name");
    char longname[65];
    memset(longname, 'x', 64);
    longname[64] = 0;
    CHECK(sl_gguf_writer_add_tensor(w, longname, 1, ne, SL_F32) == -SL_EINVAL, "64-byte name");
    longname[63] = 0;
    CHECK(sl_gguf_writer_add_tensor(w, longname, 1, ne, SL_F32) == 0, "63-byte name");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 0, ne, SL_F32) == -SL_EINVAL, "0 dims");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 5, ne, SL_F32) == -SL_EINVAL, "5 dims");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 1, ne, 4) == -SL_EINVAL, "unknown type 4");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 1, ne, 99) == -SL_EINVAL, "unknown type 99");
    const int64_t odd[1] = {33}, neg[2] = {32, -1}, huge[3] = {1ll << 40, 1ll << 40, 1ll << 40};
    const int64_t bytes_overflow[2] = {1ll << 62, 1};
    CHECK(sl_gguf_writer_add_tensor(w, "t", 1, odd, SL_Q8_0) == -SL_EINVAL, "row not whole blocks");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 2, neg, SL_F32) == -SL_EINVAL, "negative dimension");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 3, huge, SL_F32) == -SL_EINVAL, "element count overflow");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 2, bytes_overflow, SL_F32) == -SL_EINVAL, "byte size overflow");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 2, ne, SL_Q8_0) == 0, "tensor");
    CHECK(sl_gguf_writer_add_tensor(w, "t", 2, ne, SL_F32) == -SL_EINVAL, "duplicate tensor");

    uint64_t off;
    CHECK(sl_gguf_writer_tensor_offset(w, 0, &off) == -SL_EINVAL, "offset before the header");
    CHECK(sl_gguf_writer_file_size(w, &off) == -SL_EINVAL, "size before the header");
    uint8_t buf[256] = {0};
    CHECK(sl_gguf_writer_write_data(w, buf, 1) == -SL_EINVAL, "data before the header");
    CHECK(sl_gguf_writer_write_header(w) == 0, "header");
    CHECK(sl_gguf_writer_write_header(w) == -SL_EINVAL, "header twice");
    CHECK(sl_gguf_writer_add_u8(w, "late", 1) == -SL_EINVAL, "metadata after the header");
    CHECK(sl_gguf_writer_add_tensor(w, "late", 1, ne, SL_F32) == -SL_EINVAL, "tensor after the header");
    CHECK(sl_gguf_writer_set_version(w, 2) == -SL_EINVAL, "version after the header");
    CHECK(sl_gguf_writer_tensor_offset(w, 2, &off) == -SL_EINVAL, "offset of a tensor that does not exist");
    /* Tensors: 63-byte name F32 [32] = 128 bytes, t Q8_0 [32,2] = 68 bytes. */
    CHECK(sl_gguf_writer_write_data(w, buf, 197) == -SL_EINVAL, "more data than declared");
    CHECK(sl_gguf_writer_write_data(w, NULL, 5) == -SL_EINVAL, "NULL data");
    CHECK(sl_gguf_writer_data_remaining(w) == 196, "196 bytes expected");
    CHECK(sl_gguf_writer_write_data(w, buf, 150) == 0, "part of the data");
    CHECK(sl_gguf_writer_data_remaining(w) == 46, "46 bytes expected");
    CHECK(sl_gguf_writer_finish(w) == -SL_EINVAL, "finish with 46 bytes missing");
    uint8_t *p;
    size_t len;
    CHECK(sl_gguf_writer_mem_take(w, &p, &len) == -SL_EINVAL, "take before finish");
    CHECK(sl_gguf_writer_write_data(w, buf, 46) == 0, "rest of the data");
    CHECK(sl_gguf_writer_write_data(w, buf, 0) == 0, "empty write");
    CHECK(sl_gguf_writer_write_data(w, buf, 1) == -SL_EINVAL, "one byte too many");
    CHECK(sl_gguf_writer_finish(w) == 0, "finish");
    CHECK(sl_gguf_writer_write_data(w, buf, 1) == -SL_EINVAL, "data after finish");
    CHECK(sl_gguf_writer_mem_take(w, &p, &len) == 0, "take");
    sl_gguf *g = NULL;
    CHECK(sl_gguf_open_mem(p, len, &g) == 0, "the file survived the misuse");
    CHECK(g && sl_gguf_kv_count(g) == 3 && sl_gguf_tensor_count(g) == 2, "and holds what was accepted");
    sl_gguf_close(g);
    free(p);
    sl_gguf_writer_free(w);

    CHECK(sl_gguf_writer_new_fd(-1, &w) == -SL_EINVAL, "bad fd");
    CHECK(sl_gguf_writer_new_file(NULL, &w) == -SL_EINVAL, "NULL stream");
    sl_gguf_writer_free(NULL);
}

static void test_sink_failure(void)
{
    /* /dev/full: buffered stdio fails at the flush in finish. */
    FILE *f = fopen("/dev/full", "wb");
    if (f) {
        sl_gguf_writer *w;
        sl_gguf_writer_new_file(f, &w);
        define(w, 0);
        int rc = write_all(w, 16);
        CHECK(rc == -SL_EIO, "stdio to /dev/full: %d", rc);
        CHECK(sl_gguf_writer_finish(w) == -SL_EIO, "the error sticks");
        sl_gguf_writer_free(w);
        fclose(f);
    }
    int fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) {
        sl_gguf_writer *w;
        sl_gguf_writer_new_fd(fd, &w);
        define(w, 0);
        CHECK(sl_gguf_writer_write_header(w) == -SL_EIO, "header to /dev/full");
        CHECK(sl_gguf_writer_add_u8(w, "x", 1) == -SL_EIO, "sticky for metadata");
        CHECK(sl_gguf_writer_write_data(w, "x", 1) == -SL_EIO, "sticky for data");
        CHECK(sl_gguf_writer_finish(w) == -SL_EIO, "sticky for finish");
        sl_gguf_writer_free(w);
        close(fd);
    }
    /* A read-only descriptor. */
    fd = open("/dev/null", O_RDONLY);
    sl_gguf_writer *w;
    sl_gguf_writer_new_fd(fd, &w);
    CHECK(sl_gguf_writer_finish(w) == -SL_EIO, "read-only fd");
    sl_gguf_writer_free(w);
    close(fd);
}

int main(void)
{
    test_sinks_and_chunking();
    test_layout();
    test_misuse();
    test_sink_failure();
    return sl_test_finish();
}
