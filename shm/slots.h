/* The slot arena: a fixed array of equal slots in shared memory, each
 * filled with one unit of weights (a layer or an expert) by a loader and
 * read by compute workers (DESIGN.md §2–3).
 *
 * Two regions, typically in two segments: the slots' data (n slots of
 * slot_size bytes, slot_size a multiple of 4 KiB, each slot 4 KiB aligned
 * so that O_DIRECT reads land straight in it) and a control region (in the
 * ctl segment) with one 64-bit state word per slot. Every change of a slot
 * is one compare-and-swap on its word, so each process sees a slot in
 * exactly one state and any process can die between two changes.
 *
 * States and who moves a slot between them:
 *
 *   FREE(gen) --want--> WANTED(unit, gen+1)                    scheduler
 *   WANTED(unit, g) --claim_fill--> FILLING(loader, unit, g)   a loader
 *   FILLING(loader, unit, g) --fill_done--> READY(unit, g, {})   that loader
 *   FILLING(loader, unit, g) --fill_fail--> WANTED(unit, g+1)    that loader
 *   FILLING(loader, ...) --reclaim, loader dead--> WANTED(unit, g+1)
 *   READY(unit, g, H) --acquire by h--> READY(unit, g, H+{h})  a worker: IN_USE
 *   READY(unit, g, H) --release by h--> READY(unit, g, H-{h})  that worker
 *   READY(.., H) --reclaim, h in H dead--> READY(.., H-{h})
 *   READY(unit, g, {}) --want--> WANTED(unit', g+1)            scheduler
 *   READY(.., {}) or WANTED --evict--> FREE(g+1)               scheduler
 *   WANTED(unit, g) --want--> WANTED(unit', g+1)               scheduler
 *
 * IN_USE(refcount) of DESIGN.md is READY with a non-empty holder set; the
 * refcount is the number of holders. When the last holder releases, the
 * slot is READY again and its unit stays usable (a pinned unit is simply
 * never evicted); the scheduler decides when to reuse it.
 *
 * The generation changes on every want, fill_fail, evict and loader
 * reclaim. A loader's claim is (slot, generation): when it was reclaimed
 * (its owner declared dead), its fill_done fails and its work is discarded.
 * The generation guards the state word only; a process must be really dead
 * (killed, not just silent) before its slot is reclaimed, because a paused
 * process that resumed could still write the slot's bytes (proctab.h kills
 * hung processes before their slots are reclaimed). A loader can call
 * sl_slots_fill_check between reads to stop early once reclaimed.
 *
 * State word layout (bit 63 first):
 *   63..62  state    0 FREE, 1 WANTED, 2 FILLING, 3 READY
 *   61..40  gen      22 bits, wraps
 *   39..20  unit     20 bits (0 in FREE)
 *   19..0   owner    FILLING: the loader's owner id (20 bits);
 *                    READY: holder mask, bit h set while holder h (a
 *                    worker's role id, < SL_SLOTS_MAX_HOLDERS) holds a
 *                    reference; FREE, WANTED: 0
 * Holders are a mask, not a count, so that the references of a dead worker
 * can be dropped exactly: the reference and its owner change in the same
 * compare-and-swap, and a crash between two steps cannot leak one.
 *
 * Control region layout (native byte order):
 *   header, 64 bytes:
 *     0  u64 magic      SL_SLOTS_MAGIC
 *     8  u32 version    SL_SLOTS_VERSION
 *    12  u32 n_slots    1..SL_SLOTS_MAX
 *    16  u64 slot_size  bytes per slot, a multiple of SL_SLOTS_ALIGN
 *    24  u32 seq        change counter: +1 on every transition (futex word)
 *    28  u32 waiters    processes sleeping on seq (wake only when > 0)
 *    32  u64 tickets    counter handing out want tickets
 *    40  24 bytes zero
 *   then n_slots records of 64 bytes:
 *     0  u64 word       the state word above
 *     8  u64 ticket     order of the slot's last want: loaders take the
 *                       oldest WANTED slot first
 *    16  u64 claim_ns   CLOCK_MONOTONIC when the current fill was claimed
 *    24  u64 fill_ns    duration of the last completed fill
 *    32  u64 fills      completed fills
 *    40  24 bytes zero
 *
 * Wake-ups: every transition adds 1 to seq and, when someone sleeps, wakes
 * all sleepers (futex.h). A waiter reads seq, checks what it waits for,
 * and sleeps while seq is unchanged (sl_slots_wait_change), so no change
 * between its check and its sleep is missed.
 *
 * Results: transitions return SL_SLOTS_OK or, without changing anything and
 * without logging, SL_SLOTS_REFUSED (the slot is not in a state that allows
 * the transition, or its generation, unit or owner differs: the caller's
 * view is outdated, e.g. it was reclaimed), SL_SLOTS_NONE (no slot matched)
 * or SL_SLOTS_TIMEOUT. These are outcomes of normal races, not errors. A
 * slot index out of range, or an owner id out of its range, is a bug
 * (SL_ASSERT).
 *
 * Memory ordering: transitions are compare-and-swaps with acquire-release
 * ordering, so a loader's writes into a slot happen before a worker that
 * acquired it reads them, and a worker's reads happen before the slot is
 * handed to the next loader.
 *
 * Every function may be called concurrently by any attached process or
 * thread. Only sl_slots_acquire and sl_slots_wait_change block. Nothing
 * allocates after sl_slots_open. */
#ifndef SL_SHM_SLOTS_H
#define SL_SHM_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#define SL_SLOTS_MAGIC 0x3153544f4c534c53ull /* "SLSLOTS1" in memory */
#define SL_SLOTS_VERSION 1u
#define SL_SLOTS_ALIGN 4096u
#define SL_SLOTS_MAX 65536u
#define SL_SLOTS_MAX_HOLDERS 20u
#define SL_SLOTS_MAX_UNIT 0xfffffu
#define SL_SLOTS_MAX_OWNER 0xfffffu
#define SL_SLOTS_GEN_MASK 0x3fffffu

enum sl_slot_state { SL_SLOT_FREE = 0, SL_SLOT_WANTED = 1, SL_SLOT_FILLING = 2, SL_SLOT_READY = 3 };

/* Outcomes of transitions (not errors; never logged). */
enum { SL_SLOTS_OK = 0, SL_SLOTS_REFUSED = 1, SL_SLOTS_NONE = 2, SL_SLOTS_TIMEOUT = 3 };

/* A decoded state word. Fields that the state does not use are 0. */
typedef struct sl_slot_view {
    enum sl_slot_state state;
    uint32_t gen;
    uint32_t unit;
    uint32_t loader;  /* FILLING: the loader's owner id */
    uint32_t holders; /* READY: holder mask */
} sl_slot_view;

/* Whose liveness sl_slots_reclaim asks about. */
enum sl_slots_owner { SL_SLOTS_LOADER = 0, SL_SLOTS_HOLDER = 1 };
typedef bool (*sl_slots_alive_fn)(void *ctx, enum sl_slots_owner kind, uint32_t id);

typedef struct sl_slots sl_slots;

/* Bytes of the control region for n_slots slots. */
uint64_t sl_slots_ctl_size(uint32_t n_slots);

/* unit_bytes rounded up to SL_SLOTS_ALIGN: the slot size for units of at
 * most that many bytes. */
uint64_t sl_slots_round(uint64_t unit_bytes);

/* Writes an arena of n_slots FREE slots of slot_size bytes into the control
 * region (ctl_size bytes, zero-filled). Returns 0, or -SL_EINVAL (logged)
 * when n_slots is 0 or above SL_SLOTS_MAX, slot_size is 0 or not a multiple
 * of SL_SLOTS_ALIGN, or the region is too small. For the creator, before
 * the segment is published. */
int sl_slots_format(void *ctl, uint64_t ctl_size, uint32_t n_slots, uint64_t slot_size);

/* Validates the control region against itself and the data region (at
 * least n_slots * slot_size bytes, SL_SLOTS_ALIGN-aligned) and returns a
 * handle in *out. Failures (logged, *out NULL): -SL_EFORMAT (sizes, magic,
 * alignment), -SL_EVERSION (other version), -SL_ENOMEM. The caller owns
 * the handle (sl_slots_close); the regions must outlive it. */
int sl_slots_open(void *ctl, uint64_t ctl_size, void *data, uint64_t data_size, sl_slots **out);

/* Frees the handle (not the regions). NULL is accepted. */
void sl_slots_close(sl_slots *a);

uint32_t sl_slots_count(const sl_slots *a);
uint64_t sl_slots_slot_size(const sl_slots *a);

/* Start of slot `slot`'s bytes (SL_SLOTS_ALIGN-aligned). */
void *sl_slots_data(const sl_slots *a, uint32_t slot);

/* The slot's state word, loaded with acquire ordering, and its decoding. */
uint64_t sl_slots_word(const sl_slots *a, uint32_t slot);
sl_slot_view sl_slots_decode(uint64_t word);
sl_slot_view sl_slots_view(const sl_slots *a, uint32_t slot);

/* Completed fills of the slot and the duration of the last one (ns). */
void sl_slots_stats(const sl_slots *a, uint32_t slot, uint64_t *fills, uint64_t *last_fill_ns);

/* Scheduler: asks for `unit` in `slot`, which must be FREE, WANTED or READY
 * without holders; the slot becomes WANTED(unit, gen+1) and loaders are
 * woken. Stores the new generation in *gen (may be NULL). Returns OK or
 * REFUSED; -SL_ERANGE (logged) when unit > SL_SLOTS_MAX_UNIT. */
int sl_slots_want(sl_slots *a, uint32_t slot, uint32_t unit, uint32_t *gen);

/* Scheduler: empties a WANTED slot or a READY one without holders
 * (-> FREE, gen+1). Returns OK or REFUSED. */
int sl_slots_evict(sl_slots *a, uint32_t slot);

/* Loader `loader` (owner id <= SL_SLOTS_MAX_OWNER): takes the oldest WANTED
 * slot, which becomes FILLING(loader, unit, gen), and stores its index,
 * unit and generation. Returns OK, or NONE when no slot is WANTED. Does not
 * wait: sleep with sl_slots_wait_change and try again. */
int sl_slots_claim_fill(sl_slots *a, uint32_t loader, uint32_t *slot, uint32_t *unit, uint32_t *gen);

/* Loader: whether the slot is still FILLING under this claim. OK or
 * REFUSED (reclaimed: stop writing, discard). */
int sl_slots_fill_check(const sl_slots *a, uint32_t slot, uint32_t loader, uint32_t gen);

/* Loader: publishes a completed fill, FILLING(loader, unit, gen) ->
 * READY(unit, gen) (release: the slot's bytes are visible to whoever
 * acquires it). Returns OK, or REFUSED when the claim is no longer valid
 * (stale generation: the work is discarded). */
int sl_slots_fill_done(sl_slots *a, uint32_t slot, uint32_t loader, uint32_t gen);

/* Loader: gives a claimed unit back after a failure (e.g. a read error),
 * FILLING(loader, unit, gen) -> WANTED(unit, gen+1), for another try.
 * Returns OK or REFUSED. */
int sl_slots_fill_fail(sl_slots *a, uint32_t slot, uint32_t loader, uint32_t gen);

/* Worker `holder` (< SL_SLOTS_MAX_HOLDERS): takes a reference to a READY
 * slot holding `unit` and stores its index and generation. Returns OK;
 * NONE when no slot holds the unit READY; REFUSED when the holder already
 * has a reference to a slot of this unit (a holder takes one at a time).
 * Does not block. */
int sl_slots_try_acquire(sl_slots *a, uint32_t holder, uint32_t unit, uint32_t *slot, uint32_t *gen);

/* As sl_slots_try_acquire, for one slot: a reference to `slot` when it is
 * READY with `unit`. Returns OK; NONE when it is not; REFUSED when the
 * holder has a reference there already. Does not block. */
int sl_slots_try_acquire_at(sl_slots *a, uint32_t holder, uint32_t slot, uint32_t unit, uint32_t *gen);

/* As sl_slots_try_acquire, but sleeps until the unit is READY, for at most
 * timeout_ns (negative: no limit). Returns OK, REFUSED, or TIMEOUT. Blocks. */
int sl_slots_acquire(sl_slots *a, uint32_t holder, uint32_t unit, int64_t timeout_ns, uint32_t *slot,
                     uint32_t *gen);

/* Worker: drops holder's reference to slot. Returns OK, or REFUSED when the
 * holder has none there (e.g. it was dropped by reclaim). */
int sl_slots_release(sl_slots *a, uint32_t holder, uint32_t slot);

/* Recovery: for every slot FILLING by a loader for which alive(ctx,
 * SL_SLOTS_LOADER, id) is false, returns the slot to WANTED(unit, gen+1);
 * drops every reference whose holder is not alive(ctx, SL_SLOTS_HOLDER, h).
 * `alive` must answer "dead" only for processes that can no longer run
 * (see above). Returns the number of transitions made; wakes waiters. */
int sl_slots_reclaim(sl_slots *a, sl_slots_alive_fn alive, void *ctx);

/* Recovery aimed at one dead owner: the slots FILLING by `loader`, or the
 * references of `holder`. Return the number of transitions made. A worker
 * also calls sl_slots_reclaim_holder with its own id right after it
 * registers, before it acquires anything: references left under that id by
 * a previous holder that was never reaped cannot be its own. */
int sl_slots_reclaim_loader(sl_slots *a, uint32_t loader);
int sl_slots_reclaim_holder(sl_slots *a, uint32_t holder);

/* Makes `a` count its changes on, and wait on, `with`'s change counter
 * instead of its own, so that a process can sleep until either of two
 * arenas changes (a loader serving a ring and an expert cache). Every
 * process attached to both must do the same, before using them. Never
 * fails; `with` must outlive `a`. */
void sl_slots_share_wakeups(sl_slots *a, const sl_slots *with);

/* The change counter (acquire). Read it before checking the slots, then
 * pass it to sl_slots_wait_change. */
uint32_t sl_slots_seq(const sl_slots *a);

/* Sleeps until the change counter differs from `seen`, for at most
 * timeout_ns (negative: no limit). Returns OK (changed) or TIMEOUT. Blocks. */
int sl_slots_wait_change(sl_slots *a, uint32_t seen, int64_t timeout_ns);

#endif
