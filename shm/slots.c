/* The slot arena; see slots.h for the state machine and the layouts.
 *
 * Every transition is: load the word, decide from its decoding whether the
 * transition is allowed, compute the new word, compare-and-swap. A failed
 * swap means another process changed the slot; the decision is made again
 * on the fresh word, never on the old one. */
#include "shm/slots.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/log.h"
#include "shm/futex.h"
#include "shm/proc.h"

typedef struct arena_header {
    uint64_t magic;
    uint32_t version;
    uint32_t n_slots;
    uint64_t slot_size;
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    _Atomic uint64_t tickets;
    uint64_t reserved[3];
} arena_header;

typedef struct slot_rec {
    _Atomic uint64_t word;
    _Atomic uint64_t ticket;
    _Atomic uint64_t claim_ns;
    _Atomic uint64_t fill_ns;
    _Atomic uint64_t fills;
    uint64_t reserved[3];
} slot_rec;

_Static_assert(sizeof(arena_header) == 64, "arena header layout");
_Static_assert(offsetof(arena_header, seq) == 24 && offsetof(arena_header, tickets) == 32,
               "arena header layout");
_Static_assert(sizeof(slot_rec) == 64, "slot record layout: one cache line each");
_Static_assert(offsetof(slot_rec, fills) == 32, "slot record layout");

#define ST_SHIFT 62
#define GEN_SHIFT 40
#define UNIT_SHIFT 20
#define LOW_MASK 0xfffffu

struct sl_slots {
    arena_header *hdr;
    arena_header *wake; /* whose seq and waiters changes bump and waits sleep on: hdr, or a shared one */
    slot_rec *rec;
    uint8_t *data;
    uint32_t n;
    uint64_t slot_size;
};

static uint64_t mk(enum sl_slot_state st, uint32_t gen, uint32_t unit, uint32_t low)
{
    return ((uint64_t)st << ST_SHIFT) | ((uint64_t)(gen & SL_SLOTS_GEN_MASK) << GEN_SHIFT) |
           ((uint64_t)(unit & SL_SLOTS_MAX_UNIT) << UNIT_SHIFT) | (uint64_t)(low & LOW_MASK);
}

sl_slot_view sl_slots_decode(uint64_t w)
{
    sl_slot_view v = {
        .state = (enum sl_slot_state)(w >> ST_SHIFT),
        .gen = (uint32_t)(w >> GEN_SHIFT) & SL_SLOTS_GEN_MASK,
        .unit = (uint32_t)(w >> UNIT_SHIFT) & SL_SLOTS_MAX_UNIT,
    };
    uint32_t low = (uint32_t)w & LOW_MASK;
    if (v.state == SL_SLOT_FILLING)
        v.loader = low;
    else if (v.state == SL_SLOT_READY)
        v.holders = low;
    return v;
}

static uint32_t next_gen(uint32_t gen) { return (gen + 1) & SL_SLOTS_GEN_MASK; }

uint64_t sl_slots_ctl_size(uint32_t n_slots) { return sizeof(arena_header) + (uint64_t)n_slots * sizeof(slot_rec); }

uint64_t sl_slots_round(uint64_t unit_bytes)
{
    return (unit_bytes + SL_SLOTS_ALIGN - 1) / SL_SLOTS_ALIGN * SL_SLOTS_ALIGN;
}

int sl_slots_format(void *ctl, uint64_t ctl_size, uint32_t n_slots, uint64_t slot_size)
{
    if (n_slots == 0 || n_slots > SL_SLOTS_MAX) {
        SL_ERROR("%u slots (allowed 1..%u)", n_slots, SL_SLOTS_MAX);
        return -SL_EINVAL;
    }
    if (slot_size == 0 || slot_size % SL_SLOTS_ALIGN) {
        SL_ERROR("slot size %llu is not a positive multiple of %u", (unsigned long long)slot_size, SL_SLOTS_ALIGN);
        return -SL_EINVAL;
    }
    if (ctl_size < sl_slots_ctl_size(n_slots)) {
        SL_ERROR("control region of %llu bytes; %u slots need %llu", (unsigned long long)ctl_size, n_slots,
                 (unsigned long long)sl_slots_ctl_size(n_slots));
        return -SL_EINVAL;
    }
    arena_header *h = ctl;
    h->magic = SL_SLOTS_MAGIC;
    h->version = SL_SLOTS_VERSION;
    h->n_slots = n_slots;
    h->slot_size = slot_size;
    atomic_store_explicit(&h->seq, 0, memory_order_relaxed);
    atomic_store_explicit(&h->waiters, 0, memory_order_relaxed);
    atomic_store_explicit(&h->tickets, 0, memory_order_relaxed);
    slot_rec *r = (slot_rec *)(h + 1);
    for (uint32_t i = 0; i < n_slots; i++)
        atomic_store_explicit(&r[i].word, mk(SL_SLOT_FREE, 0, 0, 0), memory_order_relaxed);
    return 0;
}

int sl_slots_open(void *ctl, uint64_t ctl_size, void *data, uint64_t data_size, sl_slots **out)
{
    *out = NULL;
    if (ctl_size < sizeof(arena_header)) {
        SL_ERROR("slot control region of %llu bytes is smaller than its header", (unsigned long long)ctl_size);
        return -SL_EFORMAT;
    }
    arena_header *h = ctl;
    if (h->magic != SL_SLOTS_MAGIC) {
        SL_ERROR("slot control region has magic 0x%016llx, expected 0x%016llx", (unsigned long long)h->magic,
                 (unsigned long long)SL_SLOTS_MAGIC);
        return -SL_EFORMAT;
    }
    if (h->version != SL_SLOTS_VERSION) {
        SL_ERROR("slot arena layout version %u; this build reads version %u", h->version, SL_SLOTS_VERSION);
        return -SL_EVERSION;
    }
    const uint32_t n = h->n_slots;
    const uint64_t size = h->slot_size;
    if (n == 0 || n > SL_SLOTS_MAX || ctl_size < sl_slots_ctl_size(n)) {
        SL_ERROR("slot control region: %u slots in %llu bytes (allowed 1..%u, needing %llu bytes)", n,
                 (unsigned long long)ctl_size, SL_SLOTS_MAX, (unsigned long long)sl_slots_ctl_size(n));
        return -SL_EFORMAT;
    }
    if (size == 0 || size % SL_SLOTS_ALIGN || size > data_size / n) {
        SL_ERROR("%u slots of %llu bytes do not fit a data region of %llu bytes at %u-byte alignment", n,
                 (unsigned long long)size, (unsigned long long)data_size, SL_SLOTS_ALIGN);
        return -SL_EFORMAT;
    }
    if ((uintptr_t)data % SL_SLOTS_ALIGN) {
        SL_ERROR("slot data region at %p is not %u-byte aligned", data, SL_SLOTS_ALIGN);
        return -SL_EFORMAT;
    }
    sl_slots *a = malloc(sizeof *a);
    if (!a) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    a->hdr = h;
    a->wake = h;
    a->rec = (slot_rec *)(h + 1);
    a->data = data;
    a->n = n;
    a->slot_size = size;
    *out = a;
    return 0;
}

void sl_slots_close(sl_slots *a) { free(a); }

uint32_t sl_slots_count(const sl_slots *a) { return a->n; }
uint64_t sl_slots_slot_size(const sl_slots *a) { return a->slot_size; }

void *sl_slots_data(const sl_slots *a, uint32_t slot)
{
    SL_ASSERT(slot < a->n);
    return a->data + (uint64_t)slot * a->slot_size;
}

static slot_rec *rec(const sl_slots *a, uint32_t slot)
{
    SL_ASSERT(slot < a->n);
    return &a->rec[slot];
}

uint64_t sl_slots_word(const sl_slots *a, uint32_t slot)
{
    return atomic_load_explicit(&rec(a, slot)->word, memory_order_acquire);
}

sl_slot_view sl_slots_view(const sl_slots *a, uint32_t slot) { return sl_slots_decode(sl_slots_word(a, slot)); }

void sl_slots_stats(const sl_slots *a, uint32_t slot, uint64_t *fills, uint64_t *last_fill_ns)
{
    slot_rec *r = rec(a, slot);
    if (fills)
        *fills = atomic_load_explicit(&r->fills, memory_order_relaxed);
    if (last_fill_ns)
        *last_fill_ns = atomic_load_explicit(&r->fill_ns, memory_order_relaxed);
}

/* After a transition: count it and wake sleepers. Sequentially consistent
 * on both sides (here and in wait_change) so that either the waker sees
 * the sleeper's waiters increment, or the sleeper's futex wait sees the new
 * seq: a wake-up is never lost between the two. */
static void changed(sl_slots *a)
{
    atomic_fetch_add_explicit(&a->wake->seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&a->wake->waiters, memory_order_seq_cst) != 0)
        sl_futex_wake(&a->wake->seq, INT32_MAX);
}

static bool cas(slot_rec *r, uint64_t *expect, uint64_t desired)
{
    return atomic_compare_exchange_strong_explicit(&r->word, expect, desired, memory_order_acq_rel,
                                                   memory_order_acquire);
}

int sl_slots_want(sl_slots *a, uint32_t slot, uint32_t unit, uint32_t *gen)
{
    slot_rec *r = rec(a, slot);
    if (unit > SL_SLOTS_MAX_UNIT) {
        SL_ERROR("unit %u is above the largest a slot word holds (%u)", unit, SL_SLOTS_MAX_UNIT);
        return -SL_ERANGE;
    }
    uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
    for (;;) {
        sl_slot_view v = sl_slots_decode(w);
        bool ok = v.state == SL_SLOT_FREE || v.state == SL_SLOT_WANTED ||
                  (v.state == SL_SLOT_READY && v.holders == 0);
        if (!ok)
            return SL_SLOTS_REFUSED;
        uint32_t g = next_gen(v.gen);
        /* The ticket goes in before the word turns WANTED, so a loader that
         * sees the word sees this want's place in line. */
        uint64_t t = atomic_fetch_add_explicit(&a->hdr->tickets, 1, memory_order_relaxed);
        atomic_store_explicit(&r->ticket, t, memory_order_relaxed);
        if (cas(r, &w, mk(SL_SLOT_WANTED, g, unit, 0))) {
            if (gen)
                *gen = g;
            changed(a);
            return SL_SLOTS_OK;
        }
    }
}

int sl_slots_evict(sl_slots *a, uint32_t slot)
{
    slot_rec *r = rec(a, slot);
    uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
    for (;;) {
        sl_slot_view v = sl_slots_decode(w);
        if (!(v.state == SL_SLOT_WANTED || (v.state == SL_SLOT_READY && v.holders == 0)))
            return SL_SLOTS_REFUSED;
        if (cas(r, &w, mk(SL_SLOT_FREE, next_gen(v.gen), 0, 0))) {
            changed(a);
            return SL_SLOTS_OK;
        }
    }
}

int sl_slots_claim_fill(sl_slots *a, uint32_t loader, uint32_t *slot, uint32_t *unit, uint32_t *gen)
{
    SL_ASSERT(loader <= SL_SLOTS_MAX_OWNER);
    for (;;) {
        uint32_t best = a->n;
        uint64_t best_ticket = UINT64_MAX, best_w = 0;
        for (uint32_t i = 0; i < a->n; i++) {
            uint64_t w = atomic_load_explicit(&a->rec[i].word, memory_order_acquire);
            if ((enum sl_slot_state)(w >> ST_SHIFT) != SL_SLOT_WANTED)
                continue;
            uint64_t t = atomic_load_explicit(&a->rec[i].ticket, memory_order_relaxed);
            if (t < best_ticket) {
                best = i;
                best_ticket = t;
                best_w = w;
            }
        }
        if (best == a->n)
            return SL_SLOTS_NONE;
        sl_slot_view v = sl_slots_decode(best_w);
        slot_rec *r = &a->rec[best];
        if (cas(r, &best_w, mk(SL_SLOT_FILLING, v.gen, v.unit, loader))) {
            atomic_store_explicit(&r->claim_ns, sl_proc_clock_ns(), memory_order_relaxed);
            *slot = best;
            *unit = v.unit;
            *gen = v.gen;
            changed(a);
            return SL_SLOTS_OK;
        }
        /* Another loader took it (or the scheduler changed it): look again. */
    }
}

/* The word of a valid claim (slot FILLING by loader at gen), or 0 when the
 * claim is no longer valid. FILLING words are never 0. */
static uint64_t claim_word(slot_rec *r, uint32_t loader, uint32_t gen)
{
    uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
    sl_slot_view v = sl_slots_decode(w);
    if (v.state != SL_SLOT_FILLING || v.loader != loader || v.gen != (gen & SL_SLOTS_GEN_MASK))
        return 0;
    return w;
}

int sl_slots_fill_check(const sl_slots *a, uint32_t slot, uint32_t loader, uint32_t gen)
{
    return claim_word(rec(a, slot), loader, gen) ? SL_SLOTS_OK : SL_SLOTS_REFUSED;
}

int sl_slots_fill_done(sl_slots *a, uint32_t slot, uint32_t loader, uint32_t gen)
{
    slot_rec *r = rec(a, slot);
    uint64_t w = claim_word(r, loader, gen);
    if (!w)
        return SL_SLOTS_REFUSED;
    sl_slot_view v = sl_slots_decode(w);
    /* The word fixes state, loader, unit and gen: if anything changed since
     * the check, the swap fails and the fill is discarded. */
    if (!cas(r, &w, mk(SL_SLOT_READY, v.gen, v.unit, 0)))
        return SL_SLOTS_REFUSED;
    uint64_t now = sl_proc_clock_ns();
    uint64_t began = atomic_load_explicit(&r->claim_ns, memory_order_relaxed);
    atomic_store_explicit(&r->fill_ns, now > began ? now - began : 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->fills, 1, memory_order_relaxed);
    changed(a);
    return SL_SLOTS_OK;
}

int sl_slots_fill_fail(sl_slots *a, uint32_t slot, uint32_t loader, uint32_t gen)
{
    slot_rec *r = rec(a, slot);
    uint64_t w = claim_word(r, loader, gen);
    if (!w)
        return SL_SLOTS_REFUSED;
    sl_slot_view v = sl_slots_decode(w);
    if (!cas(r, &w, mk(SL_SLOT_WANTED, next_gen(v.gen), v.unit, 0)))
        return SL_SLOTS_REFUSED;
    changed(a);
    return SL_SLOTS_OK;
}

int sl_slots_try_acquire(sl_slots *a, uint32_t holder, uint32_t unit, uint32_t *slot, uint32_t *gen)
{
    SL_ASSERT(holder < SL_SLOTS_MAX_HOLDERS);
    const uint32_t bit = 1u << holder;
    for (;;) {
        bool raced = false;
        for (uint32_t i = 0; i < a->n && !raced; i++) {
            slot_rec *r = &a->rec[i];
            uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
            sl_slot_view v = sl_slots_decode(w);
            if (v.state != SL_SLOT_READY || v.unit != unit)
                continue;
            if (v.holders & bit)
                return SL_SLOTS_REFUSED;
            if (cas(r, &w, w | bit)) {
                *slot = i;
                if (gen)
                    *gen = v.gen;
                changed(a);
                return SL_SLOTS_OK;
            }
            raced = true; /* the slot changed under us: scan again */
        }
        if (!raced)
            return SL_SLOTS_NONE;
    }
}

int sl_slots_try_acquire_at(sl_slots *a, uint32_t holder, uint32_t slot, uint32_t unit, uint32_t *gen)
{
    SL_ASSERT(holder < SL_SLOTS_MAX_HOLDERS);
    const uint32_t bit = 1u << holder;
    slot_rec *r = rec(a, slot);
    uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
    for (;;) {
        sl_slot_view v = sl_slots_decode(w);
        if (v.state != SL_SLOT_READY || v.unit != unit)
            return SL_SLOTS_NONE;
        if (v.holders & bit)
            return SL_SLOTS_REFUSED;
        if (cas(r, &w, w | bit)) {
            if (gen)
                *gen = v.gen;
            changed(a);
            return SL_SLOTS_OK;
        }
    }
}

int sl_slots_acquire(sl_slots *a, uint32_t holder, uint32_t unit, int64_t timeout_ns, uint32_t *slot,
                     uint32_t *gen)
{
    const uint64_t start = sl_proc_clock_ns();
    for (;;) {
        uint32_t seen = sl_slots_seq(a);
        int r = sl_slots_try_acquire(a, holder, unit, slot, gen);
        if (r != SL_SLOTS_NONE)
            return r;
        int64_t left = -1;
        if (timeout_ns >= 0) {
            uint64_t spent = sl_proc_clock_ns() - start;
            if (spent >= (uint64_t)timeout_ns)
                return SL_SLOTS_TIMEOUT;
            left = timeout_ns - (int64_t)spent;
        }
        sl_slots_wait_change(a, seen, left);
    }
}

int sl_slots_release(sl_slots *a, uint32_t holder, uint32_t slot)
{
    SL_ASSERT(holder < SL_SLOTS_MAX_HOLDERS);
    const uint32_t bit = 1u << holder;
    slot_rec *r = rec(a, slot);
    uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
    for (;;) {
        sl_slot_view v = sl_slots_decode(w);
        if (v.state != SL_SLOT_READY || !(v.holders & bit))
            return SL_SLOTS_REFUSED;
        if (cas(r, &w, w & ~(uint64_t)bit)) {
            changed(a);
            return SL_SLOTS_OK;
        }
    }
}

int sl_slots_reclaim(sl_slots *a, sl_slots_alive_fn alive, void *ctx)
{
    int done = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        slot_rec *r = &a->rec[i];
        uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
        for (;;) {
            sl_slot_view v = sl_slots_decode(w);
            uint64_t nw;
            if (v.state == SL_SLOT_FILLING && !alive(ctx, SL_SLOTS_LOADER, v.loader)) {
                nw = mk(SL_SLOT_WANTED, next_gen(v.gen), v.unit, 0);
            } else if (v.state == SL_SLOT_READY && v.holders) {
                uint32_t dead = 0;
                for (uint32_t h = 0; h < SL_SLOTS_MAX_HOLDERS; h++)
                    if ((v.holders >> h & 1u) && !alive(ctx, SL_SLOTS_HOLDER, h))
                        dead |= 1u << h;
                if (!dead)
                    break;
                nw = w & ~(uint64_t)dead;
            } else {
                break;
            }
            if (cas(r, &w, nw)) {
                if (v.state == SL_SLOT_FILLING)
                    SL_INFO("slot %u: unit %u was being filled by dead loader %u; wanted again (gen %u)", i,
                            v.unit, v.loader, next_gen(v.gen));
                done++;
                break;
            }
            /* Changed meanwhile: judge the new word. */
        }
    }
    if (done)
        changed(a);
    return done;
}

/* Liveness for a reclaim aimed at one owner: everyone else counts as alive. */
typedef struct one_dead {
    enum sl_slots_owner kind;
    uint32_t id;
} one_dead;

static bool all_but_one(void *ctx, enum sl_slots_owner kind, uint32_t id)
{
    const one_dead *d = ctx;
    return !(kind == d->kind && id == d->id);
}

int sl_slots_reclaim_loader(sl_slots *a, uint32_t loader)
{
    one_dead d = {SL_SLOTS_LOADER, loader};
    return sl_slots_reclaim(a, all_but_one, &d);
}

int sl_slots_reclaim_holder(sl_slots *a, uint32_t holder)
{
    SL_ASSERT(holder < SL_SLOTS_MAX_HOLDERS);
    one_dead d = {SL_SLOTS_HOLDER, holder};
    return sl_slots_reclaim(a, all_but_one, &d);
}

uint32_t sl_slots_seq(const sl_slots *a)
{
    return atomic_load_explicit(&a->wake->seq, memory_order_acquire);
}

int sl_slots_wait_change(sl_slots *a, uint32_t seen, int64_t timeout_ns)
{
    const uint64_t start = sl_proc_clock_ns();
    for (;;) {
        if (atomic_load_explicit(&a->wake->seq, memory_order_seq_cst) != seen)
            return SL_SLOTS_OK;
        int64_t left = -1;
        if (timeout_ns >= 0) {
            uint64_t spent = sl_proc_clock_ns() - start;
            if (spent >= (uint64_t)timeout_ns)
                return SL_SLOTS_TIMEOUT;
            left = timeout_ns - (int64_t)spent;
        }
        /* A waiter that dies asleep leaves the count one too high: wakers
         * then make a futile wake call, which costs a syscall, nothing else. */
        atomic_fetch_add_explicit(&a->wake->waiters, 1, memory_order_seq_cst);
        sl_futex_wait(&a->wake->seq, seen, left);
        atomic_fetch_sub_explicit(&a->wake->waiters, 1, memory_order_seq_cst);
    }
}

void sl_slots_share_wakeups(sl_slots *a, const sl_slots *with)
{
    a->wake = with->hdr;
}
