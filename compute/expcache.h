/* The expert cache of a mixture-of-experts pipeline: which experts the
 * expert slots (a slot arena, shm/slots.h) hold, which to evict for the
 * next one, which to load ahead of need, and what it all cost.
 *
 * A token uses a few experts per layer, and which ones is skewed and
 * repeats from token to token (DESIGN.md §2), so the slots are a cache,
 * managed by the compute worker running the step: once a layer's router
 * has chosen (sl_expcache_need), the chosen experts that no slot holds are
 * asked for, each in a slot whose expert is worth least, and loaders fill
 * them, several at once; the worker takes each as it becomes ready
 * (sl_expcache_take), computes, and gives it back (sl_expcache_release).
 *
 * Worth: a frequency with exponential decay, in the manner of LRFU: every
 * step that uses an expert adds 1 to its score, and a score halves every
 * `halflife` steps. A large half-life keeps the experts most used over a
 * long stretch (least frequently used eviction); a half-life of 0 keeps
 * the most recent ones (least recently used eviction). Stored as key =
 * log2(score) + step / halflife, which orders experts by their current
 * score without updating every score every step.
 *
 * Prefetching (optional): before a layer's attention the step predicts the
 * layer's experts from the residual stream through that layer's router
 * (compute/moe.h), and sl_expcache_prefetch asks for the predicted ones
 * that no slot holds, evicting only experts worth less than the predicted
 * one would be once used. Loads are served oldest first, so a wrong guess
 * delays the real ones: whether it pays is measured (bench/moe.sh).
 *
 * Shared region (native byte order; region "expcache" of the pipeline's ctl
 * segment, coordinator/layout.h):
 *   header, 64 bytes:
 *     0  u32 magic      SL_EXPCACHE_MAGIC
 *     4  u32 version    SL_EXPCACHE_VERSION
 *     8  u32 n_units    expert units (n_layer * n_expert)
 *    12  u32 n_expert   experts per layer
 *    16  u32 unit0      the unit number slot words use for expert unit 0
 *    20  u32 halflife   in steps; 0: least recently used
 *    24  u32 prefetch   1: prefetch predicted experts; 0: do not
 *    28  u32 reserved   0
 *    32  u64 clock      steps begun (sl_expcache_step)
 *    40  24 bytes zero
 *   counters, 128 bytes: the fields of sl_expcache_stats in order, u64
 *     relaxed atomics, then zero up to 16 of them
 *   then per expert unit, 16 bytes:
 *     0  f64 key        worth (above); -infinity when never used
 *     8  u32 slot       the slot last asked to hold it (a hint, checked
 *                       against the slot's word before use; UINT32_MAX none)
 *    12  u32 flags      bit 0: loaded by a prefetch and not used since
 * Expert unit i is expert i % n_expert of layer i / n_expert.
 *
 * Only the worker running a step changes the policy state (the step is
 * claimed by one worker at a time); anyone may read the counters. A worker
 * that dies leaves at worst a slot asked for and never used. Nothing
 * allocates after sl_expcache_open; nothing blocks. */
#ifndef SL_COMPUTE_EXPCACHE_H
#define SL_COMPUTE_EXPCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/slots.h"

#define SL_EXPCACHE_MAGIC 0x58434553u /* "SECX" */
#define SL_EXPCACHE_VERSION 1u
#define SL_EXPCACHE_DEFAULT_HALFLIFE 64u

/* Cumulative counts, from the region's counters. */
typedef struct sl_expcache_stats {
    uint64_t steps;           /* steps begun */
    uint64_t tokens;          /* tokens of those steps */
    uint64_t used;            /* experts the steps needed: each (layer, expert) once per step,
                               * however many of its tokens chose it */
    uint64_t hits;            /* of those, held by a slot when needed */
    uint64_t prefetch_hits;   /* ... held or being loaded because a prefetch asked for them */
    uint64_t misses;          /* ... loaded when needed */
    uint64_t prefetched;      /* loads a prefetch asked for */
    uint64_t prefetch_wasted; /* prefetched experts evicted unused, or their load called off */
    uint64_t loaded_bytes;    /* bytes of the experts asked for and not called off */
    uint64_t wait_ns;         /* time the worker spent waiting for experts */
} sl_expcache_stats;

/* What the region is formatted for. */
typedef struct sl_expcache_params {
    uint32_t n_layer, n_expert;
    uint32_t unit0;    /* unit number of expert unit 0 in slot words */
    uint32_t halflife; /* steps; 0: least recently used */
    bool prefetch;
} sl_expcache_params;

typedef struct sl_expcache sl_expcache;

/* Bytes of the region for n_units expert units. */
uint64_t sl_expcache_size(uint32_t n_units);

/* Formats the region (size bytes, zero-filled) for p. Returns 0, or
 * -SL_EINVAL (logged) when the counts are 0, the units overflow the slot
 * word's unit field, or the region is too small. For the creator, before
 * publishing. */
int sl_expcache_format(void *region, uint64_t size, const sl_expcache_params *p);

/* Checks the region and returns a handle over it and the expert arena
 * `slots` (whose units are unit0 .. unit0 + n_units - 1); unit_bytes[i] is
 * what loading expert unit i reads (copied). Returns 0 and *out (owned by
 * the caller: sl_expcache_close); -SL_EFORMAT / -SL_EVERSION (logged) for
 * a region this build does not understand; -SL_ENOMEM. The region and the
 * arena must outlive the handle. */
int sl_expcache_open(void *region, uint64_t size, sl_slots *slots, const uint64_t *unit_bytes, sl_expcache **out);

/* Frees the handle. NULL is accepted. */
void sl_expcache_close(sl_expcache *c);

/* The counters now. Never fails. */
void sl_expcache_stats_get(const sl_expcache *c, sl_expcache_stats *out);

/* Whether the region asks for prefetching; its half-life. */
bool sl_expcache_prefetching(const sl_expcache *c);
uint32_t sl_expcache_halflife(const sl_expcache *c);

/* Worker: a step of n_tokens tokens begins (advances the clock). */
void sl_expcache_step(sl_expcache *c, uint32_t n_tokens);

/* Worker: layer `layer` needs expert e for counts[e] tokens (n_expert
 * entries, 0: not needed). Counts each as a hit or a miss, records the use,
 * and asks for the missing ones in the slots worth least (those that do
 * not fit now are asked for by sl_expcache_take as slots come free).
 * Replaces any earlier layer's needs. */
void sl_expcache_need(sl_expcache *c, uint32_t layer, const uint32_t *counts);

/* Worker `holder`: takes a reference to the slot of one needed expert of
 * the layer not taken yet that is ready, storing the expert and the slot.
 * Returns SL_SLOTS_OK; SL_SLOTS_NONE when none is ready (asks for what it
 * can and returns: wait with sl_slots_wait_change and call again). Every
 * needed expert must be taken before the next need (asserted when none is
 * left to take). */
int sl_expcache_take(sl_expcache *c, uint32_t holder, uint32_t *expert, uint32_t *slot);

/* Worker: gives back the slot taken (it stays cached). */
void sl_expcache_release(sl_expcache *c, uint32_t holder, uint32_t slot);

/* Worker: the experts of layer `layer` with want[e] != 0 will likely be
 * needed soon: asks for those no slot holds (see the top). */
void sl_expcache_prefetch(sl_expcache *c, uint32_t layer, const uint8_t *want);

/* Worker: adds time spent waiting for experts to the counters. */
void sl_expcache_add_wait(sl_expcache *c, uint64_t ns);

#endif
