/* Tests of loader/reader.h: random and unaligned ranges of a generated file
 * read back equal to plain pread, with and without direct I/O, with and
 * without reader threads; bad requests and a truncated file are refused.
 *
 * usage: test_reader DIR [DIR...]   (each a directory to put the test file
 * in: the build directory on disk, and /dev/shm for a tmpfs) */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "loader/reader.h"
#include "testutil.h"

/* An odd size: several default chunks, and a partial last block. */
#define FILE_SIZE ((size_t)9 * 1024 * 1024 + 1234)
#define MAX_LEN ((size_t)3 * 1024 * 1024)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static int write_file(const char *path, size_t size)
{
    uint8_t *data = malloc(size);
    if (!data)
        return -1;
    for (size_t i = 0; i < size; i++)
        data[i] = (uint8_t)(rnd() >> 24);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t done = 0;
    while (fd >= 0 && done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    free(data);
    if (fd < 0 || close(fd) != 0 || done != size)
        return -1;
    return 0;
}

/* Whether this file system takes O_DIRECT for an aligned read, asked
 * without the reader, to know which mode the reader should pick. */
static int fs_allows_direct(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0)
        return 0;
    void *b = aligned_alloc(SL_READER_ALIGN, SL_READER_ALIGN);
    ssize_t n = b ? pread(fd, b, SL_READER_ALIGN, 0) : -1;
    free(b);
    close(fd);
    return n >= 0;
}

/* Reads [off, off + len) through the reader and compares with pread. */
static void check_range(sl_reader *r, int plain_fd, uint8_t *buf, size_t buf_size, uint8_t *want,
                        uint64_t off, size_t len, const char *what)
{
    size_t skip = 12345;
    int rc = sl_reader_read(r, off, len, buf, buf_size, &skip);
    CHECK(rc == 0, "%s: read [%llu, +%zu) returned %d", what, (unsigned long long)off, len, rc);
    if (rc)
        return;
    CHECK(skip == off % SL_READER_ALIGN, "%s: skip %zu for offset %llu", what, skip, (unsigned long long)off);
    ssize_t n = pread(plain_fd, want, len, (off_t)off);
    CHECK(n == (ssize_t)len, "pread returned %zd", n);
    CHECK(memcmp(buf + skip, want, len) == 0, "%s: bytes of [%llu, +%zu) differ from pread", what,
          (unsigned long long)off, len);
}

static void test_mode(const char *path, const char *what, const sl_reader_opts *o, int expect_direct)
{
    sl_reader *r = NULL;
    int rc = sl_reader_open(path, o, &r);
    CHECK(rc == 0 && r, "%s: open %s: %d", what, path, rc);
    if (rc)
        return;
    CHECK(sl_reader_size(r) == FILE_SIZE, "%s: size %llu", what, (unsigned long long)sl_reader_size(r));
    if (expect_direct >= 0)
        CHECK(sl_reader_direct(r) == (expect_direct != 0), "%s: direct is %d, expected %d", what,
              sl_reader_direct(r), expect_direct);
    fprintf(stderr, "  %s on %s: %s\n", what, path, sl_reader_direct(r) ? "direct I/O" : "buffered");

    size_t buf_size = sl_reader_span(0, FILE_SIZE);
    uint8_t *buf = aligned_alloc(SL_READER_ALIGN, buf_size);
    uint8_t *want = malloc(FILE_SIZE);
    int plain = open(path, O_RDONLY);
    SL_ASSERT(buf && want && plain >= 0);

    /* Fixed cases: the whole file, the edges, unaligned both ends. */
    check_range(r, plain, buf, buf_size, want, 0, FILE_SIZE, what);
    check_range(r, plain, buf, buf_size, want, FILE_SIZE - 1, 1, what);
    check_range(r, plain, buf, buf_size, want, 0, 1, what);
    check_range(r, plain, buf, buf_size, want, 4095, 2, what);
    check_range(r, plain, buf, buf_size, want, 4096, 4096, what);
    check_range(r, plain, buf, buf_size, want, 1, FILE_SIZE - 2, what);
    check_range(r, plain, buf, buf_size, want, FILE_SIZE - 1234, 1234, what);
    check_range(r, plain, buf, buf_size, want, 5 * 1024 * 1024 - 7, 1024 * 1024 + 13, what);

    /* Random ranges; every buffer is just the span, so an overrun shows
     * under the address sanitizer. */
    for (int i = 0; i < 150; i++) {
        uint64_t off = rnd() % FILE_SIZE;
        size_t room = FILE_SIZE - off, len = 1 + (size_t)(rnd() % (room < MAX_LEN ? room : MAX_LEN));
        if (i % 3 == 0)
            len = 1 + (size_t)(rnd() % (room < 9000 ? room : 9000)); /* small ones too */
        size_t span = sl_reader_span(off, len);
        uint8_t *b = aligned_alloc(SL_READER_ALIGN, span);
        SL_ASSERT(b);
        check_range(r, plain, b, span, want, off, len, what);
        free(b);
    }

    /* Refused requests. */
    size_t skip;
    CHECK(sl_reader_read(r, FILE_SIZE, 1, buf, buf_size, &skip) == -SL_ERANGE, "%s: read at EOF", what);
    CHECK(sl_reader_read(r, FILE_SIZE - 1, 2, buf, buf_size, &skip) == -SL_ERANGE, "%s: read across EOF",
          what);
    CHECK(sl_reader_read(r, (uint64_t)FILE_SIZE * 4, 10, buf, buf_size, &skip) == -SL_ERANGE,
          "%s: read far past EOF", what);
    CHECK(sl_reader_read(r, UINT64_MAX - 3, 10, buf, buf_size, &skip) == -SL_ERANGE, "%s: wrapping range",
          what);
    CHECK(sl_reader_read(r, 0, 0, buf, buf_size, &skip) == -SL_EINVAL, "%s: empty range", what);
    CHECK(sl_reader_read(r, 0, 100, buf + 512, buf_size - 512, &skip) == -SL_EINVAL, "%s: misaligned buffer",
          what);
    CHECK(sl_reader_read(r, 4000, 200, buf, 4096, &skip) == -SL_EINVAL, "%s: buffer shorter than the span",
          what);
    CHECK(sl_reader_read(r, 4000, 200, buf, 8192, &skip) == 0 && skip == 4000, "%s: exact span", what);

    close(plain);
    free(want);
    free(buf);
    sl_reader_close(r);
}

/* A file cut short after the reader opened it: reads of the lost bytes fail
 * with -SL_EIO, reads of what is left still work. */
static void test_truncated(const char *path, const sl_reader_opts *o, const char *what)
{
    SL_ASSERT(write_file(path, FILE_SIZE) == 0);
    sl_reader *r = NULL;
    int rc = sl_reader_open(path, o, &r);
    CHECK(rc == 0, "%s: open %d", what, rc);
    if (rc)
        return;
    CHECK(truncate(path, 3 * 1024 * 1024 + 100) == 0, "truncate: %s", strerror(errno));
    size_t span = sl_reader_span(0, FILE_SIZE);
    uint8_t *buf = aligned_alloc(SL_READER_ALIGN, span);
    size_t skip;
    CHECK(sl_reader_read(r, 0, FILE_SIZE, buf, span, &skip) == -SL_EIO, "%s: whole truncated file", what);
    CHECK(sl_reader_read(r, 3 * 1024 * 1024 + 50, 51, buf, span, &skip) == -SL_EIO,
          "%s: one byte past the cut", what);
    CHECK(sl_reader_read(r, 3 * 1024 * 1024 + 50, 50, buf, span, &skip) == 0, "%s: up to the cut", what);
    CHECK(sl_reader_read(r, 100, 3 * 1024 * 1024, buf, span, &skip) == 0, "%s: before the cut", what);
    free(buf);
    sl_reader_close(r);
}

static void test_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/test_reader.%d.bin", dir, (int)getpid());
    if (write_file(path, FILE_SIZE) != 0) {
        CHECK(0, "cannot write %s: %s", path, strerror(errno));
        return;
    }
    int direct_ok = fs_allows_direct(path);

    sl_reader_opts o = sl_reader_opts_default();
    test_mode(path, "defaults", &o, direct_ok);
    o.n_threads = 0;
    test_mode(path, "no threads", &o, direct_ok);
    o.n_threads = 5;
    o.chunk = 3 * SL_READER_ALIGN; /* many chunks per request */
    test_mode(path, "5 threads, 12 KiB chunks", &o, direct_ok);
    o.flags = SL_READER_BUFFERED;
    test_mode(path, "buffered", &o, 0);
    o = sl_reader_opts_default();
    o.flags = SL_READER_SIMULATE_NO_DIRECT;
    test_mode(path, "fallback", &o, 0);

    o = sl_reader_opts_default();
    test_truncated(path, &o, "truncated, direct");
    o.flags = SL_READER_BUFFERED;
    test_truncated(path, &o, "truncated, buffered");
    unlink(path);
}

static void test_open_errors(const char *dir)
{
    sl_reader *r = (sl_reader *)1;
    char path[4096];
    snprintf(path, sizeof path, "%s/no-such-file.%d", dir, (int)getpid());
    CHECK(sl_reader_open(path, NULL, &r) == -SL_EIO && r == NULL, "missing file");
    CHECK(sl_reader_open(dir, NULL, &r) == -SL_EIO && r == NULL, "a directory");
    sl_reader_opts o = sl_reader_opts_default();
    o.chunk = 5000;
    CHECK(sl_reader_open(dir, &o, &r) == -SL_EINVAL, "unaligned chunk");
    o = sl_reader_opts_default();
    o.n_threads = SL_READER_MAX_THREADS + 1;
    CHECK(sl_reader_open(dir, &o, &r) == -SL_EINVAL, "too many threads");
    o = sl_reader_opts_default();
    o.flags = 1u << 7;
    CHECK(sl_reader_open(dir, &o, &r) == -SL_EINVAL, "unknown flag");

    /* An empty file opens; every range of it is past the end. */
    snprintf(path, sizeof path, "%s/test_reader_empty.%d.bin", dir, (int)getpid());
    SL_ASSERT(write_file(path, 0) == 0);
    CHECK(sl_reader_open(path, NULL, &r) == 0 && sl_reader_size(r) == 0, "empty file");
    uint8_t *buf = aligned_alloc(SL_READER_ALIGN, SL_READER_ALIGN);
    size_t skip;
    CHECK(sl_reader_read(r, 0, 1, buf, SL_READER_ALIGN, &skip) == -SL_ERANGE, "read of an empty file");
    free(buf);
    sl_reader_close(r);
    unlink(path);
}

static void test_span(void)
{
    CHECK(sl_reader_span(0, 1) == 4096, "span(0, 1)");
    CHECK(sl_reader_span(4095, 1) == 4096, "span(4095, 1)");
    CHECK(sl_reader_span(4095, 2) == 8192, "span(4095, 2)");
    CHECK(sl_reader_span(4096, 4096) == 4096, "span(4096, 4096)");
    CHECK(sl_reader_span(10000, 100000) == 110592 - 8192, "span(10000, 100000) = %zu",
          sl_reader_span(10000, 100000));
    CHECK(sl_reader_span(UINT64_MAX - 10, 5) == 0, "span near 2^64");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [DIR...]\n", argv[0]);
        return 2;
    }
    test_span();
    for (int i = 1; i < argc; i++) {
        if (access(argv[i], W_OK) != 0) {
            fprintf(stderr, "  skipping %s: %s\n", argv[i], strerror(errno));
            continue;
        }
        test_dir(argv[i]);
        test_open_errors(argv[i]);
    }
    return sl_test_finish();
}
