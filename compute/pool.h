/* A fixed pool of worker threads that split a range of work items.
 *
 * The forward pass dispatches a few jobs per layer (matrix rows, attention
 * heads), each of which is a range [0, n) of independent items. The pool
 * cuts the range into one contiguous chunk per thread; the calling thread
 * works on chunk 0 itself, so a pool of 1 thread runs everything inline.
 * A dispatch costs a generation-counter bump and, when workers are asleep, a
 * condition-variable broadcast; nothing is allocated per dispatch. Workers
 * spin briefly before sleeping, because consecutive dispatches of one layer
 * follow each other within microseconds. */
#ifndef SL_COMPUTE_POOL_H
#define SL_COMPUTE_POOL_H

#include <stdint.h>

typedef struct sl_pool sl_pool;

/* Processes items [begin, end) of a job; `worker` (0 .. size-1) identifies
 * the thread, so the job can give each one its own scratch. Called at most
 * once per worker per dispatch, never with an empty range. */
typedef void (*sl_pool_fn)(void *ctx, int64_t begin, int64_t end, uint32_t worker);

/* Starts n_threads - 1 worker threads (n_threads >= 1). Returns 0 and a new
 * pool in *out, or -SL_EINVAL (n_threads 0 or above 1024) / -SL_ENOMEM /
 * -SL_EIO (thread creation failed), logged, with *out NULL. The caller owns
 * the pool: sl_pool_free. */
int sl_pool_new(uint32_t n_threads, sl_pool **out);

/* Stops and joins the workers, then frees the pool. NULL is accepted. */
void sl_pool_free(sl_pool *p);

/* Number of threads, the caller's included. */
uint32_t sl_pool_size(const sl_pool *p);

/* Runs fn over [0, n_items), split into at most sl_pool_size contiguous
 * chunks of near-equal size, and returns when every chunk is done (blocks).
 * Which worker runs which item is not specified: items must not depend on
 * it except for picking private scratch. Not reentrant: one dispatch at a
 * time, from one thread at a time (asserted). Never fails or allocates. */
void sl_pool_run(sl_pool *p, int64_t n_items, sl_pool_fn fn, void *ctx);

#endif
