/* sl-membw: memory read bandwidth of this machine, the bound that decode
 * speed is compared with when the weights are in RAM (DESIGN.md §6).
 *
 * Sums a large buffer of 64-bit words (far larger than any cache) with 1
 * thread and with every core, each thread its own contiguous slice, and
 * reports the best of several passes in GB/s (10^9 bytes per second). The
 * sum uses eight independent accumulators so that the loop is limited by
 * loads, not by the add chain, and the compiler can vectorise it.
 *
 * usage: sl-membw [--size MIB] [--reps N] [--threads N]... [-q] */
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_THREAD_COUNTS 16

typedef struct job {
    const uint64_t *p;
    size_t n; /* words, a multiple of 8 */
    uint64_t sum;
    double t0, t1; /* this thread's start and end */
    pthread_barrier_t *start;
    pthread_t th;
} job;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t sum_words(const uint64_t *p, size_t n)
{
    uint64_t a[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int k = 0; k < 8; k++)
            a[k] += p[i + k];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

static void *run_job(void *arg)
{
    job *j = arg;
    pthread_barrier_wait(j->start);
    j->t0 = now_s();
    j->sum = sum_words(j->p, j->n);
    j->t1 = now_s();
    return NULL;
}

/* One pass with n threads: the time from the first thread's start to the
 * last thread's end, each read by the thread itself (a clock read by the
 * main thread after the barrier could come late on a busy machine and
 * flatter the figure). *sum receives the total, so no work is skipped. */
static double pass(const uint64_t *buf, size_t words, unsigned n, uint64_t *sum)
{
    job jobs[MAX_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, n + 1);
    size_t per = words / n / 8 * 8;
    for (unsigned i = 0; i < n; i++) {
        jobs[i] = (job){.p = buf + i * per, .n = per, .start = &start};
        if (pthread_create(&jobs[i].th, NULL, run_job, &jobs[i]) != 0) {
            fprintf(stderr, "sl-membw: cannot start thread %u\n", i);
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    *sum = 0;
    double t0 = 0, t1 = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(jobs[i].th, NULL);
        *sum += jobs[i].sum;
        t0 = i == 0 || jobs[i].t0 < t0 ? jobs[i].t0 : t0;
        t1 = i == 0 || jobs[i].t1 > t1 ? jobs[i].t1 : t1;
    }
    double dt = t1 - t0;
    pthread_barrier_destroy(&start);
    return (double)(per * n * sizeof(uint64_t)) / dt / 1e9;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sl-membw [--size MIB] [--reps N] [--threads N]... [-q]\n\n"
               "Memory read bandwidth (GB/s = 1e9 bytes/s), best of N passes over the buffer.\n"
               "  --size MIB     buffer size (default 1024)\n"
               "  --reps N       passes per thread count (default 5)\n"
               "  --threads N    a thread count to measure (repeatable; default 1 and all cores)\n"
               "  -q             print only the best figure, a bare number in GB/s\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"size", required_argument, 0, 's'},
                                         {"reps", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    long size_mib = 1024, reps = 5;
    unsigned counts[MAX_THREAD_COUNTS], n_counts = 0;
    int quiet = 0, c;
    while ((c = getopt_long(argc, argv, "s:r:t:qh", opts, NULL)) != -1) {
        char *end;
        long v = c == 's' || c == 'r' || c == 't' ? strtol(optarg, &end, 10) : 0;
        if ((c == 's' || c == 'r' || c == 't') && (*end || v < 1)) {
            fprintf(stderr, "sl-membw: bad value '%s'\n", optarg);
            return 2;
        }
        if (c == 's')
            size_mib = v;
        else if (c == 'r')
            reps = v;
        else if (c == 't') {
            if (v > MAX_THREADS || n_counts == MAX_THREAD_COUNTS) {
                fprintf(stderr, "sl-membw: at most %d thread counts of at most %d threads\n",
                        MAX_THREAD_COUNTS, MAX_THREADS);
                return 2;
            }
            counts[n_counts++] = (unsigned)v;
        } else if (c == 'q')
            quiet = 1;
        else {
            usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (n_counts == 0) {
        counts[n_counts++] = 1;
        if (cores > 1)
            counts[n_counts++] = (unsigned)(cores < MAX_THREADS ? cores : MAX_THREADS);
    }

    size_t bytes = (size_t)size_mib << 20;
    size_t words = bytes / sizeof(uint64_t);
    /* mmap rather than malloc: page-aligned, and huge pages where the kernel
     * offers them (fewer TLB misses, as a model's weights would get). */
    uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        fprintf(stderr, "sl-membw: cannot map %ld MiB\n", size_mib);
        return 1;
    }
    madvise(buf, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < words; i++) /* touch every page; non-zero so nothing is shared */
        buf[i] = i * 0x9e3779b97f4a7c15ull;

    double best_all = 0;
    unsigned best_threads = 0;
    for (unsigned k = 0; k < n_counts; k++) {
        double best = 0;
        uint64_t sum = 0, sum0 = 0;
        for (long r = 0; r < reps; r++) {
            double gbs = pass(buf, words, counts[k], &sum);
            best = gbs > best ? gbs : best;
            if (r == 0)
                sum0 = sum;
            else if (sum != sum0) {
                fprintf(stderr, "sl-membw: sums differ between passes (memory error?)\n");
                return 1;
            }
        }
        if (!quiet)
            printf("memory read bandwidth, %u thread%s: %.1f GB/s (best of %ld passes over %ld MiB; checksum "
                   "%016llx)\n",
                   counts[k], counts[k] == 1 ? "" : "s", best, reps, size_mib, (unsigned long long)sum0);
        if (best > best_all) {
            best_all = best;
            best_threads = counts[k];
        }
    }
    if (quiet)
        printf("%.2f\n", best_all);
    else
        printf("best: %.1f GB/s with %u thread%s\n", best_all, best_threads, best_threads == 1 ? "" : "s");
    munmap(buf, bytes);
    return 0;
}
