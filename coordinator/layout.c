/* Creating and attaching the pipeline's segments; see layout.h. */
#include "coordinator/layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"

enum { SEG_CTL, SEG_WEIGHTS, SEG_KV, SEG_ACT, SEG_COUNT };
static const char *const k_kinds[SEG_COUNT] = {"ctl", "weights", "kv", "act"};

static uint64_t at_least_page(uint64_t v) { return v ? v : SL_SEG_ALIGN; }

static void *region(sl_seg *s, const char *name, uint64_t *size)
{
    void *p = sl_seg_region_get(s, name, size);
    if (!p)
        SL_ERROR("segment %s has no region '%s'", sl_seg_info(s)->kind, name);
    return p;
}

/* The "ranges" region: checked through, since loaders read by it. */
static int bind_ranges(sl_layout *l)
{
    const sl_layout_plan *lp = l->plan;
    const uint64_t n_all = (uint64_t)lp->n_units + lp->n_expert_units;
    uint64_t size;
    const uint8_t *r = region(l->ctl, "ranges", &size);
    if (!r || n_all > SL_SLOTS_MAX_UNIT || size < sl_layout_ranges_bytes((uint32_t)n_all, lp->n_ranges)) {
        SL_ERROR("the ranges region does not fit %llu units and %llu ranges", (unsigned long long)n_all,
                 (unsigned long long)lp->n_ranges);
        return -SL_EFORMAT;
    }
    l->range_first = (const uint32_t *)r;
    l->ranges = (const sl_layout_range *)(r + ((4ull * (n_all + 1) + 7) & ~7ull));
    for (uint64_t u = 0; u < n_all; u++)
        if (l->range_first[u] >= l->range_first[u + 1] || l->range_first[u + 1] > lp->n_ranges) {
            SL_ERROR("unit %llu has no ranges, or ranges past the table", (unsigned long long)u);
            return -SL_EFORMAT;
        }
    return 0;
}

/* The expert arena and its cache state (a mixture-of-experts model). */
static int bind_experts(sl_layout *l)
{
    const sl_layout_plan *lp = l->plan;
    uint64_t ctl_sz, data_sz, ec_sz;
    void *ctl = region(l->ctl, "eslots", &ctl_sz), *ec = region(l->ctl, "expcache", &ec_sz);
    void *data = region(l->weights, "experts", &data_sz);
    if (!ctl || !ec || !data)
        return -SL_EFORMAT;
    int rc = sl_slots_open(ctl, ctl_sz, data, data_sz, &l->eslots);
    if (rc)
        return rc;
    sl_slots_share_wakeups(l->eslots, l->slots);
    uint64_t *bytes = malloc(lp->n_expert_units * sizeof *bytes);
    if (!bytes)
        return -SL_ENOMEM;
    for (uint32_t i = 0; i < lp->n_expert_units; i++) {
        uint32_t n;
        const sl_layout_range *r = sl_layout_unit_ranges(l, lp->n_units + i, &n);
        bytes[i] = 0;
        for (uint32_t k = 0; k < n; k++)
            bytes[i] += r[k].nbytes;
    }
    rc = sl_expcache_open(ec, ec_sz, l->eslots, bytes, &l->ecache);
    free(bytes);
    return rc;
}

/* Finds every region and opens the tables: shared by create and attach. */
static int bind_regions(sl_layout *l)
{
    uint64_t procs_sz, slots_sz, ring_sz, plan_sz, board_sz;
    void *procs = region(l->ctl, "procs", &procs_sz), *slots_ctl = region(l->ctl, "slots", &slots_sz);
    l->plan = region(l->ctl, "plan", &plan_sz);
    l->board = region(l->ctl, "board", &board_sz);
    l->pinned = region(l->weights, "pinned", NULL);
    void *ring = region(l->weights, "ring", &ring_sz);
    l->kv = region(l->kv_seg, "kv", NULL);
    l->x = region(l->act, "x", NULL);
    l->scratch = region(l->act, "scratch", NULL);
    l->logits = region(l->act, "logits", NULL);
    if (!procs || !slots_ctl || !l->plan || !l->board || !l->pinned || !ring || !l->kv || !l->x || !l->scratch ||
        !l->logits)
        return -SL_EFORMAT;
    if (l->plan->magic != SL_LAYOUT_PLAN_MAGIC || l->board->magic != SL_LAYOUT_BOARD_MAGIC ||
        plan_sz < sl_layout_plan_bytes(l->plan->n_units) || board_sz < sl_layout_board_bytes(l->plan->n_batch) ||
        l->plan->n_streamed > l->plan->n_units) {
        SL_ERROR("the plan or board region is not what this build writes");
        return -SL_EFORMAT;
    }
    int rc = sl_proctab_open(procs, procs_sz, &l->procs);
    if (rc == 0)
        rc = sl_slots_open(slots_ctl, slots_sz, ring, ring_sz, &l->slots);
    if (rc == 0 && l->plan->ring_slots > sl_slots_count(l->slots)) {
        SL_ERROR("the plan uses %u ring slots of an arena of %u", l->plan->ring_slots, sl_slots_count(l->slots));
        rc = -SL_EFORMAT;
    }
    if (rc == 0)
        rc = bind_ranges(l);
    if (rc == 0 && l->plan->n_expert_units)
        rc = bind_experts(l);
    return rc;
}

void sl_layout_arena(const sl_plan *p, const sl_plan_req *req, uint32_t *n_slots, uint64_t *slot_bytes)
{
    if (p->ring_slots) {
        *n_slots = p->ring_slots;
        *slot_bytes = p->slot_bytes;
        return;
    }
    uint64_t largest = 0;
    for (uint32_t i = 0; i < p->n_units; i++)
        largest = p->units[i].io_bytes > largest ? p->units[i].io_bytes : largest;
    *n_slots = req->ring_depth < 2 ? 2 : req->ring_depth;
    *slot_bytes = sl_slots_round(largest ? largest : 1);
}

/* Unit u of plan p (u < n_units + n_expert_units): a layer, the head or an
 * expert, described into *buf when it has to be computed. */
static const sl_unit *model_unit(const sl_model *m, const sl_plan *p, uint32_t u, sl_unit *buf)
{
    const uint32_t n_layer = p->n_units - 1;
    if (u < n_layer)
        return sl_model_layer_unit(m, u);
    if (u == n_layer)
        return sl_model_head_unit(m);
    const uint32_t i = u - p->n_units, E = sl_model_hparams(m)->n_expert;
    sl_model_expert_unit(m, i / E, i % E, buf);
    return buf;
}

/* Fills the "ranges" region from the model's units. */
static void write_ranges(sl_layout *l, const sl_model *m, const sl_plan *p, uint32_t n_all)
{
    uint8_t *r = sl_seg_region_get(l->ctl, "ranges", NULL);
    uint32_t *first = (uint32_t *)r;
    sl_layout_range *ranges = (sl_layout_range *)(r + ((4ull * (n_all + 1ull) + 7) & ~7ull));
    uint32_t k = 0;
    for (uint32_t u = 0; u < n_all; u++) {
        sl_unit buf;
        const sl_unit *mu = model_unit(m, p, u, &buf);
        first[u] = k;
        for (uint32_t i = 0; i < mu->n_ranges; i++, k++)
            ranges[k] = (sl_layout_range){mu->ranges[i].offset, mu->ranges[i].nbytes, mu->ranges[i].image_offset};
    }
    first[n_all] = k;
}

/* Writes the mutable part of the plan region from p. */
static void write_plan(sl_layout_plan *lp, const sl_plan *p, uint64_t budget)
{
    sl_layout_unit *units = sl_layout_units(lp);
    uint32_t k = 0;
    for (uint32_t i = 0; i < p->n_units; i++) {
        units[i].pinned = p->units[i].pinned;
        if (!p->units[i].pinned)
            lp->streamed[k++] = i;
    }
    lp->n_streamed = k;
    lp->ring_slots = k ? p->ring_slots : 0;
    lp->budget = budget;
    lp->pinned_bytes = p->pinned_bytes;
}

int sl_layout_create(const sl_layout_spec *sp, sl_layout **out)
{
    *out = NULL;
    const sl_plan *p = sp->plan;
    if (strlen(sp->model_path) >= SL_LAYOUT_PATH_MAX || p->n_units > SL_SLOTS_MAX_UNIT) {
        SL_ERROR("model path or unit count too large for the layout");
        return -SL_EINVAL;
    }
    int rc = sl_seg_clean(sp->instance, 0);
    if (rc < 0)
        return rc;
    rc = 0; /* it was the count of stale segments removed */
    const uint32_t n_all = p->n_units + p->n_expert_units;
    if (n_all > SL_SLOTS_MAX_UNIT || p->expert_slots > SL_SLOTS_MAX) {
        SL_ERROR("%u units and %u expert slots are too many for the layout", n_all, p->expert_slots);
        return -SL_EINVAL;
    }
    sl_layout *l = calloc(1, sizeof *l);
    if (!l)
        return -SL_ENOMEM;
    uint32_t n_slots;
    uint64_t slot_bytes;
    sl_layout_arena(p, sp->req, &n_slots, &slot_bytes);
    uint64_t n_ranges = 0;
    for (uint32_t u = 0; u < n_all; u++) {
        sl_unit mu;
        n_ranges += model_unit(sp->model, p, u, &mu)->n_ranges;
    }
    const bool moe = p->n_expert_units != 0;
    const sl_seg_region ctl[] = {
        {"procs", sl_proctab_size()},
        {"slots", sl_slots_ctl_size(n_slots)},
        {"plan", sl_layout_plan_bytes(p->n_units)},
        {"board", sl_layout_board_bytes(sp->req->n_batch)},
        {"ranges", sl_layout_ranges_bytes(n_all, n_ranges)},
        {"eslots", moe ? sl_slots_ctl_size(p->expert_slots) : 0},
        {"expcache", moe ? sl_expcache_size(p->n_expert_units) : 0},
    };
    const sl_seg_region weights[] = {
        {"pinned", at_least_page(p->pinned_bytes)},
        {"ring", (uint64_t)n_slots * slot_bytes},
        {"experts", p->expert_cache_bytes},
    };
    const sl_seg_region kv[] = {{"kv", p->kv_bytes}};
    const sl_seg_region act[] = {{"x", p->x_bytes}, {"scratch", p->scratch_bytes}, {"logits", p->logits_bytes}};
    const struct {
        const sl_seg_region *r;
        uint32_t n;
    } segs[SEG_COUNT] = {{ctl, moe ? 7 : 5}, {weights, moe ? 3 : 2}, {kv, 1}, {act, 3}};
    sl_seg **handles[SEG_COUNT] = {&l->ctl, &l->weights, &l->kv_seg, &l->act};
    for (int i = 0; i < SEG_COUNT && rc == 0; i++)
        rc = sl_seg_create(sp->instance, k_kinds[i], SL_LAYOUT_VERSION, segs[i].r, segs[i].n, sp->epoch, handles[i]);
    if (rc)
        goto fail;

    /* Format before publishing: attachers see finished tables or nothing. */
    uint64_t sz;
    void *procs = sl_seg_region_get(l->ctl, "procs", &sz);
    if ((rc = sl_proctab_format(procs, sz)))
        goto fail;
    void *slots_ctl = sl_seg_region_get(l->ctl, "slots", &sz);
    if ((rc = sl_slots_format(slots_ctl, sz, n_slots, slot_bytes)))
        goto fail;
    sl_layout_plan *lp = sl_seg_region_get(l->ctl, "plan", NULL);
    lp->magic = SL_LAYOUT_PLAN_MAGIC;
    lp->n_units = p->n_units;
    lp->slot_bytes = slot_bytes;
    lp->model_size = sp->model_size;
    lp->n_ctx = sp->req->n_ctx;
    lp->n_batch = sp->req->n_batch;
    lp->max_sessions = sp->req->max_sessions;
    lp->n_threads = sp->req->n_threads;
    lp->kv_floats = p->kv_bytes / sizeof(float) / sp->req->max_sessions;
    lp->n_vocab = sp->hp->n_vocab;
    lp->n_embd = sp->hp->n_embd;
    lp->n_expert_units = p->n_expert_units;
    lp->n_expert = sp->hp->n_expert;
    lp->n_ranges = n_ranges;
    strcpy(lp->model_path, sp->model_path);
    write_ranges(l, sp->model, p, n_all);
    if (moe) {
        void *ectl = sl_seg_region_get(l->ctl, "eslots", &sz);
        if ((rc = sl_slots_format(ectl, sz, p->expert_slots, p->expert_slot_bytes)))
            goto fail;
        const sl_expcache_params ep = {sp->hp->n_layer, sp->hp->n_expert, p->n_units, sp->expert_halflife,
                                       sp->expert_prefetch};
        void *ec = sl_seg_region_get(l->ctl, "expcache", &sz);
        if ((rc = sl_expcache_format(ec, sz, &ep)))
            goto fail;
    }
    sl_layout_unit *units = sl_layout_units(lp);
    for (uint32_t i = 0; i < p->n_units; i++) {
        const sl_plan_unit *u = &p->units[i];
        units[i] = (sl_layout_unit){u->offset, u->nbytes, u->io_offset, u->io_bytes, u->pin_offset, u->pinned,
                                    u->pinned};
    }
    write_plan(lp, p, sp->req->budget);
    sl_layout_board *b = sl_seg_region_get(l->ctl, "board", NULL);
    b->magic = SL_LAYOUT_BOARD_MAGIC;
    if ((rc = bind_regions(l)))
        goto fail;
    /* The KV cache is the plan's from the start, as the in-process engine's
     * is: a decode step writes a row of every head, a new page per head
     * every few positions, and faulting those in as generation goes cost
     * the compute worker 2-3% of a step (zeroing pages of this VM's memory
     * for the first time). Best effort: without MADV_POPULATE_WRITE (Linux
     * 5.14), the pages come as they are written. */
#ifdef MADV_POPULATE_WRITE
    if (p->kv_bytes)
        (void)madvise(l->kv, p->kv_bytes, MADV_POPULATE_WRITE);
#endif
    /* The ring starts asking for the first streamed units of a step; the
     * memory of slots this plan does not use goes back at once. */
    if (!sl_layout_ring_settle(l) || (rc = sl_layout_release_unused(l)) != 0) {
        rc = rc ? rc : -SL_EFORMAT;
        goto fail;
    }
    for (int i = 0; i < SEG_COUNT && rc == 0; i++)
        rc = sl_seg_publish(*handles[i]);
    if (rc)
        goto fail;
    *out = l;
    return 0;
fail:
    sl_layout_remove(l);
    return rc;
}

int sl_layout_attach(const char *instance, sl_layout **out)
{
    *out = NULL;
    sl_layout *l = calloc(1, sizeof *l);
    if (!l)
        return -SL_ENOMEM;
    sl_seg **handles[SEG_COUNT] = {&l->ctl, &l->weights, &l->kv_seg, &l->act};
    int rc = 0;
    for (int i = 0; i < SEG_COUNT && rc == 0; i++)
        rc = sl_seg_attach(instance, k_kinds[i], SL_LAYOUT_VERSION, 0, handles[i]);
    if (rc == 0)
        rc = bind_regions(l);
    if (rc) {
        sl_layout_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* Whether an adopted layout is what sl_layout_create would make from sp.
 * Returns 0, or -SL_EFORMAT after a warning naming the first difference. */
static int check_same(const sl_layout *l, const sl_layout_spec *sp)
{
    const sl_plan *p = sp->plan;
    const sl_plan_req *req = sp->req;
    sl_layout_plan *lp = l->plan;
    uint32_t n_slots;
    uint64_t slot_bytes;
    sl_layout_arena(p, req, &n_slots, &slot_bytes);
    const char *what = NULL;
    if (strcmp(lp->model_path, sp->model_path) != 0 || lp->model_size != sp->model_size)
        what = "the model";
    else if (lp->n_units != p->n_units || lp->n_vocab != sp->hp->n_vocab || lp->n_embd != sp->hp->n_embd)
        what = "the model's shape";
    else if (lp->n_ctx != req->n_ctx || lp->n_batch != req->n_batch)
        what = "the context or batch size";
    else if (lp->max_sessions != req->max_sessions || lp->kv_floats != p->kv_bytes / sizeof(float) / req->max_sessions)
        what = "the sessions";
    else if (lp->n_threads != req->n_threads)
        what = "the thread count";
    else if (sl_slots_count(l->slots) != n_slots || sl_slots_slot_size(l->slots) != slot_bytes ||
             lp->slot_bytes != slot_bytes)
        what = "the slot arena";
    else if (lp->n_expert_units != p->n_expert_units ||
             (p->n_expert_units && (sl_slots_count(l->eslots) != p->expert_slots ||
                                    sl_slots_slot_size(l->eslots) != p->expert_slot_bytes)))
        what = "the expert cache";
    const sl_layout_unit *units = sl_layout_units(lp);
    for (uint32_t i = 0; !what && i < p->n_units; i++) {
        const sl_plan_unit *u = &p->units[i];
        const sl_layout_unit *lu = &units[i];
        if (lu->offset != u->offset || lu->nbytes != u->nbytes || lu->io_offset != u->io_offset ||
            lu->io_bytes != u->io_bytes || lu->pin_room != (uint32_t)u->pinned ||
            (u->pinned && lu->pin_offset != u->pin_offset))
            what = "the units pinned at creation (another budget)";
    }
    const struct {
        const sl_seg *seg;
        const char *name;
        uint64_t size;
    } regions[] = {{l->weights, "pinned", at_least_page(p->pinned_bytes)},
                   {l->kv_seg, "kv", p->kv_bytes},
                   {l->act, "x", p->x_bytes},
                   {l->act, "scratch", p->scratch_bytes},
                   {l->act, "logits", p->logits_bytes},
                   {l->ctl, "board", sl_layout_board_bytes(req->n_batch)}};
    for (size_t i = 0; !what && i < sizeof regions / sizeof regions[0]; i++) {
        uint64_t size = 0;
        if (!sl_seg_region_get(regions[i].seg, regions[i].name, &size) || size != regions[i].size)
            what = "the size of the shared memory";
    }
    if (what) {
        SL_WARN("the segments of '%s' were made for other settings (%s differs)", sp->instance, what);
        return -SL_EFORMAT;
    }
    return 0;
}

int sl_layout_adopt(const sl_layout_spec *sp, sl_layout **out)
{
    *out = NULL;
    sl_layout *l;
    int rc = sl_layout_attach(sp->instance, &l);
    if (rc)
        return rc;
    rc = check_same(l, sp);
    sl_seg *segs[SEG_COUNT] = {l->ctl, l->weights, l->kv_seg, l->act};
    for (int i = 0; i < SEG_COUNT && rc == 0; i++)
        rc = sl_seg_adopt(segs[i], sp->epoch);
    if (rc) {
        sl_layout_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

bool sl_layout_replaced(const sl_layout *l) { return !sl_seg_linked(l->ctl); }

int sl_layout_attach_wait(const char *instance, double seconds, const volatile int *stop, sl_layout **out)
{
    int rc = -SL_ENOTFOUND;
    for (double waited = 0; !*stop; waited += 0.1) {
        if ((rc = sl_layout_attach(instance, out)) != -SL_ENOTFOUND)
            return rc;
        if (waited >= seconds) {
            SL_ERROR("no pipeline '%s' appeared within %.0f s", instance, seconds);
            break;
        }
        usleep(100000);
    }
    return rc;
}

static void close_tables(sl_layout *l)
{
    sl_expcache_close(l->ecache);
    sl_slots_close(l->eslots);
    sl_slots_close(l->slots);
    sl_proctab_close(l->procs);
}

void sl_layout_close(sl_layout *l)
{
    if (!l)
        return;
    close_tables(l);
    sl_seg_close(l->ctl);
    sl_seg_close(l->weights);
    sl_seg_close(l->kv_seg);
    sl_seg_close(l->act);
    free(l);
}

void sl_layout_remove(sl_layout *l)
{
    if (!l)
        return;
    close_tables(l);
    sl_seg_remove(l->ctl);
    sl_seg_remove(l->weights);
    sl_seg_remove(l->kv_seg);
    sl_seg_remove(l->act);
    free(l);
}

void sl_layout_fault_set(sl_layout *l, int err, const char *msg)
{
    sl_layout_board *b = l->board;
    uint32_t none = 0;
    if (!atomic_compare_exchange_strong(&b->fault, &none, 1))
        return;
    b->fault_err = err;
    snprintf(b->fault_msg, sizeof b->fault_msg, "%s", msg);
    atomic_store_explicit(&b->fault, 2, memory_order_release);
}

void sl_layout_fault_clear(sl_layout *l)
{
    atomic_store_explicit(&l->board->fault, 0, memory_order_release);
}

const char *sl_layout_fault(const sl_layout *l, int *err)
{
    const sl_layout_board *b = l->board;
    if (atomic_load_explicit(&b->fault, memory_order_acquire) != 2)
        return NULL;
    if (err)
        *err = b->fault_err;
    return b->fault_msg;
}

const sl_layout_range *sl_layout_unit_ranges(const sl_layout *l, uint32_t u, uint32_t *n)
{
    SL_ASSERT(u < l->plan->n_units + l->plan->n_expert_units);
    *n = l->range_first[u + 1] - l->range_first[u];
    return l->ranges + l->range_first[u];
}

int sl_layout_fetch_unit(const sl_layout *l, sl_fetcher *f, uint32_t u, void *dst, size_t dst_size)
{
    uint32_t n;
    const sl_layout_range *r = sl_layout_unit_ranges(l, u, &n);
    const sl_layout_range *last = &r[n - 1];
    const uint64_t image = last->image_offset + ((last->offset + last->nbytes + 4095) & ~4095ull) -
                           (last->offset & ~4095ull);
    if (image > dst_size) {
        SL_ERROR("unit %u's image of %llu bytes does not fit %zu", u, (unsigned long long)image, dst_size);
        return -SL_EINVAL;
    }
    uint64_t nbytes = 0;
    for (uint32_t i = 0; i < n; i++)
        nbytes += r[i].nbytes;
    /* A packed model stores each unit's image whole; a GGUF file has the
     * ranges where they are. */
    if (n == 1 || sl_fetcher_packed(f))
        return sl_fetcher_fetch(f, r[0].offset, nbytes, dst, dst_size);
    for (uint32_t i = 0; i < n; i++) {
        int rc = sl_fetcher_fetch(f, r[i].offset, r[i].nbytes, (uint8_t *)dst + r[i].image_offset,
                                  dst_size - r[i].image_offset);
        if (rc)
            return rc;
    }
    return 0;
}

const void *sl_layout_pinned_unit(const sl_layout *l, uint32_t u)
{
    SL_ASSERT(u < l->plan->n_units);
    const sl_layout_unit *lu = &sl_layout_units(l->plan)[u];
    if (!lu->pinned)
        return NULL;
    return l->pinned + lu->pin_offset + (lu->offset - lu->io_offset);
}

/* ---- changing the plan at run time ------------------------------------- */

/* The largest io range among the units the plan region streams now. */
static uint64_t largest_streamed(sl_layout_plan *lp)
{
    const sl_layout_unit *units = sl_layout_units(lp);
    uint64_t m = 0;
    for (uint32_t k = 0; k < lp->n_streamed; k++)
        m = units[lp->streamed[k]].io_bytes > m ? units[lp->streamed[k]].io_bytes : m;
    return m;
}

int sl_layout_reserve_plan(sl_layout *l, const sl_plan *np)
{
    sl_layout_plan *lp = l->plan;
    sl_layout_unit *units = sl_layout_units(lp);
    SL_ASSERT(np->n_units == lp->n_units && np->ring_slots <= sl_slots_count(l->slots) &&
              (!np->ring_slots || np->slot_bytes <= sl_slots_slot_size(l->slots)));
    int rc = 0;
    for (uint32_t i = 0; i < np->n_units && rc == 0; i++) {
        const sl_plan_unit *u = &np->units[i];
        SL_ASSERT(!u->pinned || (units[i].pin_room && u->pin_offset == units[i].pin_offset));
        if (u->pinned && !units[i].pinned)
            rc = sl_seg_reserve(l->weights, l->pinned + units[i].pin_offset, units[i].io_bytes);
    }
    /* Ring slots: the part the new plan's units can fill, in every slot it
     * uses (reserving what is reserved already costs nothing). */
    for (uint32_t i = 0; i < np->ring_slots && rc == 0; i++)
        rc = sl_seg_reserve(l->weights, sl_slots_data(l->slots, i), np->slot_bytes);
    return rc;
}

void sl_layout_set_plan(sl_layout *l, const sl_plan *np, uint64_t budget)
{
    write_plan(l->plan, np, budget);
    atomic_fetch_add_explicit(&l->plan->plan_gen, 1, memory_order_release);
}

bool sl_layout_ring_settle(sl_layout *l)
{
    const sl_layout_plan *p = l->plan;
    bool done = true;
    for (uint32_t i = 0; i < sl_slots_count(l->slots); i++) {
        sl_slot_view v = sl_slots_view(l->slots, i);
        if (i >= p->ring_slots) {
            if (v.state != SL_SLOT_FREE)
                done &= sl_slots_evict(l->slots, i) == SL_SLOTS_OK;
            continue;
        }
        uint32_t want = p->streamed[i % p->n_streamed];
        if ((v.state == SL_SLOT_READY || v.state == SL_SLOT_WANTED) && v.unit == want)
            continue;
        done &= sl_slots_want(l->slots, i, want, NULL) == SL_SLOTS_OK;
    }
    return done;
}

int sl_layout_release_unused(sl_layout *l)
{
    sl_layout_plan *lp = l->plan;
    const sl_layout_unit *units = sl_layout_units(lp);
    int rc = 0;
    for (uint32_t i = 0; i < lp->n_units; i++)
        if (units[i].pin_room && !units[i].pinned && rc == 0)
            rc = sl_seg_release(l->weights, l->pinned + units[i].pin_offset, units[i].io_bytes);
    const uint64_t slot = sl_slots_slot_size(l->slots), used = lp->ring_slots ? largest_streamed(lp) : 0;
    for (uint32_t i = 0; i < sl_slots_count(l->slots) && rc == 0; i++) {
        uint64_t keep = i < lp->ring_slots ? used : 0;
        if (keep < slot)
            rc = sl_seg_release(l->weights, (uint8_t *)sl_slots_data(l->slots, i) + keep, slot - keep);
    }
    return rc;
}

uint64_t sl_layout_allocated(const sl_layout *l)
{
    return sl_seg_allocated(l->ctl) + sl_seg_allocated(l->weights) + sl_seg_allocated(l->kv_seg) +
           sl_seg_allocated(l->act);
}
