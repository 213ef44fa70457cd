/* Thread pool: every item runs exactly once per dispatch, chunks are never
 * empty, worker ids are in range, and many quick dispatches in a row (the
 * forward pass's pattern) neither lose nor repeat work. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/pool.h"
#include "tests/testutil.h"

typedef struct hits {
    _Atomic int *count;
    _Atomic int bad_range;
    _Atomic int bad_worker;
    uint32_t n_threads;
} hits;

static void mark(void *ctx, int64_t begin, int64_t end, uint32_t worker)
{
    hits *h = ctx;
    if (begin >= end)
        atomic_fetch_add(&h->bad_range, 1);
    if (worker >= h->n_threads)
        atomic_fetch_add(&h->bad_worker, 1);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&h->count[i], 1);
}

int main(void)
{
    static const uint32_t threads[] = {1, 2, 3, 5};
    static const int64_t sizes[] = {0, 1, 2, 3, 7, 1000};
    _Atomic int *count = calloc(1000, sizeof *count);
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        sl_pool *p = NULL;
        CHECK(sl_pool_new(threads[ti], &p) == 0, "pool of %u", threads[ti]);
        if (!p)
            continue;
        CHECK(sl_pool_size(p) == threads[ti], "size");
        hits h = {.count = count, .n_threads = threads[ti]};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si];
            const int rounds = 300;
            for (int64_t i = 0; i < n; i++)
                atomic_store(&count[i], 0);
            for (int r = 0; r < rounds; r++)
                sl_pool_run(p, n, mark, &h);
            int wrong = 0;
            for (int64_t i = 0; i < n; i++)
                wrong += atomic_load(&count[i]) != rounds;
            CHECK(wrong == 0, "%u threads, %lld items: %d items not run exactly %d times", threads[ti],
                  (long long)n, wrong, rounds);
        }
        CHECK(atomic_load(&h.bad_range) == 0, "empty chunks dispatched");
        CHECK(atomic_load(&h.bad_worker) == 0, "worker id out of range");
        sl_pool_free(p);
    }
    sl_pool *p = NULL;
    CHECK(sl_pool_new(0, &p) == -SL_EINVAL && p == NULL, "0 threads refused");
    sl_pool_free(NULL);
    free(count);
    return sl_test_finish();
}
