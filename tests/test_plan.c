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
    return sl_test_finish();
}
