/* The shared-memory layout of a running pipeline: what the coordinator
 * creates, and what loaders and compute workers attach to.
 *
 * Segments of instance I (shm/segment.h names them /sluice-I-<kind>):
 *   ctl      regions "procs" (shm/proc table), "slots" (ring slot states,
 *            shm/slot.h), "plan" (sl_layout_plan + unit table), "board"
 *            (sl_layout_board + step tokens)
 *   weights  regions "pinned" (pinned units, each at its pin_offset) and
 *            "ring" (ring_slots slots of slot_bytes each)
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
 * All structures are native byte order and only shared between processes
 * of one machine and one build (kind_version guards the layout). */
#ifndef SL_COORDINATOR_LAYOUT_H
#define SL_COORDINATOR_LAYOUT_H

#include <stdatomic.h>
#include <stdint.h>

#define SL_LAYOUT_VERSION 1u /* kind_version of every pipeline segment */
#define SL_LAYOUT_PLAN_MAGIC 0x4e4c5053u  /* "SPLN" */
#define SL_LAYOUT_BOARD_MAGIC 0x44425053u /* "SPBD" */
#define SL_LAYOUT_PATH_MAX 1024u
#define SL_LAYOUT_MAX_SEQS 64u /* sessions in one step */

/* One unit of the plan (coordinator/plan.h sl_plan_unit, flattened). */
typedef struct sl_layout_unit {
    uint64_t offset;     /* file offset of the unit's span */
    uint64_t nbytes;     /* span length */
    uint64_t io_offset;  /* span widened to 4 KiB: start ... */
    uint64_t io_bytes;   /* ... and length (what a loader reads) */
    uint64_t pin_offset; /* pinned units: offset of the io range in "pinned" */
    uint32_t pinned;     /* 1 pinned, 0 streamed */
    uint32_t reserved;
} sl_layout_unit; /* 48 bytes */

/* The "plan" region: everything a loader or worker needs to know about the
 * model and the memory plan. Written once by the coordinator before it
 * publishes the ctl segment; read-only afterwards. */
typedef struct sl_layout_plan {
    uint32_t magic;          /* SL_LAYOUT_PLAN_MAGIC */
    uint32_t n_units;        /* n_layer + 1 */
    uint32_t n_streamed;     /* units with pinned == 0 */
    uint32_t ring_slots;     /* 0 when nothing streams */
    uint64_t slot_bytes;     /* size of each ring slot */
    uint64_t model_size;     /* size of the model file, to detect a swapped file */
    uint32_t n_ctx;          /* positions per session */
    uint32_t n_batch;        /* most tokens per step */
    uint32_t max_sessions;   /* KV caches in the kv segment */
    uint32_t n_threads;      /* compute threads the scratch is sized for */
    uint64_t kv_floats;      /* floats of one session's KV cache */
    uint32_t n_vocab;
    uint32_t n_embd;
    char model_path[SL_LAYOUT_PATH_MAX]; /* absolute path, NUL-terminated */
    uint32_t streamed[];     /* n_streamed unit indices in step order, then
                              * n_units sl_layout_unit (8-byte aligned, at
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
    sl_layout_seq seqs[SL_LAYOUT_MAX_SEQS];
    int32_t tokens[];              /* n_batch token ids */
} sl_layout_board;

/* The unit table that follows the streamed list in the plan region. */
static inline sl_layout_unit *sl_layout_units(sl_layout_plan *p)
{
    uintptr_t a = (uintptr_t)(p->streamed + p->n_streamed);
    return (sl_layout_unit *)((a + 7) & ~(uintptr_t)7);
}

/* Bytes of the plan region for n_units units, n_streamed of them streamed. */
static inline uint64_t sl_layout_plan_bytes(uint32_t n_units, uint32_t n_streamed)
{
    return ((sizeof(sl_layout_plan) + 4ull * n_streamed + 7) & ~7ull) + 48ull * n_units;
}

/* Bytes of the board region for steps of up to n_batch tokens. */
static inline uint64_t sl_layout_board_bytes(uint32_t n_batch)
{
    return sizeof(sl_layout_board) + 4ull * n_batch;
}

/* ---- creating and attaching ------------------------------------------- */

#include "coordinator/plan.h"
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
    sl_slots *slots;        /* NULL when nothing streams */
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

/* Unmaps (segments stay). NULL accepted. */
void sl_layout_close(sl_layout *l);

/* Unlinks the segments and unmaps (the owner's clean shutdown). NULL
 * accepted. */
void sl_layout_remove(sl_layout *l);

/* Pointer to a copy of unit u's span, for a pinned unit; NULL when the unit
 * streams. */
const void *sl_layout_pinned_unit(const sl_layout *l, uint32_t u);

#endif
