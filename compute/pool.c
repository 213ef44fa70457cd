/* Worker thread pool; see pool.h.
 *
 * Protocol: the dispatcher publishes the job (fn, ctx, n_items), sets
 * `pending` to the number of workers and bumps `gen`. A worker that sees a
 * new generation runs its chunk and decrements `pending`. Both sides spin on
 * the atomics for a short while before blocking, because dispatches arrive
 * in quick bursts, and the mutex and condition variables are touched only
 * when someone is blocked: a worker about to sleep counts itself in
 * `sleepers` (under the mutex) before its last look at `gen`, and the
 * dispatcher about to sleep sets `waiting` before its last look at
 * `pending`; the other side reads those after its own update (each update
 * a read-modify-write, a full barrier), so a wake-up is never missed, and a dispatch
 * between running threads costs no lock and no system call. */
#include "compute/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/log.h"

/* Iterations of polling before a thread blocks: about 150 us (a pause is
 * ~19 ns on the Zen 5 measured), longer than a thread waits for the other
 * at the end of a decode step's product (a block of rows, tens of us) or
 * between two dispatches, so that a decode step sleeps and wakes no thread
 * (1,000 iterations let it sleep often enough to cost 3-4% of decode
 * speed); short enough not to steal much from other processes when the
 * machine is oversubscribed. */
#define SPIN_LIMIT 8000

/* The one place that knows how to tell the CPU we are busy-waiting. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

struct sl_pool {
    uint32_t n_threads;
    pthread_t *threads; /* n_threads - 1 workers */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    _Atomic uint64_t gen;
    _Atomic uint32_t pending;
    _Atomic uint32_t sleepers; /* workers blocked (or about to block) on `wake` */
    _Atomic bool waiting;      /* the dispatcher is blocked (or about to block) on `done` */
    _Atomic bool stop;
    atomic_flag busy; /* catches concurrent dispatches */
    /* The current job; written before gen is bumped, read after. */
    sl_pool_fn fn;
    void *ctx;
    int64_t n_items;
};

typedef struct worker_arg {
    sl_pool *pool;
    uint32_t id;
} worker_arg;

static void run_chunk(sl_pool *p, uint32_t w)
{
    int64_t n = p->n_items, t = p->n_threads;
    int64_t begin = n * w / t, end = n * (w + 1) / t;
    if (begin < end)
        p->fn(p->ctx, begin, end, w);
}

/* Waits until gen differs from `seen` (or the pool stops); returns it. */
static uint64_t wait_for_job(sl_pool *p, uint64_t seen)
{
    for (int i = 0; i < SPIN_LIMIT; i++) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    uint64_t g;
    while ((g = atomic_load(&p->gen)) == seen)
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg)
{
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    sl_pool *p = a.pool;
    uint64_t seen = 0;
    for (;;) {
        seen = wait_for_job(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        run_chunk(p, a.id);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->waiting)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Publishes a new generation; wakes the workers that sleep (all of them
 * when `always`, for shutdown). */
static void bump_generation(sl_pool *p, bool always)
{
    atomic_fetch_add(&p->gen, 1);
    if (always || atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
}

int sl_pool_new(uint32_t n_threads, sl_pool **out)
{
    *out = NULL;
    if (n_threads == 0 || n_threads > 1024) {
        SL_ERROR("n_threads = %u must be in [1, 1024]", n_threads);
        return -SL_EINVAL;
    }
    sl_pool *p = calloc(1, sizeof *p);
    pthread_t *threads = calloc(n_threads, sizeof *threads);
    if (!p || !threads) {
        SL_ERROR("out of memory for a pool of %u threads", n_threads);
        free(p);
        free(threads);
        return -SL_ENOMEM;
    }
    p->n_threads = n_threads;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->waiting, false);
    atomic_init(&p->stop, false);
    atomic_flag_clear(&p->busy);
    for (uint32_t i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (a)
            *a = (worker_arg){p, i};
        int err = a ? pthread_create(&p->threads[i], NULL, worker_main, a) : -1;
        if (err != 0) {
            free(a);
            SL_ERROR("cannot start worker thread %u of %u (error %d)", i, n_threads, err);
            p->n_threads = i; /* join the ones that did start */
            sl_pool_free(p);
            return a ? -SL_EIO : -SL_ENOMEM;
        }
    }
    *out = p;
    return 0;
}

void sl_pool_free(sl_pool *p)
{
    if (!p)
        return;
    atomic_store_explicit(&p->stop, true, memory_order_release);
    bump_generation(p, true);
    for (uint32_t i = 1; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

uint32_t sl_pool_size(const sl_pool *p)
{
    return p->n_threads;
}

void sl_pool_run(sl_pool *p, int64_t n_items, sl_pool_fn fn, void *ctx)
{
    SL_ASSERT(n_items >= 0 && fn != NULL);
    SL_ASSERT(!atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire));
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    if (p->n_threads > 1 && n_items > 1) {
        atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
        bump_generation(p, false);
        run_chunk(p, 0);
        int spins = 0;
        while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0 && spins++ < SPIN_LIMIT)
            cpu_relax();
        if (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) {
            pthread_mutex_lock(&p->mu);
            /* An exchange, not a store: the load of `pending` below must not
             * be satisfied before `waiting` is visible to the workers. A
             * sequentially consistent store then load promises that, but
             * qemu-user running aarch64 code on x86 did not keep it (the
             * dispatcher slept through the last worker's decrement: test_forward
             * hung in 6 of 16 runs); a read-modify-write is a full barrier
             * wherever it runs. */
            atomic_exchange(&p->waiting, true);
            while (atomic_load(&p->pending) != 0)
                pthread_cond_wait(&p->done, &p->mu);
            atomic_store(&p->waiting, false);
            pthread_mutex_unlock(&p->mu);
        }
    } else if (n_items > 0) {
        /* Not worth waking anyone: the whole range is chunk 0 of a pool of 1. */
        fn(ctx, 0, n_items, 0);
    }
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}
