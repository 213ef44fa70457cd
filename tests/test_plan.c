/* The memory planner: every plan fits its budget, partitions the units into
 * pinned and streamed, and more budget never streams more bytes. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/plan.h"
#include "tests/testutil.h"

static void check_invariants(const sl_model *m, const sl_plan_req *req, const sl_plan *p, const char *what)
{
    const sl_hparams *hp = sl_model_hparams(m);
    CHECK(p->n_units == hp->n_layer + 1, "%s: unit count", what);
    CHECK(p->total_bytes <= req->budget, "%s: total %llu over budget %llu", what,
          (unsigned long long)p->total_bytes, (unsigned long long)req->budget);
    uint64_t pinned = 0, streamed = 0, model = 0, biggest_streamed = 0;
    uint32_t n_streamed = 0;
    for (uint32_t i = 0; i < p->n_units; i++) {
        const sl_plan_unit *u = &p->units[i];
        const sl_unit *mu = i < hp->n_layer ? sl_model_layer_unit(m, i) : sl_model_head_unit(m);
        CHECK(u->offset == mu->offset && u->nbytes == mu->nbytes, "%s: unit %u span", what, i);
        CHECK(u->io_offset % SL_PLAN_IO_ALIGN == 0 && u->io_bytes % SL_PLAN_IO_ALIGN == 0 &&
                  u->io_offset <= u->offset && u->io_offset + u->io_bytes >= u->offset + u->nbytes,
              "%s: unit %u io range", what, i);
        model += u->nbytes;
        if (u->pinned) {
            CHECK(u->pin_offset == pinned, "%s: unit %u pinned at %llu, expected %llu", what, i,
                  (unsigned long long)u->pin_offset, (unsigned long long)pinned);
            pinned += u->io_bytes;
        } else {
            n_streamed++;
            streamed += u->nbytes;
            biggest_streamed = u->io_bytes > biggest_streamed ? u->io_bytes : biggest_streamed;
        }
    }
    CHECK(pinned == p->pinned_bytes && streamed == p->streamed_bytes && model == p->model_bytes,
          "%s: byte totals", what);
    CHECK(n_streamed == p->n_streamed && p->slot_bytes == biggest_streamed, "%s: ring sizing", what);
    CHECK(n_streamed ? p->ring_slots == req->ring_depth : p->ring_slots == 0, "%s: ring slots %u", what,
          p->ring_slots);
    CHECK(p->total_bytes == p->pinned_bytes + p->ring_slots * p->slot_bytes + p->kv_bytes + p->act_bytes,
          "%s: total", what);
}

/* The smallest budget that streams, by brute force: for some slot size s,
 * the fixed parts, `depth` slots of s and every unit larger than s pinned. */
static uint64_t min_budget(const sl_plan *p, uint64_t fixed, uint32_t depth)
{
    uint64_t min = UINT64_MAX;
    for (uint32_t k = 0; k < p->n_units; k++) {
        uint64_t s = p->units[k].io_bytes, need = fixed + depth * s;
        for (uint32_t i = 0; i < p->n_units; i++)
            need += p->units[i].io_bytes > s ? p->units[i].io_bytes : 0;
        min = need < min ? need : min;
    }
    return min;
}

static void check_model(const char *name)
{
    char path[512], rel[128];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    sl_model *m = NULL;
    if (sl_model_open(sl_testdata_path(path, sizeof path, rel), &m)) {
        CHECK(0, "open %s", name);
        return;
    }
    const sl_hparams *hp = sl_model_hparams(m);
    sl_plan_req req = {.budget = 1ull << 40, .n_ctx = 256, .n_batch = 64, .max_sessions = 2, .n_threads = 2,
                       .ring_depth = 2};
    sl_plan p;
    CHECK(sl_plan_make(m, &req, &p) == 0, "%s: huge budget", name);
    check_invariants(m, &req, &p, name);
    CHECK(p.n_streamed == 0 && p.streamed_bytes == 0, "%s: a huge budget pins everything", name);
    uint64_t everything = p.total_bytes, fixed = p.kv_bytes + p.act_bytes;
    CHECK(p.kv_bytes == sl_plan_kv_bytes(hp, &req) && p.kv_bytes >= (uint64_t)hp->n_layer * 256 * 2 * 2 * 4,
          "%s: kv size", name);
    uint64_t min = min_budget(&p, fixed, 2), min3 = min_budget(&p, fixed, 3);
    sl_plan_free(&p);

    req.budget = min;
    CHECK(sl_plan_make(m, &req, &p) == 0, "%s: minimum budget accepted", name);
    check_invariants(m, &req, &p, name);
    CHECK(p.n_streamed > 0, "%s: the minimum budget streams", name);
    sl_plan_free(&p);
    req.budget = min - 1;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_plan_make(m, &req, &p) == -SL_ERANGE, "%s: below the minimum refused", name);
    sl_log_set_level(SL_LOG_WARN);

    /* Sweep: every plan valid, streamed bytes never grow with the budget. */
    uint64_t prev = UINT64_MAX;
    for (uint64_t b = min, step = (everything - min) / 37 + 1; b <= everything + step; b += step) {
        req.budget = b < everything ? b : everything;
        if (sl_plan_make(m, &req, &p)) {
            CHECK(0, "%s: budget %llu refused", name, (unsigned long long)b);
            continue;
        }
        check_invariants(m, &req, &p, name);
        CHECK(p.streamed_bytes <= prev, "%s: budget %llu streams %llu > %llu with less", name,
              (unsigned long long)b, (unsigned long long)p.streamed_bytes, (unsigned long long)prev);
        prev = p.streamed_bytes;
        sl_plan_free(&p);
    }
    CHECK(prev == 0, "%s: the sweep ends with everything pinned", name);

    /* Deeper rings cost slots. */
    req.budget = min3;
    req.ring_depth = 3;
    CHECK(sl_plan_make(m, &req, &p) == 0, "%s: ring depth 3", name);
    if (min3 < everything)
        CHECK(p.ring_slots == 3 && p.n_streamed > 0, "%s: ring depth 3 streams with 3 slots", name);
    else /* three slots cost more than pinning it all */
        CHECK(p.ring_slots == 0 && p.n_streamed == 0, "%s: ring depth 3 pins everything", name);
    sl_plan_free(&p);
    req.ring_depth = 1;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_plan_make(m, &req, &p) == -SL_EINVAL, "%s: ring depth 1 refused", name);
    sl_log_set_level(SL_LOG_WARN);
    sl_model_close(m);
}

/* A re-plan for budget b from base (arena of `slots` slots of slot_bytes):
 * fits, pins only what base pins, where base put it, streams only what
 * fits a slot, and its ring is within the arena. */
static void check_rebudget_plan(const sl_plan *base, const sl_plan *p, uint64_t b, uint32_t slots,
                                uint64_t slot_bytes, const char *what)
{
    CHECK(p->total_bytes <= b, "%s: total %llu over %llu", what, (unsigned long long)p->total_bytes,
          (unsigned long long)b);
    uint64_t pinned = 0, largest = 0;
    uint32_t n_streamed = 0;
    for (uint32_t i = 0; i < p->n_units; i++) {
        const sl_plan_unit *u = &p->units[i];
        if (u->pinned) {
            CHECK(base->units[i].pinned && u->pin_offset == base->units[i].pin_offset, "%s: unit %u pinned anew",
                  what, i);
            pinned += u->io_bytes;
        } else {
            CHECK(u->io_bytes <= slot_bytes, "%s: unit %u over the arena's slots", what, i);
            largest = u->io_bytes > largest ? u->io_bytes : largest;
            n_streamed++;
        }
    }
    CHECK(pinned == p->pinned_bytes && n_streamed == p->n_streamed && largest == p->slot_bytes, "%s: totals", what);
    CHECK(n_streamed ? p->ring_slots >= 2 && p->ring_slots <= slots : p->ring_slots == 0, "%s: %u ring slots", what,
          p->ring_slots);
    CHECK(p->kv_bytes == base->kv_bytes && p->act_bytes == base->act_bytes &&
              p->total_bytes == p->pinned_bytes + p->ring_slots * p->slot_bytes + p->kv_bytes + p->act_bytes,
          "%s: total", what);
}

/* Run-time budget changes (sl_plan_rebudget): from everything pinned, any
 * budget down to the minimum; from a streaming plan, only its pinned units. */
static void check_rebudget(const char *name)
{
    char path[512], rel[128];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    sl_model *m = NULL;
    if (sl_model_open(sl_testdata_path(path, sizeof path, rel), &m)) {
        CHECK(0, "open %s", name);
        return;
    }
    sl_plan_req req = {.budget = 1ull << 40, .n_ctx = 256, .n_batch = 64, .max_sessions = 2, .n_threads = 2,
                       .ring_depth = 3};
    sl_plan base, p;
    CHECK(sl_plan_make(m, &req, &base) == 0 && base.n_streamed == 0, "%s: all pinned", name);
    uint64_t largest = 0, fixed = base.kv_bytes + base.act_bytes, everything = base.total_bytes;
    for (uint32_t i = 0; i < base.n_units; i++)
        largest = base.units[i].io_bytes > largest ? base.units[i].io_bytes : largest;
    const uint64_t want_min = min_budget(&base, fixed, 2);
    uint64_t min = 0, min2 = 0;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_plan_rebudget(&base, want_min - 1, 3, largest, &p, &min) == -SL_ERANGE && min == want_min,
          "%s: below the minimum refused, minimum %llu (expected %llu)", name, (unsigned long long)min,
          (unsigned long long)want_min);
    sl_log_set_level(SL_LOG_WARN);
    /* Streamed bytes never grow with the budget while the ring keeps its
     * depth (a deeper ring, once it fits, may cost pins: depth first). */
    uint64_t prev = UINT64_MAX;
    uint32_t prev_slots = 0;
    for (uint64_t b = want_min, step = (everything - want_min) / 29 + 1; b <= everything + step; b += step) {
        uint64_t bb = b < everything ? b : everything;
        if (sl_plan_rebudget(&base, bb, 3, largest, &p, &min2)) {
            CHECK(0, "%s: budget %llu refused", name, (unsigned long long)bb);
            continue;
        }
        check_rebudget_plan(&base, &p, bb, 3, largest, name);
        CHECK(min2 == want_min && (p.streamed_bytes <= prev || p.ring_slots > prev_slots),
              "%s: budget %llu streams more with more", name, (unsigned long long)bb);
        CHECK(p.ring_slots >= prev_slots || p.ring_slots == 0, "%s: budget %llu has a shallower ring", name,
              (unsigned long long)bb);
        if (bb == want_min && min_budget(&base, fixed, 3) > want_min)
            CHECK(p.ring_slots == 2, "%s: at the two-slot minimum the ring gives up its third slot", name);
        if (bb >= everything)
            CHECK(p.n_streamed == 0 && p.ring_slots == 0, "%s: everything pinned again", name);
        prev = p.streamed_bytes;
        prev_slots = p.ring_slots;
        sl_plan_free(&p);
    }

    /* From a plan that streams: the units it streams have no room to be
     * pinned, and its own budget gives at least its own pins back. */
    sl_plan mid;
    req.ring_depth = 2;
    req.budget = want_min + (everything - want_min) / 2;
    CHECK(sl_plan_make(m, &req, &mid) == 0 && mid.n_streamed > 0, "%s: a streaming base", name);
    CHECK(sl_plan_rebudget(&mid, everything, 2, mid.slot_bytes, &p, &min2) == 0, "%s: grow a streaming plan", name);
    check_rebudget_plan(&mid, &p, everything, 2, mid.slot_bytes, name);
    CHECK(p.n_streamed == mid.n_streamed && p.pinned_bytes == mid.pinned_bytes,
          "%s: growing past the base pins no more than the base", name);
    sl_plan_free(&p);
    CHECK(sl_plan_rebudget(&mid, req.budget, 2, mid.slot_bytes, &p, &min2) == 0 &&
              p.pinned_bytes >= mid.pinned_bytes,
          "%s: the base's own budget", name);
    sl_plan_free(&p);
    sl_plan_free(&mid);
    sl_plan_free(&base);
    sl_model_close(m);
}

/* A mixture of experts: the layers (without their experts) are planned as
 * for a dense model, from their images; the experts get an expert cache of
 * at least SL_PLAN_MIN_EXPERT_SLOTS slots, grown with the budget left over,
 * up to a slot per expert. */
static void check_moe(const char *name)
{
    char path[512], rel[128];
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    sl_model *m = NULL;
    if (sl_model_open(sl_testdata_path(path, sizeof path, rel), &m)) {
        CHECK(0, "open %s", name);
        return;
    }
    const sl_hparams *hp = sl_model_hparams(m);
    const uint32_t n_experts = hp->n_layer * hp->n_expert;
    uint64_t largest = 0, all = 0, layers = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        layers += sl_model_layer_unit(m, il)->nbytes;
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            sl_unit u;
            sl_model_expert_unit(m, il, e, &u);
            largest = u.image_bytes > largest ? u.image_bytes : largest;
            all += u.nbytes;
        }
    }
    sl_plan_req req = {.budget = 1ull << 40, .n_ctx = 64, .n_batch = 16, .max_sessions = 1, .n_threads = 2,
                       .ring_depth = 2};
    sl_plan p;
    CHECK(sl_plan_make(m, &req, &p) == 0, "%s: huge budget", name);
    CHECK(p.n_expert_units == n_experts && p.expert_slots == n_experts && p.expert_bytes == all,
          "%s: %u expert units, %u slots, %llu bytes", name, p.n_expert_units, p.expert_slots,
          (unsigned long long)p.expert_bytes);
    CHECK(p.expert_slot_bytes == (largest + 4095) / 4096 * 4096 &&
              p.expert_cache_bytes == (uint64_t)p.expert_slots * p.expert_slot_bytes,
          "%s: expert slot sizing", name);
    CHECK(p.model_bytes == layers + sl_model_head_unit(m)->nbytes && p.n_streamed == 0, "%s: layers pinned", name);
    for (uint32_t i = 0; i < p.n_units; i++) {
        const sl_unit *u = i < hp->n_layer ? sl_model_layer_unit(m, i) : sl_model_head_unit(m);
        CHECK(p.units[i].io_bytes == u->image_bytes, "%s: unit %u io bytes are its image's", name, i);
    }
    CHECK(p.total_bytes == p.pinned_bytes + p.kv_bytes + p.act_bytes + p.expert_cache_bytes, "%s: total", name);
    const uint64_t everything = p.total_bytes;
    sl_plan_free(&p);

    /* The smallest budget, by bisection: it has the minimum expert cache. */
    uint64_t lo = 1, hi = everything;
    sl_log_set_level(SL_LOG_OFF);
    while (lo < hi) {
        req.budget = lo + (hi - lo) / 2;
        if (sl_plan_make(m, &req, &p) == 0) {
            hi = req.budget;
            sl_plan_free(&p);
        } else {
            lo = req.budget + 1;
        }
    }
    sl_log_set_level(SL_LOG_WARN);
    req.budget = lo;
    CHECK(sl_plan_make(m, &req, &p) == 0 && p.expert_slots == SL_PLAN_MIN_EXPERT_SLOTS && p.n_streamed > 0,
          "%s: the minimum budget streams the layers and has %u expert slots", name, p.expert_slots);
    sl_plan_free(&p);
    uint32_t prev_slots = 0;
    uint64_t prev_streamed = UINT64_MAX;
    for (uint64_t b0 = lo, step = (everything - lo) / 41 + 1; b0 <= everything + step; b0 += step) {
        const uint64_t b = b0 < everything ? b0 : everything;
        req.budget = b;
        if (sl_plan_make(m, &req, &p)) {
            CHECK(0, "%s: budget %llu refused", name, (unsigned long long)b);
            continue;
        }
        CHECK(p.total_bytes <= b && p.expert_slots >= prev_slots && p.streamed_bytes <= prev_streamed,
              "%s: budget %llu: %u slots, %llu streamed", name, (unsigned long long)b, p.expert_slots,
              (unsigned long long)p.streamed_bytes);
        /* Layers first: the cache grows past its minimum only when no
         * streamed layer would fit in what it takes. */
        if (p.expert_slots > SL_PLAN_MIN_EXPERT_SLOTS)
            for (uint32_t i = 0; i < p.n_units; i++)
                CHECK(p.units[i].pinned || p.units[i].io_bytes > b - (p.total_bytes - p.expert_cache_bytes) -
                                                                     SL_PLAN_MIN_EXPERT_SLOTS * p.expert_slot_bytes,
                      "%s: budget %llu caches experts while unit %u streams", name, (unsigned long long)b, i);
        prev_slots = p.expert_slots;
        prev_streamed = p.streamed_bytes;
        sl_plan_free(&p);
    }
    CHECK(prev_slots == n_experts, "%s: the sweep ends with a slot for every expert", name);
    sl_model_close(m);
}

static void check_sizes(void)
{
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {{"4096", 4096}, {"512K", 512ull << 10}, {"64M", 64ull << 20}, {"2G", 2ull << 30},
              {"1.5G", 3ull << 29}, {"64MiB", 64ull << 20}, {"1t", 1ull << 40}, {"10k", 10240}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 0;
        CHECK(sl_plan_parse_size(ok[i].s, &v) == 0 && v == ok[i].v, "size %s -> %llu", ok[i].s,
              (unsigned long long)v);
    }
    static const char *bad[] = {"", "M", "-1M", "0", "12X", "1e30G", "nan", "5 M", "2GG"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        CHECK(sl_plan_parse_size(bad[i], &v) == -SL_EINVAL, "size '%s' refused", bad[i]);
    }
}

int main(void)
{
    check_sizes();
    check_model("stories260K");
    check_model("tiny-llama-q4_k_m");
    check_model("tiny-qwen2-q4_k_m");
    check_rebudget("stories260K");
    check_rebudget("tiny-llama-q4_k_m");
    check_rebudget("tiny-qwen2-q4_k_m");
    check_moe("tiny-moe-q8_0");
    return sl_test_finish();
}
