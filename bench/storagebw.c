/* sl-storagebw: sequential read bandwidth of one file through the loader's
 * reader (loader/reader.h, direct I/O), the bound that streaming decode is
 * compared with (DESIGN.md §6).
 *
 * Before each pass the file is dropped from the page cache (fdatasync, then
 * posix_fadvise DONTNEED) and the share of it still cached is measured with
 * mincore, so that a figure never comes from RAM by accident. A pass reads
 * the file front to back in requests of --request bytes (as a loader fills
 * slots) into one aligned buffer. Prints GB/s (10^9 bytes per second) per
 * pass and the best, and whether O_DIRECT was in use.
 *
 * usage: sl-storagebw FILE [--request MIB] [--chunk KIB] [--threads N]
 *                          [--reps N] [--limit MIB] [--buffered] [-q] */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "loader/reader.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Asks the kernel to forget the file's cached pages. Dirty pages cannot be
 * dropped, so they are written first. */
static int drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "sl-storagebw: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    fdatasync(fd);
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (rc) {
        fprintf(stderr, "sl-storagebw: posix_fadvise(DONTNEED) on %s failed: %s\n", path, strerror(rc));
        return -1;
    }
    return 0;
}

/* Percentage of the first `len` bytes of the file resident in the page
 * cache, or -1 when it cannot be told. */
static double cached_pct(const char *path, uint64_t len)
{
    if (len == 0)
        return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (size_t)((len + (uint64_t)page - 1) / (uint64_t)page);
    unsigned char *vec = malloc(pages);
    double pct = -1;
    if (vec && mincore(m, len, vec) == 0) {
        size_t in = 0;
        for (size_t i = 0; i < pages; i++)
            in += vec[i] & 1;
        pct = 100.0 * (double)in / (double)pages;
    }
    free(vec);
    munmap(m, len);
    return pct;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sl-storagebw FILE [options]\n\n"
            "Sequential read bandwidth of FILE with direct I/O (GB/s = 1e9 bytes/s), read\n"
            "cold: the file is dropped from the page cache before every pass.\n"
            "  --request MIB   bytes per read request, like one slot fill (default 64)\n"
            "  --chunk KIB     bytes per pread inside a request (default %u)\n"
            "  --threads N     reader threads besides the caller (default %u)\n"
            "  --reps N        passes (default 3)\n"
            "  --limit MIB     read only the first MIB of the file\n"
            "  --buffered      read through the page cache instead (for comparison)\n"
            "  -q              print only the best figure, a bare number in GB/s\n",
            SL_READER_DEFAULT_CHUNK >> 10, SL_READER_DEFAULT_THREADS);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "sl-storagebw: bad value '%s' (expected %ld..%ld)\n", s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_REQ = 256, O_CHUNK, O_THREADS, O_REPS, O_LIMIT, O_BUF };
    static const struct option opts[] = {{"request", required_argument, 0, O_REQ},
                                         {"chunk", required_argument, 0, O_CHUNK},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"reps", required_argument, 0, O_REPS},
                                         {"limit", required_argument, 0, O_LIMIT},
                                         {"buffered", no_argument, 0, O_BUF},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    long request_mib = 64, reps = 3, limit_mib = 0, v;
    sl_reader_opts ro = sl_reader_opts_default();
    bool quiet = false;
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case O_REQ:
            if (parse_long(optarg, 1, 4096, &request_mib))
                return 2;
            break;
        case O_CHUNK:
            if (parse_long(optarg, 4, SL_READER_MAX_CHUNK >> 10, &v) || v % 4) {
                fprintf(stderr, "sl-storagebw: --chunk is in KiB, a multiple of 4\n");
                return 2;
            }
            ro.chunk = (uint32_t)v << 10;
            break;
        case O_THREADS:
            if (parse_long(optarg, 0, SL_READER_MAX_THREADS, &v))
                return 2;
            ro.n_threads = (uint32_t)v;
            break;
        case O_REPS:
            if (parse_long(optarg, 1, 1000, &reps))
                return 2;
            break;
        case O_LIMIT:
            if (parse_long(optarg, 1, 1L << 30, &limit_mib))
                return 2;
            break;
        case O_BUF:
            ro.flags |= SL_READER_BUFFERED;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return 2;
    }
    const char *path = argv[optind];

    sl_reader *r;
    if (sl_reader_open(path, &ro, &r) != 0)
        return 1;
    uint64_t size = sl_reader_size(r);
    if (limit_mib && (uint64_t)limit_mib << 20 < size)
        size = (uint64_t)limit_mib << 20;
    size_t request = (size_t)request_mib << 20;
    size_t buf_size = sl_reader_span(0, request) + SL_READER_ALIGN; /* a request may start mid-block */
    uint8_t *buf = aligned_alloc(SL_READER_ALIGN, buf_size);
    if (!buf || size == 0) {
        fprintf(stderr, "sl-storagebw: %s\n", buf ? "the file is empty" : "out of memory");
        sl_reader_close(r);
        return 1;
    }
    const char *mode = sl_reader_direct(r) ? "direct I/O (O_DIRECT)" : "buffered (page cache)";
    if (!quiet)
        printf("reading %s: %.3f GB, %s, requests of %ld MiB, preads of %u KiB, %u reader threads + caller\n",
               path, (double)size / 1e9, mode, request_mib, ro.chunk >> 10, ro.n_threads);

    double best = 0;
    int status = 0;
    for (long pass = 0; pass < reps && status == 0; pass++) {
        if (drop_cache(path) != 0) {
            status = 1;
            break;
        }
        double cached = cached_pct(path, size);
        double t0 = now_s();
        uint64_t sink = 0;
        for (uint64_t off = 0; off < size; off += request) {
            size_t len = size - off < request ? (size_t)(size - off) : request;
            size_t skip;
            if (sl_reader_read(r, off, len, buf, buf_size, &skip) != 0) {
                status = 1;
                break;
            }
            sink += buf[skip] + buf[skip + len - 1]; /* touch the data */
        }
        double dt = now_s() - t0;
        double gbs = (double)size / dt / 1e9;
        best = gbs > best ? gbs : best;
        if (!quiet && status == 0)
            printf("pass %ld: %.2f GB/s (%.2f s; %.1f%% of the file was cached before the pass) [%llu]\n",
                   pass + 1, gbs, dt, cached, (unsigned long long)(sink & 0xff));
    }
    if (status == 0) {
        if (quiet)
            printf("%.2f\n", best);
        else
            printf("best: %.2f GB/s, %s\n", best, mode);
    }
    free(buf);
    sl_reader_close(r);
    return status;
}
