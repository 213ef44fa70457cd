/* The expert cache; see expcache.h for the policy and the region. */
#include "compute/expcache.h"

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "model/model.h"

#define N_COUNTERS 16
#define FLAG_PREFETCHED 1u
#define NO_SLOT UINT32_MAX
#define WANT_TRIES 8 /* a slot can change under us (a loader claims it): look again */

typedef struct ec_header {
    uint32_t magic, version, n_units, n_expert, unit0, halflife, prefetch, reserved;
    _Atomic uint64_t clock;
    uint64_t zero[3];
} ec_header;

typedef struct ec_unit {
    double key;
    uint32_t slot;
    uint32_t flags;
} ec_unit;

_Static_assert(sizeof(ec_header) == 64, "expert cache header layout");
_Static_assert(sizeof(ec_unit) == 16, "expert cache unit layout");
_Static_assert(sizeof(sl_expcache_stats) / 8 <= N_COUNTERS, "counters");

enum { C_STEPS, C_TOKENS, C_USED, C_HITS, C_PF_HITS, C_MISSES, C_PREFETCHED, C_PF_WASTED, C_BYTES, C_WAIT };

struct sl_expcache {
    ec_header *hdr;
    _Atomic uint64_t *cnt;
    ec_unit *units;
    sl_slots *slots;
    uint32_t n_slots;
    uint64_t *unit_bytes; /* n_units */
    /* The layer being computed: its needed experts, and which are taken. */
    uint32_t layer;
    uint32_t n_pending;
    uint32_t *pending; /* expert indices, n_expert room */
    uint8_t *needed;   /* n_expert: needed and not taken yet */
};

uint64_t sl_expcache_size(uint32_t n_units)
{
    return sizeof(ec_header) + N_COUNTERS * 8ull + (uint64_t)n_units * sizeof(ec_unit);
}

int sl_expcache_format(void *region, uint64_t size, const sl_expcache_params *p)
{
    const uint64_t n_units = (uint64_t)p->n_layer * p->n_expert;
    if (!n_units || p->unit0 == 0 || p->unit0 + n_units - 1 > SL_SLOTS_MAX_UNIT || size < sl_expcache_size((uint32_t)n_units)) {
        SL_ERROR("cannot format an expert cache for %u x %u experts from unit %u in %llu bytes", p->n_layer,
                 p->n_expert, p->unit0, (unsigned long long)size);
        return -SL_EINVAL;
    }
    ec_header *h = region;
    memset(h, 0, sizeof *h);
    h->magic = SL_EXPCACHE_MAGIC;
    h->version = SL_EXPCACHE_VERSION;
    h->n_units = (uint32_t)n_units;
    h->n_expert = p->n_expert;
    h->unit0 = p->unit0;
    h->halflife = p->halflife;
    h->prefetch = p->prefetch;
    memset(h + 1, 0, N_COUNTERS * 8);
    ec_unit *u = (ec_unit *)((uint8_t *)(h + 1) + N_COUNTERS * 8);
    for (uint64_t i = 0; i < n_units; i++)
        u[i] = (ec_unit){-INFINITY, NO_SLOT, 0};
    return 0;
}

int sl_expcache_open(void *region, uint64_t size, sl_slots *slots, const uint64_t *unit_bytes, sl_expcache **out)
{
    *out = NULL;
    ec_header *h = region;
    if (size < sizeof *h || h->magic != SL_EXPCACHE_MAGIC) {
        SL_ERROR("the expert cache region (%llu bytes) has no expert cache header", (unsigned long long)size);
        return -SL_EFORMAT;
    }
    if (h->version != SL_EXPCACHE_VERSION) {
        SL_ERROR("expert cache layout version %u; this build reads version %u", h->version, SL_EXPCACHE_VERSION);
        return -SL_EVERSION;
    }
    if (!h->n_units || !h->n_expert || h->n_units % h->n_expert || h->n_expert > SL_MAX_EXPERTS ||
        size < sl_expcache_size(h->n_units)) {
        SL_ERROR("expert cache region: %u units of %u experts in %llu bytes", h->n_units, h->n_expert,
                 (unsigned long long)size);
        return -SL_EFORMAT;
    }
    sl_expcache *c = calloc(1, sizeof *c);
    if (c) {
        c->unit_bytes = malloc(h->n_units * sizeof *c->unit_bytes);
        c->pending = malloc(h->n_expert * sizeof *c->pending);
        c->needed = calloc(h->n_expert, 1);
    }
    if (!c || !c->unit_bytes || !c->pending || !c->needed) {
        sl_expcache_close(c);
        return -SL_ENOMEM;
    }
    c->hdr = h;
    c->cnt = (_Atomic uint64_t *)(h + 1);
    c->units = (ec_unit *)((uint8_t *)(h + 1) + N_COUNTERS * 8);
    c->slots = slots;
    c->n_slots = sl_slots_count(slots);
    memcpy(c->unit_bytes, unit_bytes, h->n_units * sizeof *c->unit_bytes);
    *out = c;
    return 0;
}

void sl_expcache_close(sl_expcache *c)
{
    if (!c)
        return;
    free(c->unit_bytes);
    free(c->pending);
    free(c->needed);
    free(c);
}

void sl_expcache_stats_get(const sl_expcache *c, sl_expcache_stats *out)
{
    uint64_t v[sizeof *out / 8];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        v[i] = atomic_load_explicit(&c->cnt[i], memory_order_relaxed);
    memcpy(out, v, sizeof *out);
}

bool sl_expcache_prefetching(const sl_expcache *c)
{
    return c->hdr->prefetch != 0;
}

uint32_t sl_expcache_halflife(const sl_expcache *c)
{
    return c->hdr->halflife;
}

static void count(sl_expcache *c, int which, uint64_t v)
{
    atomic_fetch_add_explicit(&c->cnt[which], v, memory_order_relaxed);
}

void sl_expcache_add_wait(sl_expcache *c, uint64_t ns)
{
    count(c, C_WAIT, ns);
}

void sl_expcache_step(sl_expcache *c, uint32_t n_tokens)
{
    atomic_fetch_add_explicit(&c->hdr->clock, 1, memory_order_relaxed);
    count(c, C_STEPS, 1);
    count(c, C_TOKENS, n_tokens);
}

/* ---- policy ------------------------------------------------------------- */

static double now_steps(const sl_expcache *c)
{
    return (double)atomic_load_explicit(&c->hdr->clock, memory_order_relaxed);
}

/* The key unit u would have if used now (see expcache.h). */
static double key_if_used(const sl_expcache *c, uint32_t u)
{
    const double t = now_steps(c);
    if (c->hdr->halflife == 0)
        return t;
    const double h = c->hdr->halflife, key = c->units[u].key;
    const double score = (isinf(key) ? 0.0 : exp2(key - t / h)) + 1.0;
    return log2(score) + t / h;
}

/* The slot holding unit u (being loaded or ready), or NO_SLOT. */
static uint32_t locate(sl_expcache *c, uint32_t u)
{
    const uint32_t want = c->hdr->unit0 + u;
    uint32_t h = c->units[u].slot;
    if (h < c->n_slots) {
        sl_slot_view v = sl_slots_view(c->slots, h);
        if (v.state != SL_SLOT_FREE && v.unit == want)
            return h;
    }
    for (uint32_t i = 0; i < c->n_slots; i++) {
        sl_slot_view v = sl_slots_view(c->slots, i);
        if (v.state != SL_SLOT_FREE && v.unit == want) {
            c->units[u].slot = i;
            return i;
        }
    }
    return NO_SLOT;
}

/* Whether a slot's expert unit may be evicted now: not one the current
 * layer still needs. */
static bool protected_unit(const sl_expcache *c, uint32_t u)
{
    return u / c->hdr->n_expert == c->layer && c->needed[u % c->hdr->n_expert];
}

/* The slot to reuse: a free one, else an unclaimed load nobody needs now,
 * else the ready, unheld slot whose expert is worth least, below `limit`.
 * NO_SLOT when there is none. */
static uint32_t victim(const sl_expcache *c, double limit)
{
    uint32_t best = NO_SLOT;
    double best_key = limit;
    for (uint32_t i = 0; i < c->n_slots; i++) {
        sl_slot_view v = sl_slots_view(c->slots, i);
        if (v.state == SL_SLOT_FREE)
            return i;
        if (v.state == SL_SLOT_FILLING || (v.state == SL_SLOT_READY && v.holders))
            continue;
        const uint32_t u = v.unit - c->hdr->unit0;
        if (v.unit < c->hdr->unit0 || u >= c->hdr->n_units || protected_unit(c, u))
            continue;
        /* An unclaimed load of something not needed now: a wrong guess. */
        const double key = v.state == SL_SLOT_WANTED ? -INFINITY : c->units[u].key;
        if (key < best_key) {
            best = i;
            best_key = key;
        }
    }
    return best;
}

/* Asks for unit u in a victim slot worth less than `limit`. Returns false
 * when no slot can be had now. */
static bool load(sl_expcache *c, uint32_t u, double limit, bool prefetch)
{
    for (int tries = 0; tries < WANT_TRIES; tries++) {
        const uint32_t slot = victim(c, limit);
        if (slot == NO_SLOT)
            return false;
        sl_slot_view old = sl_slots_view(c->slots, slot);
        if (sl_slots_want(c->slots, slot, c->hdr->unit0 + u, NULL) != SL_SLOTS_OK)
            continue; /* it changed under us */
        if (old.state != SL_SLOT_FREE) {
            const uint32_t ou = old.unit - c->hdr->unit0;
            if (old.unit >= c->hdr->unit0 && ou < c->hdr->n_units) {
                if (old.state == SL_SLOT_WANTED) /* that load is called off */
                    atomic_fetch_sub_explicit(&c->cnt[C_BYTES], c->unit_bytes[ou], memory_order_relaxed);
                if (c->units[ou].flags & FLAG_PREFETCHED)
                    count(c, C_PF_WASTED, 1);
                c->units[ou].flags &= ~FLAG_PREFETCHED;
            }
        }
        c->units[u].slot = slot;
        c->units[u].flags = prefetch ? FLAG_PREFETCHED : 0;
        if (prefetch)
            count(c, C_PREFETCHED, 1);
        count(c, C_BYTES, c->unit_bytes[u]);
        return true;
    }
    return false;
}

void sl_expcache_need(sl_expcache *c, uint32_t layer, const uint32_t *counts)
{
    const uint32_t E = c->hdr->n_expert;
    SL_ASSERT(layer < c->hdr->n_units / E);
    c->layer = layer;
    c->n_pending = 0;
    memset(c->needed, 0, E);
    for (uint32_t e = 0; e < E; e++)
        if (counts[e]) {
            c->needed[e] = 1;
            c->pending[c->n_pending++] = e;
        }
    count(c, C_USED, c->n_pending);
    /* Count first, then record the uses (so that an expert needed now is
     * worth more than any it could evict), then ask for the missing. */
    uint32_t missing[SL_MAX_EXPERTS], n_missing = 0;
    for (uint32_t i = 0; i < c->n_pending; i++) {
        const uint32_t u = layer * E + c->pending[i];
        const uint32_t slot = locate(c, u);
        if (slot != NO_SLOT && (c->units[u].flags & FLAG_PREFETCHED))
            count(c, C_PF_HITS, 1);
        else if (slot != NO_SLOT && sl_slots_view(c->slots, slot).state == SL_SLOT_READY)
            count(c, C_HITS, 1);
        else if (slot != NO_SLOT)
            count(c, C_MISSES, 1); /* already being loaded, by an earlier step's ask */
        else
            missing[n_missing++] = u;
        c->units[u].flags &= ~FLAG_PREFETCHED;
        c->units[u].key = key_if_used(c, u);
    }
    count(c, C_MISSES, n_missing);
    for (uint32_t i = 0; i < n_missing; i++)
        load(c, missing[i], INFINITY, false); /* what does not fit now, take asks for later */
}

int sl_expcache_take(sl_expcache *c, uint32_t holder, uint32_t *expert, uint32_t *slot)
{
    const uint32_t E = c->hdr->n_expert;
    SL_ASSERT(c->n_pending > 0);
    for (uint32_t i = 0; i < c->n_pending; i++) {
        const uint32_t e = c->pending[i], u = c->layer * E + e;
        const uint32_t s = locate(c, u);
        if (s == NO_SLOT || sl_slots_try_acquire_at(c->slots, holder, s, c->hdr->unit0 + u, NULL) != SL_SLOTS_OK)
            continue;
        c->pending[i] = c->pending[--c->n_pending];
        c->needed[e] = 0;
        *expert = e;
        *slot = s;
        return SL_SLOTS_OK;
    }
    /* Nothing ready: ask for what could not be asked for before. */
    for (uint32_t i = 0; i < c->n_pending; i++) {
        const uint32_t u = c->layer * E + c->pending[i];
        if (locate(c, u) == NO_SLOT)
            load(c, u, INFINITY, false);
    }
    return SL_SLOTS_NONE;
}

void sl_expcache_release(sl_expcache *c, uint32_t holder, uint32_t slot)
{
    sl_slots_release(c->slots, holder, slot);
}

void sl_expcache_prefetch(sl_expcache *c, uint32_t layer, const uint8_t *want)
{
    const uint32_t E = c->hdr->n_expert;
    SL_ASSERT(layer < c->hdr->n_units / E);
    /* Between layers nothing is needed: only the guesses are kept from
     * evicting one another (each is asked for before the next is placed). */
    c->n_pending = 0;
    memset(c->needed, 0, E);
    c->layer = layer;
    for (uint32_t e = 0; e < E; e++)
        c->needed[e] = want[e] != 0;
    for (uint32_t e = 0; e < E; e++) {
        if (!want[e])
            continue;
        const uint32_t u = layer * E + e;
        if (locate(c, u) == NO_SLOT)
            load(c, u, key_if_used(c, u), true);
    }
    memset(c->needed, 0, E);
}
