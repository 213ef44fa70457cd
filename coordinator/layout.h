/* The shared-memory layout of a running pipeline: what the coordinator
 * creates, and what loaders and compute workers attach to.
 *
 * Segments of instance I (shm/segment.h names them /sluice-I-<kind>):
 *   ctl      regions "procs" (shm/proc table), "slots" (ring slot states,
 *            shm/slot.h), "plan" (sl_layout_plan + unit table), "board"
 *            (sl_layout_board + step tokens), "ranges" (every unit's file
 *            ranges, below); a mixture-of-experts model also "eslots" (the
 *            expert slots' states) and "expcache" (compute/expcache.h)
 *   weights  regions "pinned" (the units pinned at creation, each at its
 *            pin_offset) and "ring" (the slot arena: the slots' data); a
 *            mixture-of-experts model also "experts" (the expert slots'
 *            data)
 *   kv       region "kv": max_sessions KV caches of kv_floats floats
 *   act      regions "x" (residual stream), "scratch" (forward scratch),
 *            "logits" (one n_vocab row per step sequence)
 * Only weights, kv and act count against the memory budget; ctl is a few
 * pages plus the tokens of one step.
 *
 * The data plane (DESIGN.md §1): whether a unit is in a slot, and whether a
 * step is posted or done, is shared-memory state with futex wake-ups; no
 * socket message is sent per layer or per step.
 *
 * Ring protocol. A step visits units 0..n_units-1 (layers, then the head).
 * Units not pinned are "streamed"; the k-th streamed unit of a step lies at
 * ring position p = board.ring_base + k, which is held by slot p % ring_slots
 * and is unit streamed[p % n_streamed]. When the worker is done with
 * position p it asks for position p + ring_slots in the same slot, so the
 * loaders always work ring_slots - 1 units ahead of compute, across step
 * boundaries. A completed step advances ring_base by n_streamed. After a
 * failed step the coordinator re-asks every slot for the positions
 * [ring_base, ring_base + ring_slots) and posts the step again.
 *
 * Changing the plan at run time (a new budget, coordinator/budget.h). The
 * slot arena always exists, with the slots the most demanding plan may use
 * (sl_layout_arena); the plan in effect uses ring_slots of them (0 when
 * everything is pinned). The units pinned at creation have a range in the
 * "pinned" region (pin_room = 1) for the pipeline's life; a later plan pins
 * a subset of them, so a unit that stops being pinned keeps its range, only
 * its memory is given back (sl_seg_release), and one pinned again is read
 * back into it. Memory no plan in effect uses is given back as soon as it
 * is unused; in particular the arena of a plan that pins everything is
 * reserved with its segment and given back right after (shared memory
 * must have room for it for that moment). The coordinator changes the plan region only between steps
 * (no step posted and unfinished), then increments plan_gen; the next step
 * it posts (post_seq, release) makes the change visible, and a worker that
 * claims a step whose plan_gen differs from the one it last saw re-reads
 * the streamed list. Loaders read only the fixed fields of a unit (its file
 * range), so they need not know.
 *
 * Ranges. A unit is one or more file ranges (model/model.h), and a slot or
 * pinned range holds its image: range r's read, widened to 4 KiB, at
 * image_offset. Region "ranges": u32 first[n_units + n_expert_units + 1]
 * (unit u's ranges are first[u] .. first[u + 1] - 1), zero padding to 8
 * bytes, then the sl_layout_range entries. A unit's offset and nbytes in
 * the unit table are its first range's offset and its ranges' bytes
 * together, io_offset is offset rounded down to 4 KiB and io_bytes the
 * image's size, so a unit's base (model/model.h) is its slot + (offset -
 * io_offset) whatever its number of ranges.
 *
 * Experts. A mixture-of-experts model's expert units are numbered after the
 * n_units of the step (expert e of layer il: n_units + il * n_expert + e)
 * and are never pinned nor in the ring: the expert arena ("eslots",
 * "experts"; expert_slots slots of expert_slot_bytes) caches them, run by
 * the worker computing the step (compute/expcache.h). Both arenas count
 * their changes on the ring arena's counter (sl_slots_share_wakeups), so a
 * loader sleeps until either wants something.
 *
 * All structures are native byte order and only shared between processes
 * of one machine and one build (kind_version guards the layout). */
#ifndef SL_COORDINATOR_LAYOUT_H
#define SL_COORDINATOR_LAYOUT_H

#include <stdatomic.h>
#include <stdint.h>

#define SL_LAYOUT_VERSION 3u /* kind_version of every pipeline segment */
#define SL_LAYOUT_PLAN_MAGIC 0x4e4c5053u  /* "SPLN" */
#define SL_LAYOUT_BOARD_MAGIC 0x44425053u /* "SPBD" */
#define SL_LAYOUT_PATH_MAX 1024u
#define SL_LAYOUT_MAX_SEQS 64u /* sessions in one step */
#define SL_LAYOUT_FAULT_MAX 384u /* bytes of the board's fault message */

/* One unit of the plan (coordinator/plan.h sl_plan_unit, flattened). */
typedef struct sl_layout_unit {
    uint64_t offset;     /* file offset of the unit's span */
    uint64_t nbytes;     /* span length */
    uint64_t io_offset;  /* span widened to 4 KiB: start ... */
    uint64_t io_bytes;   /* ... and length (what a loader reads) */
    uint64_t pin_offset; /* units with pin_room: offset of the io range in "pinned" */
    uint32_t pinned;     /* 1 pinned now, 0 streamed now (changes between steps) */
    uint32_t pin_room;   /* 1: has a range in "pinned" (pinned at creation); fixed */
} sl_layout_unit; /* 48 bytes */

/* One file range of a unit (model/model.h sl_unit_range). */
typedef struct sl_layout_range {
    uint64_t offset;       /* file offset of its first byte */
    uint64_t nbytes;
    uint64_t image_offset; /* where its widened read starts in the unit's image */
} sl_layout_range; /* 24 bytes */

/* The "plan" region: everything a loader or worker needs to know about the
 * model and the memory plan. Written by the coordinator before it publishes
 * the ctl segment; afterwards only the fields marked "mutable" change, and
 * only between steps (see "Changing the plan" above). */
typedef struct sl_layout_plan {
    uint32_t magic;          /* SL_LAYOUT_PLAN_MAGIC */
    uint32_t n_units;        /* n_layer + 1 */
    uint32_t n_streamed;     /* mutable: units with pinned == 0 */
    uint32_t ring_slots;     /* mutable: slots the ring uses, 0 when nothing
                              * streams; at most the arena's slot count */
    uint64_t slot_bytes;     /* size of each slot of the arena */
    uint64_t model_size;     /* size of the model file, to detect a swapped file */
    uint32_t n_ctx;          /* positions per session */
    uint32_t n_batch;        /* most tokens per step */
    uint32_t max_sessions;   /* KV caches in the kv segment */
    uint32_t n_threads;      /* compute threads the scratch is sized for */
    uint64_t kv_floats;      /* floats of one session's KV cache */
    uint32_t n_vocab;
    uint32_t n_embd;
    _Atomic uint32_t plan_gen; /* +1 after every change of the mutable fields */
    uint32_t reserved;       /* 0 */
    uint64_t budget;         /* mutable: the budget the plan in effect is for */
    uint64_t pinned_bytes;   /* mutable: io bytes of the units pinned now */
    uint32_t n_expert_units; /* experts (units n_units ..); 0: a dense model */
    uint32_t n_expert;       /* experts per layer; 0: a dense model */
    uint64_t n_ranges;       /* entries of the "ranges" region */
    char model_path[SL_LAYOUT_PATH_MAX]; /* absolute path, NUL-terminated */
    uint32_t streamed[];     /* mutable: n_streamed unit indices in step order
                              * (room for n_units), then n_units
                              * sl_layout_unit (8-byte aligned, at
                              * sl_layout_units()) */
} sl_layout_plan;

/* One sequence of the posted step. */
typedef struct sl_layout_seq {
    uint32_t session;  /* index of the KV cache (and of the session) */
    uint32_t n_tokens; /* tokens of this sequence in the step */
    uint32_t pos0;     /* position of its first token */
    uint32_t tok_off;  /* index of its first token in board.tokens */
} sl_layout_seq;

/* The "board" region: the step being computed. The coordinator writes the
 * step fields and then increments post_seq (release) and wakes it; a worker
 * claims the step (claimed_by, compare-and-swap from 0), computes, writes
 * status, then stores done_seq = post_seq (release) and wakes it. */
typedef struct sl_layout_board {
    uint32_t magic;                /* SL_LAYOUT_BOARD_MAGIC */
    _Atomic uint32_t post_seq;     /* futex word: bumped for every posted step */
    _Atomic uint32_t done_seq;     /* futex word: post_seq of the last finished step */
    _Atomic int32_t status;        /* 0, or the negative error of the last step */
    _Atomic uint64_t claimed_by;   /* sl_proc_ident of the worker computing it; 0 none */
    _Atomic uint32_t stop;         /* 1: workers and loaders should exit */
    uint32_t n_seqs;               /* sequences in the step */
    uint64_t ring_base;            /* ring position of the step's first streamed unit */
    uint64_t steps_done;           /* completed steps (statistics) */
    /* Counters for monitoring (coordinator/monitor.h), relaxed atomics: */
    _Atomic uint32_t units_done;   /* units of the step in flight a worker has
                                    * finished (progress of a long prompt) */
    _Atomic uint32_t reserved;     /* 0 */
    _Atomic uint64_t hits;         /* units workers took from the pinned set */
    _Atomic uint64_t misses;       /* units workers took from ring slots */
    _Atomic uint64_t loaded_bytes; /* bytes loaders read into slots */
    _Atomic uint64_t loaded_units; /* slot fills loaders completed */
    /* A unit that cannot be loaded, ever: a packed model's shard found
     * corrupted or truncated (loader/shard.h). The first process to find one
     * records it (sl_layout_fault_set); it stays until a coordinator starts
     * (sl_layout_fault_clear), since the file will not heal by itself:
     * workers stop waiting for units, loaders stop loading, the coordinator
     * fails every request with fault_msg. fault: 0
     * none, 1 being written, 2 set (fault_err and fault_msg valid). */
    _Atomic uint32_t fault;
    int32_t fault_err;             /* negative sl_err */
    char fault_msg[SL_LAYOUT_FAULT_MAX]; /* NUL-terminated; names the shard and the unit */
    sl_layout_seq seqs[SL_LAYOUT_MAX_SEQS];
    int32_t tokens[];              /* n_batch token ids */
} sl_layout_board;

/* The unit table that follows the streamed list in the plan region. */
static inline sl_layout_unit *sl_layout_units(sl_layout_plan *p)
{
    uintptr_t a = (uintptr_t)(p->streamed + p->n_units);
    return (sl_layout_unit *)((a + 7) & ~(uintptr_t)7);
}

/* Bytes of the plan region for n_units units. */
static inline uint64_t sl_layout_plan_bytes(uint32_t n_units)
{
    return ((sizeof(sl_layout_plan) + 4ull * n_units + 7) & ~7ull) + 48ull * n_units;
}

/* Bytes of the "ranges" region for n_all units with n_ranges ranges. */
static inline uint64_t sl_layout_ranges_bytes(uint32_t n_all, uint64_t n_ranges)
{
    return ((4ull * (n_all + 1ull) + 7) & ~7ull) + 24ull * n_ranges;
}

/* Bytes of the board region for steps of up to n_batch tokens. */
static inline uint64_t sl_layout_board_bytes(uint32_t n_batch)
{
    return sizeof(sl_layout_board) + 4ull * n_batch;
}

/* ---- creating and attaching ------------------------------------------- */

#include "compute/expcache.h"
#include "coordinator/plan.h"
#include "loader/fetch.h"
#include "shm/proctab.h"
#include "shm/segment.h"
#include "shm/slots.h"

/* A process's view of a running pipeline's shared memory. Pointers stay
 * valid until sl_layout_close / sl_layout_remove. */
typedef struct sl_layout {
    sl_seg *ctl, *weights, *kv_seg, *act;
    sl_layout_plan *plan;
    sl_layout_board *board;
    sl_proctab *procs;
    sl_slots *slots;        /* the ring arena */
    sl_slots *eslots;       /* the expert arena; NULL for a dense model */
    sl_expcache *ecache;    /* its policy state; NULL for a dense model */
    const uint32_t *range_first;   /* "ranges": n_units + n_expert_units + 1 */
    const sl_layout_range *ranges;
    uint8_t *pinned;        /* pinned region (plan units with pinned = 1) */
    float *kv;              /* max_sessions caches of kv_floats */
    float *x, *scratch, *logits;
} sl_layout;

/* What the coordinator creates the segments from. */
typedef struct sl_layout_spec {
    const char *instance;
    const char *model_path;   /* stored as given: pass an absolute path */
    uint64_t model_size;
    const sl_hparams *hp;
    const sl_plan *plan;
    const sl_plan_req *req;
    uint64_t epoch;           /* sl_seg_new_epoch() */
    const sl_model *model;    /* the units' ranges and the experts */
    uint32_t expert_halflife; /* compute/expcache.h (mixture of experts only) */
    bool expert_prefetch;
} sl_layout_spec;

/* Creates, formats and publishes the four segments of a pipeline (removing
 * stale ones of the instance first). Pinned units are NOT loaded: the
 * caller fills l->pinned. Returns 0 and a handle in *out (the caller owns
 * it: sl_layout_remove on shutdown); or a negative error, logged, with
 * nothing left behind. Blocks on shared-memory allocation. */
int sl_layout_create(const sl_layout_spec *spec, sl_layout **out);

/* Attaches to the segments of `instance`. Returns 0 and a handle (owned by
 * the caller: sl_layout_close); -SL_ENOTFOUND (not logged) while the
 * coordinator has not published them yet, so callers can poll; any other
 * negative error is logged. */
int sl_layout_attach(const char *instance, sl_layout **out);

/* sl_layout_attach, retried every 100 ms for up to `seconds` while the
 * segments do not exist yet (a loader or worker may start before its
 * coordinator) and *stop stays 0. Returns what the last attempt returned;
 * logs when it gives up waiting. Blocks. */
int sl_layout_attach_wait(const char *instance, double seconds, const volatile int *stop, sl_layout **out);

/* A coordinator restarting after its predecessor died (DESIGN.md §3):
 * attaches to the segments of spec->instance, checks that they are what
 * sl_layout_create would make from spec (model, context, batch, sessions,
 * threads, unit table, the units pinned at creation, slot arena, region
 * sizes; the plan in effect may differ, see "Changing the plan"), and takes
 * every one over (sl_seg_adopt, with spec->epoch). Everything in them is
 * kept: pinned weights, KV caches, slot states, the process table with the
 * loaders and workers still registered, the step on the board. Returns 0
 * and a handle (the caller owns it, as from sl_layout_create);
 * -SL_ENOTFOUND (not logged) when there are none (or not all four);
 * -SL_EINVAL (logged) when their owner is alive: another coordinator runs
 * the instance; -SL_EFORMAT / -SL_EVERSION (logged, saying what differs)
 * when they were made for other settings or by another build: create new
 * ones (sl_layout_create removes the stale ones). Does not block. */
int sl_layout_adopt(const sl_layout_spec *spec, sl_layout **out);

/* Whether the segments this handle maps were removed: their coordinator
 * shut down, or a restarted one could not take them over and created new
 * ones. A loader or worker then closes the handle and attaches again.
 * Cheap (one fstat); never fails. */
bool sl_layout_replaced(const sl_layout *l);

/* Unmaps (segments stay). NULL accepted. */
void sl_layout_close(sl_layout *l);

/* Unlinks the segments and unmaps (the owner's clean shutdown). NULL
 * accepted. */
void sl_layout_remove(sl_layout *l);

/* Records on the board that a unit cannot be loaded (see fault in
 * sl_layout_board): err and msg (truncated to fit) when no fault is
 * recorded yet, else nothing (the first one stands). Wakes nobody: workers
 * and the coordinator look at it whenever their waits time out (a fraction
 * of a second). Never blocks or fails. */
void sl_layout_fault_set(sl_layout *l, int err, const char *msg);

/* Forgets the recorded fault (a coordinator starting). Never blocks. */
void sl_layout_fault_clear(sl_layout *l);

/* The recorded fault's message, with its error in *err (may be NULL), or
 * NULL when there is none. Never blocks. */
const char *sl_layout_fault(const sl_layout *l, int *err);

/* Pointer to a copy of unit u's span, for a pinned unit; NULL when the unit
 * streams. */
const void *sl_layout_pinned_unit(const sl_layout *l, uint32_t u);

/* Unit u's ranges (u < n_units + n_expert_units, asserted); the count in
 * *n. Valid while the layout is. */
const sl_layout_range *sl_layout_unit_ranges(const sl_layout *l, uint32_t u, uint32_t *n);

/* Reads unit u's image into dst (dst_size bytes, 4 KiB-aligned) with the
 * fetcher: one fetch per range from a GGUF file, one for the whole unit
 * from a packed model (whose shards store images). Returns 0 or the error
 * of sl_fetcher_fetch (logged there), or -SL_EINVAL (logged) when the image
 * does not fit. Blocks on the reads. */
int sl_layout_fetch_unit(const sl_layout *l, sl_fetcher *f, uint32_t u, void *dst, size_t dst_size);

/* ---- changing the plan at run time (the coordinator, between steps) ---- */

/* The slot arena sl_layout_create makes for plan p: the plan's ring when it
 * streams, else req->ring_depth slots of the largest unit (so that any
 * later plan can stream any unit). Pure. */
void sl_layout_arena(const sl_plan *p, const sl_plan_req *req, uint32_t *n_slots, uint64_t *slot_bytes);

/* Reserves the memory plan np uses beyond the plan in effect: the pinned
 * ranges of units np pins that are not pinned now, and ring slots np uses
 * that are not used now. np must fit this layout (pins only units with
 * pin_room at their pin_offset; ring_slots and slot_bytes within the
 * arena): SL_ASSERTed. The caller then fills the newly pinned ranges before
 * sl_layout_set_plan. Returns 0 or -SL_ENOMEM / -SL_EIO (logged; what was
 * reserved stays reserved until sl_layout_release_unused). Blocks while the
 * kernel allocates. */
int sl_layout_reserve_plan(sl_layout *l, const sl_plan *np);

/* Makes np, made for `budget`, the plan in effect: writes the mutable
 * fields of the plan region and increments plan_gen. Only between steps (no
 * step posted and unfinished). Never fails. */
void sl_layout_set_plan(sl_layout *l, const sl_plan *np, uint64_t budget);

/* Puts the ring in order for the plan in effect, as at the start of a step:
 * slot i < ring_slots asks for streamed[i % n_streamed] (unless it holds or
 * awaits it already), the other slots are emptied. A slot being filled
 * refuses until its loader is done, so call again until it returns true.
 * Between steps only. */
bool sl_layout_ring_settle(sl_layout *l);

/* Gives back the memory the plan in effect does not use: the ranges of
 * units with pin_room that are not pinned, the slots past ring_slots, and
 * the part of each used slot past the largest streamed unit. After
 * sl_layout_ring_settle returned true, between steps. Returns 0 or the
 * first error of sl_seg_release (logged). */
int sl_layout_release_unused(sl_layout *l);

/* Bytes of shared memory the pipeline's segments occupy now (allocated
 * pages, sl_seg_allocated): the measured footprint of weights, ring, KV
 * cache and activations (plus the small ctl segment). Does not block. */
uint64_t sl_layout_allocated(const sl_layout *l);

#endif
