/* The memory plan: how a budget is split between pinned weights, the
 * streaming ring, the KV cache and the activations (DESIGN.md §2).
 *
 * Every token reads the units in the same order (layers 0..L-1, then the
 * head), a cyclic scan. Evicting least-recently-used units would then read
 * the whole model every token, so the plan pins a fixed subset of units
 * (loaded once, never evicted) and streams the rest through a ring of
 * equal-sized slots; bytes streamed per token = model bytes - pinned bytes.
 * Among the plans that fit, it picks the one that pins the most bytes with
 * the prefetch depth asked for.
 *
 * Sizes of streamed units are what a direct-I/O read of them takes: their
 * image, each range widened to 4 KiB boundaries (SL_PLAN_IO_ALIGN; see
 * model/model.h). Pure computation: no I/O, no allocation beyond the plan
 * itself.
 *
 * Mixture of experts: a token reads only the experts it is routed to, a
 * few of each layer's, and which ones repeats from token to token. The
 * layers without their experts (and the head) are planned as above; the
 * experts live in an expert cache of equal slots, filled on demand
 * (compute/expcache.h), which gets at least SL_PLAN_MIN_EXPERT_SLOTS slots
 * and then whatever the budget has left once the layers are placed:
 * pinning a byte of a layer saves a byte per token, caching a byte of
 * experts saves at most the chance that the expert is used. */
#ifndef SL_COORDINATOR_PLAN_H
#define SL_COORDINATOR_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

#define SL_PLAN_IO_ALIGN 4096u

/* What the plan is for. */
typedef struct sl_plan_req {
    uint64_t budget;       /* bytes for weights, KV cache, activations and scratch */
    uint32_t n_ctx;        /* positions per session */
    uint32_t n_batch;      /* most tokens in one forward step (all sessions together) */
    uint32_t max_sessions; /* sessions with their own KV cache */
    uint32_t n_threads;    /* compute threads per worker (scratch is per thread) */
    uint32_t ring_depth;   /* slots in the ring when streaming (>= 2) */
} sl_plan_req;

/* Unit i of a step: i < n_layer is layer i; i == n_layer is the head. */
typedef struct sl_plan_unit {
    uint64_t offset;       /* file offset of the span */
    uint64_t nbytes;       /* span length */
    uint64_t io_offset;    /* offset rounded down to SL_PLAN_IO_ALIGN */
    uint64_t io_bytes;     /* [io_offset, end rounded up) */
    bool pinned;
    uint64_t pin_offset;   /* where its io range starts in the pinned region */
} sl_plan_unit;

#define SL_PLAN_MIN_EXPERT_SLOTS 2u /* one fills while one computes */

typedef struct sl_plan {
    uint32_t n_units;        /* n_layer + 1 */
    sl_plan_unit *units;     /* n_units entries; owned by the plan */
    uint32_t n_streamed;     /* units not pinned */
    uint32_t ring_slots;     /* 0 when everything is pinned */
    uint64_t slot_bytes;     /* size of each ring slot (largest streamed io range) */
    uint64_t pinned_bytes;   /* size of the pinned region */
    uint64_t kv_bytes;       /* KV cache for all sessions */
    uint64_t act_bytes;      /* activations, scratch and logits: the sum of */
    uint64_t x_bytes;        /*   the residual stream of a step's tokens, */
    uint64_t scratch_bytes;  /*   the forward scratch, */
    uint64_t logits_bytes;   /*   one logits row per session (each 4 KiB-rounded) */
    uint64_t total_bytes;    /* ring + pinned + kv + act + expert cache (<= budget) */
    uint64_t model_bytes;    /* sum of the units' bytes (experts excluded) */
    uint64_t streamed_bytes; /* sum of the streamed units' bytes: read per step (experts excluded) */
    /* Mixture of experts (all 0 for a dense model). The expert units are
     * numbered after the n_units above: expert e of layer il is unit
     * n_units + il * n_expert + e. Never pinned nor in the ring. */
    uint32_t n_expert_units;     /* n_layer * n_expert */
    uint32_t expert_slots;       /* slots of the expert cache (>= SL_PLAN_MIN_EXPERT_SLOTS) */
    uint64_t expert_slot_bytes;  /* each: the largest expert image */
    uint64_t expert_cache_bytes; /* expert_slots * expert_slot_bytes, counted in total_bytes */
    uint64_t expert_bytes;       /* bytes of all the experts */
} sl_plan;

/* Bytes of the KV cache for a request: a part of the budget that does not
 * depend on the weights. */
uint64_t sl_plan_kv_bytes(const sl_hparams *hp, const sl_plan_req *req);

/* Computes the plan for `m` under req. Returns 0 and fills *out (free with
 * sl_plan_free); -SL_EINVAL for a request with a zero field or ring_depth <
 * 2; -SL_ERANGE when the budget cannot hold the KV cache and activations
 * plus ring_depth slots of the largest unit (nor the whole model pinned),
 * and for a mixture of experts SL_PLAN_MIN_EXPERT_SLOTS expert slots: the
 * message gives the minimum budget in bytes and MiB. -SL_ENOMEM.
 * Does not block. */
int sl_plan_make(const sl_model *m, const sl_plan_req *req, sl_plan *out);

/* Re-plans a running pipeline for another budget without moving anything
 * in its shared memory (coordinator/layout.h). `base` is the plan the
 * segments were created from: only the units it pins have a range in the
 * pinned region, and the ring arena has arena_slots (>= 2) slots of
 * arena_slot_bytes. The new plan pins a subset of base's pinned units,
 * largest first, at their base pin_offset, and streams the others through
 * ring_slots slots: as many as the arena has when some plan fits with
 * them, else fewer (at least 2). It pins everything base pinned when the
 * budget holds it all. The expert cache keeps the size base gave it.
 * Stores the smallest budget any such plan needs in
 * *min_budget (also on failure). Returns 0 and *out (sl_plan_free);
 * -SL_ERANGE when budget < *min_budget (logged); -SL_ENOMEM. Does not
 * block. */
int sl_plan_rebudget(const sl_plan *base, uint64_t budget, uint32_t arena_slots, uint64_t arena_slot_bytes,
                     sl_plan *out, uint64_t *min_budget);

/* Frees the plan's unit table. NULL and zeroed plans are accepted. */
void sl_plan_free(sl_plan *p);

/* Parses a size such as "512K", "64M", "2G", "1.5G" or "4096" (bytes;
 * binary multiples). Returns 0 and the bytes, or -SL_EINVAL (not logged)
 * for anything else, zero, or an overflow. */
int sl_plan_parse_size(const char *s, uint64_t *out);

#endif
