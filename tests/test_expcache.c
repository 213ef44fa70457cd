/* The expert cache (compute/expcache.h) over a slot arena in private
 * memory, with this test playing the loaders: hits and misses are counted,
 * the missing experts are asked for in free slots and then in the slots
 * worth least (by frequency with decay, or recency with half-life 0), an
 * expert still needed is never evicted, a cache smaller than a layer's
 * needs still delivers them all, and prefetching asks only for what is
 * worth more than what it evicts. Also the two slot-arena calls the cache
 * relies on: sl_slots_try_acquire_at and sl_slots_share_wakeups. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/expcache.h"
#include "tests/testutil.h"

#define LAYERS 2
#define EXPERTS 4
#define UNIT0 3 /* expert units follow 3 other units, as in a pipeline of 2 layers */
#define SLOT 4096u
#define HOLDER 1
#define LOADER 7

typedef struct arena {
    void *ctl, *data;
    sl_slots *s;
} arena;

static void arena_new(arena *a, uint32_t n)
{
    uint64_t csz = sl_slots_ctl_size(n);
    a->ctl = calloc(1, csz);
    a->data = aligned_alloc(SLOT, (size_t)n * SLOT);
    CHECK(sl_slots_format(a->ctl, csz, n, SLOT) == 0 && sl_slots_open(a->ctl, csz, a->data, (uint64_t)n * SLOT,
                                                                          &a->s) == 0,
          "arena of %u slots", n);
}

static void arena_free(arena *a)
{
    sl_slots_close(a->s);
    free(a->ctl);
    free(a->data);
}

/* Fills every WANTED slot, as loaders would. Returns how many. */
static int load_all(sl_slots *s)
{
    uint32_t slot, unit, gen;
    int n = 0;
    while (sl_slots_claim_fill(s, LOADER, &slot, &unit, &gen) == SL_SLOTS_OK) {
        CHECK(sl_slots_fill_done(s, slot, LOADER, gen) == SL_SLOTS_OK, "fill done");
        n++;
    }
    return n;
}

/* Whether some slot holds (READY or being loaded) expert e of layer il. */
static bool held(sl_slots *s, uint32_t il, uint32_t e)
{
    for (uint32_t i = 0; i < sl_slots_count(s); i++) {
        sl_slot_view v = sl_slots_view(s, i);
        if (v.state != SL_SLOT_FREE && v.unit == UNIT0 + il * EXPERTS + e)
            return true;
    }
    return false;
}

typedef struct cache {
    arena a;
    void *region;
    sl_expcache *c;
} cache;

static void cache_new(cache *k, uint32_t slots, uint32_t halflife)
{
    arena_new(&k->a, slots);
    uint64_t size = sl_expcache_size(LAYERS * EXPERTS);
    k->region = calloc(1, size);
    sl_expcache_params p = {LAYERS, EXPERTS, UNIT0, halflife, true};
    uint64_t bytes[LAYERS * EXPERTS];
    for (int i = 0; i < LAYERS * EXPERTS; i++)
        bytes[i] = 1000 + (uint64_t)i;
    CHECK(sl_expcache_format(k->region, size, &p) == 0, "format");
    CHECK(sl_expcache_open(k->region, size, k->a.s, bytes, &k->c) == 0 && sl_expcache_prefetching(k->c) &&
              sl_expcache_halflife(k->c) == halflife,
          "open");
}

static void cache_free(cache *k)
{
    sl_expcache_close(k->c);
    free(k->region);
    arena_free(&k->a);
}

/* One step using the listed experts of layer il (-1 ends the list): needs
 * them, loads what is asked for, takes and releases each. Returns the
 * experts taken, as a bit mask. */
static uint32_t step(cache *k, uint32_t il, const int *experts)
{
    uint32_t counts[EXPERTS] = {0}, want = 0, got = 0;
    for (const int *e = experts; *e >= 0; e++) {
        counts[*e]++;
        want |= 1u << *e;
    }
    sl_expcache_step(k->c, 1);
    sl_expcache_need(k->c, il, counts);
    for (int rounds = 0; got != want && rounds < 16; rounds++) {
        uint32_t e, slot;
        if (sl_expcache_take(k->c, HOLDER, &e, &slot) == SL_SLOTS_OK) {
            CHECK(!(got >> e & 1) && (want >> e & 1), "took expert %u once, and a needed one", e);
            got |= 1u << e;
            CHECK(sl_slots_view(k->a.s, slot).unit == UNIT0 + il * EXPERTS + e, "the slot holds it");
            sl_expcache_release(k->c, HOLDER, slot);
        } else {
            load_all(k->a.s);
        }
    }
    CHECK(got == want, "every needed expert delivered (%x of %x)", got, want);
    return got;
}

static void test_counts_and_frequency(void)
{
    cache k;
    cache_new(&k, 3, 1000); /* a long half-life: least frequently used */
    sl_expcache_stats st;
    step(&k, 0, (int[]){0, 1, -1});
    sl_expcache_stats_get(k.c, &st);
    CHECK(st.steps == 1 && st.tokens == 1 && st.used == 2 && st.misses == 2 && st.hits == 0 &&
              st.loaded_bytes == 2001,
          "first step: 2 misses (%llu), %llu bytes", (unsigned long long)st.misses,
          (unsigned long long)st.loaded_bytes);
    step(&k, 0, (int[]){0, 1, -1});
    step(&k, 0, (int[]){0, 2, -1}); /* 0 used 3 times, 1 twice, 2 once; 3 slots full */
    sl_expcache_stats_get(k.c, &st);
    CHECK(st.used == 6 && st.hits == 3 && st.misses == 3, "hits %llu misses %llu", (unsigned long long)st.hits,
          (unsigned long long)st.misses);
    /* Expert 3 evicts the least used one, expert 2. */
    step(&k, 0, (int[]){3, -1});
    CHECK(held(k.a.s, 0, 0) && held(k.a.s, 0, 1) && !held(k.a.s, 0, 2) && held(k.a.s, 0, 3),
          "frequency: the least used expert was evicted");
    cache_free(&k);

    cache_new(&k, 3, 0); /* least recently used */
    step(&k, 0, (int[]){0, -1});
    step(&k, 0, (int[]){0, -1});
    step(&k, 0, (int[]){0, -1});
    step(&k, 0, (int[]){1, -1});
    step(&k, 0, (int[]){2, -1});
    step(&k, 0, (int[]){3, -1});
    CHECK(!held(k.a.s, 0, 0) && held(k.a.s, 0, 1) && held(k.a.s, 0, 2) && held(k.a.s, 0, 3),
          "recency: the least recent expert was evicted, however often it was used");
    cache_free(&k);
}

static void test_small_cache_and_protection(void)
{
    /* Two slots, a layer that needs all four experts: delivered in waves,
     * never evicting one that is still to be taken. */
    cache k;
    cache_new(&k, 2, 64);
    CHECK(step(&k, 1, (int[]){0, 1, 2, 3, -1}) == 0xf, "4 experts through 2 slots");
    sl_expcache_stats st;
    sl_expcache_stats_get(k.c, &st);
    CHECK(st.misses == 4 && st.loaded_bytes == 1004 + 1005 + 1006 + 1007, "4 loads");
    cache_free(&k);
}

static void test_prefetch(void)
{
    cache k;
    cache_new(&k, 3, 1000);
    step(&k, 0, (int[]){0, 1, -1});
    step(&k, 0, (int[]){0, 1, -1});
    /* A guess for layer 1 fills the free slot... */
    uint8_t want[EXPERTS] = {0, 0, 1, 0};
    sl_expcache_prefetch(k.c, 1, want);
    CHECK(held(k.a.s, 1, 2), "the guess is asked for");
    load_all(k.a.s);
    step(&k, 1, (int[]){2, -1});
    step(&k, 1, (int[]){2, -1});
    sl_expcache_stats st;
    sl_expcache_stats_get(k.c, &st);
    CHECK(st.prefetched == 1 && st.prefetch_hits == 1 && st.prefetch_wasted == 0, "a useful prefetch");
    /* ...but a guess never evicts an expert worth more than it would be
     * once used: every slot holds one used twice. */
    uint8_t want2[EXPERTS] = {0, 0, 0, 1};
    sl_expcache_prefetch(k.c, 1, want2);
    CHECK(!held(k.a.s, 1, 3), "a guess does not evict a more valuable expert");
    /* A wrong guess evicted unused counts as wasted. */
    cache_free(&k);
    cache_new(&k, 2, 1000);
    uint8_t w3[EXPERTS] = {1, 1, 0, 0};
    sl_expcache_prefetch(k.c, 0, w3);
    load_all(k.a.s);
    step(&k, 0, (int[]){2, 3, -1});
    sl_expcache_stats_get(k.c, &st);
    CHECK(st.prefetched == 2 && st.prefetch_hits == 0 && st.prefetch_wasted == 2 && st.misses == 2,
          "two wrong guesses wasted (%llu)", (unsigned long long)st.prefetch_wasted);
    cache_free(&k);
}

static void test_format_and_arena(void)
{
    uint8_t region[256] = {0};
    sl_expcache_params p = {LAYERS, EXPERTS, UNIT0, 0, false};
    sl_expcache *c = NULL;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_expcache_format(region, sizeof region, &p) == -SL_EINVAL, "a region too small is refused");
    p.unit0 = 0;
    CHECK(sl_expcache_format(region, sizeof region, &p) == -SL_EINVAL, "unit 0 is not an expert");
    CHECK(sl_expcache_open(region, sizeof region, NULL, NULL, &c) == -SL_EFORMAT && !c, "unformatted region");
    sl_log_set_level(SL_LOG_WARN);

    /* A specific slot: only when it holds that unit READY, once per holder. */
    arena a, b;
    arena_new(&a, 2);
    arena_new(&b, 2);
    uint32_t gen;
    CHECK(sl_slots_want(a.s, 1, 9, NULL) == SL_SLOTS_OK, "want");
    CHECK(sl_slots_try_acquire_at(a.s, HOLDER, 1, 9, &gen) == SL_SLOTS_NONE, "not ready yet");
    load_all(a.s);
    CHECK(sl_slots_try_acquire_at(a.s, HOLDER, 1, 8, &gen) == SL_SLOTS_NONE, "another unit");
    CHECK(sl_slots_try_acquire_at(a.s, HOLDER, 0, 9, &gen) == SL_SLOTS_NONE, "another slot");
    CHECK(sl_slots_try_acquire_at(a.s, HOLDER, 1, 9, &gen) == SL_SLOTS_OK, "ready");
    CHECK(sl_slots_try_acquire_at(a.s, HOLDER, 1, 9, &gen) == SL_SLOTS_REFUSED, "held already");
    CHECK(sl_slots_view(a.s, 1).holders == 1u << HOLDER && sl_slots_release(a.s, HOLDER, 1) == SL_SLOTS_OK,
          "released");
    /* Shared wake-ups: a change of b is one of a's counter. */
    sl_slots_share_wakeups(b.s, a.s);
    uint32_t seen = sl_slots_seq(a.s);
    CHECK(sl_slots_want(b.s, 0, 5, NULL) == SL_SLOTS_OK && sl_slots_seq(a.s) != seen, "b's change counted on a");
    CHECK(sl_slots_wait_change(b.s, seen, 0) == SL_SLOTS_OK, "b waits on a's counter");
    arena_free(&b);
    arena_free(&a);
}

int main(void)
{
    test_counts_and_frequency();
    test_small_cache_and_protection();
    test_prefetch();
    test_format_and_arena();
    return sl_test_finish();
}
