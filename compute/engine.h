/* The in-process runner: one model, one sequence, weights read from the
 * mapped file.
 *
 * It owns the KV cache, the scratch and the thread pool, all allocated once
 * by sl_engine_new, and feeds tokens through compute/forward.h layer by
 * layer. This is what tests, benchmarks and single-process tools use; the
 * multi-process pipeline drives the same forward pass from shared memory. */
#ifndef SL_COMPUTE_ENGINE_H
#define SL_COMPUTE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

typedef struct sl_engine sl_engine;

/* Creates an engine for `model` with a context of n_ctx positions, batches
 * of up to n_batch tokens per forward call and n_threads threads. Returns 0
 * and the engine in *out; or -SL_EINVAL (a zero argument), -SL_ERANGE (sizes
 * that overflow), -SL_ENOMEM, or a pool error, logged, with *out NULL.
 * Allocates the KV cache (n_layer * n_ctx * (K + V row) floats) and starts
 * the threads. The model must outlive the engine. The caller owns the
 * engine: sl_engine_free. */
int sl_engine_new(const sl_model *model, uint32_t n_ctx, uint32_t n_batch, uint32_t n_threads,
                  sl_engine **out);

/* Stops the threads and frees everything. NULL is accepted. */
void sl_engine_free(sl_engine *e);

/* Appends n tokens at the current position, processing them in batches of
 * up to n_batch, and writes logits: with want_all_logits, n rows of n_vocab
 * floats (row t follows tokens[0..t]); else n_vocab floats for the last
 * token. Returns 0 and advances the position by n; or, with nothing changed,
 * -SL_ERANGE when the context cannot take n more tokens or a token is
 * outside the vocabulary, -SL_EINVAL for n == 0 or NULL pointers; logged.
 * Blocks while computing; allocates nothing. */
int sl_engine_eval(sl_engine *e, const int32_t *tokens, uint32_t n, bool want_all_logits, float *logits_out);

/* Forgets the sequence: the next eval starts at position 0. */
void sl_engine_reset(sl_engine *e);

/* Number of positions filled so far. */
uint32_t sl_engine_pos(const sl_engine *e);

/* Context size the engine was created with. */
uint32_t sl_engine_n_ctx(const sl_engine *e);

#endif
