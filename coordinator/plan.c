/* The memory planner; see plan.h. */
#include "coordinator/plan.h"

#include <errno.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/forward.h"

static uint64_t align_down(uint64_t v) { return v / SL_PLAN_IO_ALIGN * SL_PLAN_IO_ALIGN; }
static uint64_t align_up(uint64_t v) { return align_down(v + SL_PLAN_IO_ALIGN - 1); }

uint64_t sl_plan_kv_bytes(const sl_hparams *hp, const sl_plan_req *req)
{
    uint64_t per_layer = (uint64_t)sl_forward_k_floats(hp, req->n_ctx) + sl_forward_v_floats(hp, req->n_ctx);
    return align_up(per_layer * hp->n_layer * sizeof(float) * req->max_sessions);
}

/* The activation regions: residual stream of the step's tokens, the forward
 * scratch and one logits row per session; each 4 KiB-aligned. */
static void act_sizes(const sl_hparams *hp, const sl_plan_req *req, sl_plan *p)
{
    p->x_bytes = align_up((uint64_t)req->n_batch * hp->n_embd * sizeof(float));
    p->scratch_bytes =
        align_up((uint64_t)sl_forward_scratch_floats(hp, req->n_batch, req->n_ctx, req->n_threads) * sizeof(float));
    p->logits_bytes = align_up((uint64_t)req->max_sessions * hp->n_vocab * sizeof(float));
    p->act_bytes = p->x_bytes + p->scratch_bytes + p->logits_bytes;
}

/* Pins, among units with io_bytes <= slot (or all when slot == 0), the
 * largest first while they fit in `room`; units larger than slot must be
 * pinned. Only units with pinnable[i] (all when pinnable is NULL) may be.
 * Returns the pinned bytes, or UINT64_MAX when the forced ones do not fit
 * or may not be pinned. Marks the choice in p->units. */
static uint64_t choose_pins(sl_plan *p, uint64_t slot, uint64_t room, uint32_t *order, const bool *pinnable)
{
    uint64_t used = 0;
    for (uint32_t i = 0; i < p->n_units; i++)
        p->units[i].pinned = false;
    for (uint32_t k = 0; k < p->n_units; k++) {
        sl_plan_unit *u = &p->units[order[k]];
        if (u->io_bytes > slot) {
            if (u->io_bytes > room - used || (pinnable && !pinnable[order[k]]))
                return UINT64_MAX;
            u->pinned = true;
            used += u->io_bytes;
        }
    }
    for (uint32_t k = 0; k < p->n_units; k++) {
        sl_plan_unit *u = &p->units[order[k]];
        if (!u->pinned && u->io_bytes <= room - used && (!pinnable || pinnable[order[k]])) {
            u->pinned = true;
            used += u->io_bytes;
        }
    }
    return used;
}

static int by_size_desc(const void *a, const void *b, void *units)
{
    const sl_plan_unit *u = units;
    uint64_t x = u[*(const uint32_t *)a].io_bytes, y = u[*(const uint32_t *)b].io_bytes;
    if (x != y)
        return x < y ? 1 : -1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

/* Lays out the pinned region (unless keep_offsets: the units keep the
 * pin_offset they have) and totals the plan for the chosen pins. */
static void finish(sl_plan *p, uint32_t ring, bool keep_offsets)
{
    p->n_streamed = 0;
    p->pinned_bytes = 0;
    p->streamed_bytes = 0;
    p->slot_bytes = 0;
    for (uint32_t i = 0; i < p->n_units; i++) {
        sl_plan_unit *u = &p->units[i];
        if (u->pinned) {
            if (!keep_offsets)
                u->pin_offset = p->pinned_bytes;
            p->pinned_bytes += u->io_bytes;
        } else {
            p->n_streamed++;
            p->streamed_bytes += u->nbytes;
            p->slot_bytes = u->io_bytes > p->slot_bytes ? u->io_bytes : p->slot_bytes;
        }
    }
    p->ring_slots = p->n_streamed ? ring : 0;
    p->total_bytes = p->pinned_bytes + (uint64_t)p->ring_slots * p->slot_bytes + p->kv_bytes + p->act_bytes +
                     p->expert_cache_bytes;
}

/* The expert units' sizes, and the smallest expert cache. */
static void size_experts(const sl_model *m, sl_plan *p)
{
    const sl_hparams *hp = sl_model_hparams(m);
    if (!hp->n_expert)
        return;
    p->n_expert_units = hp->n_layer * hp->n_expert;
    uint64_t largest = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++)
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            sl_unit u;
            sl_model_expert_unit(m, il, e, &u);
            largest = u.image_bytes > largest ? u.image_bytes : largest;
            p->expert_bytes += u.nbytes;
        }
    p->expert_slot_bytes = align_up(largest);
    p->expert_slots = SL_PLAN_MIN_EXPERT_SLOTS;
    p->expert_cache_bytes = (uint64_t)p->expert_slots * p->expert_slot_bytes;
}

/* Gives the expert cache what the budget has left after the plan's other
 * parts (up to a slot for every expert). */
static void grow_experts(sl_plan *p, uint64_t budget)
{
    if (!p->n_expert_units || budget <= p->total_bytes)
        return;
    uint64_t more = (budget - p->total_bytes) / p->expert_slot_bytes;
    if (more > p->n_expert_units - p->expert_slots)
        more = p->n_expert_units - p->expert_slots;
    p->expert_slots += (uint32_t)more;
    p->expert_cache_bytes += more * p->expert_slot_bytes;
    p->total_bytes += more * p->expert_slot_bytes;
}

int sl_plan_make(const sl_model *m, const sl_plan_req *req, sl_plan *out)
{
    memset(out, 0, sizeof *out);
    if (!req->budget || !req->n_ctx || !req->n_batch || !req->max_sessions || !req->n_threads ||
        req->ring_depth < 2) {
        SL_ERROR("invalid request: budget %llu, n_ctx %u, n_batch %u, sessions %u, threads %u, ring %u",
                 (unsigned long long)req->budget, req->n_ctx, req->n_batch, req->max_sessions, req->n_threads,
                 req->ring_depth);
        return -SL_EINVAL;
    }
    const sl_hparams *hp = sl_model_hparams(m);
    sl_plan p = {.n_units = hp->n_layer + 1};
    p.units = calloc(p.n_units, sizeof *p.units);
    uint32_t *order = calloc(p.n_units, sizeof *order);
    if (!p.units || !order) {
        free(p.units);
        free(order);
        return -SL_ENOMEM;
    }
    uint64_t largest = 0;
    for (uint32_t i = 0; i < p.n_units; i++) {
        const sl_unit *u = i < hp->n_layer ? sl_model_layer_unit(m, i) : sl_model_head_unit(m);
        sl_plan_unit *pu = &p.units[i];
        pu->offset = u->offset;
        pu->nbytes = u->nbytes;
        pu->io_offset = align_down(u->offset);
        pu->io_bytes = u->image_bytes;
        p.model_bytes += u->nbytes;
        largest = pu->io_bytes > largest ? pu->io_bytes : largest;
        order[i] = i;
    }
    qsort_r(order, p.n_units, sizeof *order, by_size_desc, p.units);
    p.kv_bytes = sl_plan_kv_bytes(hp, req);
    act_sizes(hp, req, &p);
    size_experts(m, &p);
    uint64_t fixed = p.kv_bytes + p.act_bytes + p.expert_cache_bytes;
    uint64_t all_io = 0;
    for (uint32_t i = 0; i < p.n_units; i++)
        all_io += p.units[i].io_bytes;

    int rc = 0;
    if (req->budget >= fixed && req->budget - fixed >= all_io) {
        choose_pins(&p, 0, all_io, order, NULL); /* everything fits: pin it all */
        finish(&p, 0, false);
    } else {
        /* Try every slot size a unit defines, from the largest down: a
         * smaller slot frees ring memory but forces the larger units into
         * the pinned region. Keep the plan that streams the fewest bytes. */
        uint64_t best_pinned = 0, best_slot = 0;
        bool found = false;
        for (uint32_t k = 0; k < p.n_units; k++) {
            uint64_t slot = p.units[order[k]].io_bytes;
            if (k && slot == p.units[order[k - 1]].io_bytes)
                continue;
            uint64_t ring = (uint64_t)req->ring_depth * slot;
            if (req->budget < fixed || req->budget - fixed < ring)
                continue;
            uint64_t pinned = choose_pins(&p, slot, req->budget - fixed - ring, order, NULL);
            if (pinned == UINT64_MAX)
                continue;
            bool streams = false;
            for (uint32_t i = 0; i < p.n_units; i++)
                streams |= !p.units[i].pinned;
            if (streams && (!found || pinned > best_pinned)) {
                found = true;
                best_pinned = pinned;
                best_slot = slot;
            }
        }
        if (found) {
            choose_pins(&p, best_slot, req->budget - fixed - (uint64_t)req->ring_depth * best_slot, order, NULL);
            finish(&p, req->ring_depth, false);
        } else {
            /* The smallest budget any slot size allows: the ring plus
             * every unit too big for its slots, pinned. */
            uint64_t min = fixed + all_io;
            for (uint32_t k = 0; k < p.n_units; k++) {
                uint64_t slot = p.units[order[k]].io_bytes, forced = 0;
                for (uint32_t i = 0; i < p.n_units; i++)
                    forced += p.units[i].io_bytes > slot ? p.units[i].io_bytes : 0;
                uint64_t need = fixed + (uint64_t)req->ring_depth * slot + forced;
                min = need < min ? need : min;
            }
            char experts[96] = "";
            if (p.n_expert_units)
                snprintf(experts, sizeof experts, ", %u expert slots (%.1f MiB each)", p.expert_slots,
                         p.expert_slot_bytes / 1048576.0);
            SL_ERROR("a budget of %llu bytes (%.1f MiB) cannot hold the KV cache (%.1f MiB for %u positions x %u "
                     "sessions), activations (%.1f MiB)%s and %u streaming slots (largest unit %.1f MiB): the "
                     "minimum is %llu bytes (%.1f MiB)",
                     (unsigned long long)req->budget, req->budget / 1048576.0, p.kv_bytes / 1048576.0,
                     req->n_ctx, req->max_sessions, p.act_bytes / 1048576.0, experts, req->ring_depth,
                     largest / 1048576.0, (unsigned long long)min, min / 1048576.0);
            rc = -SL_ERANGE;
        }
    }
    free(order);
    if (rc) {
        free(p.units);
        return rc;
    }
    grow_experts(&p, req->budget);
    SL_ASSERT(p.total_bytes <= req->budget);
    *out = p;
    return 0;
}

int sl_plan_rebudget(const sl_plan *base, uint64_t budget, uint32_t arena_slots, uint64_t arena_slot_bytes,
                     sl_plan *out, uint64_t *min_budget)
{
    memset(out, 0, sizeof *out);
    *min_budget = 0;
    SL_ASSERT(arena_slots >= 2 && base->n_units > 0);
    const uint32_t n = base->n_units;
    sl_plan p = *base;
    p.units = malloc(n * sizeof *p.units);
    uint32_t *order = malloc(n * sizeof *order);
    bool *pinnable = malloc(n * sizeof *pinnable);
    if (!p.units || !order || !pinnable) {
        free(p.units);
        free(order);
        free(pinnable);
        return -SL_ENOMEM;
    }
    memcpy(p.units, base->units, n * sizeof *p.units);
    uint64_t all_io = 0;
    bool all_pinnable = true;
    for (uint32_t i = 0; i < n; i++) {
        order[i] = i;
        pinnable[i] = base->units[i].pinned;
        all_pinnable &= pinnable[i];
        all_io += p.units[i].io_bytes;
    }
    qsort_r(order, n, sizeof *order, by_size_desc, p.units);
    const uint64_t fixed = base->kv_bytes + base->act_bytes + base->expert_cache_bytes;

    /* The smallest budget: two slots of some size s, with every unit larger
     * than s pinned (each must have room), or everything pinned. */
    uint64_t min = all_pinnable ? fixed + all_io : UINT64_MAX;
    for (uint32_t k = 0; k < n; k++) {
        uint64_t slot = p.units[order[k]].io_bytes, forced = 0;
        bool ok = slot <= arena_slot_bytes;
        for (uint32_t i = 0; i < n && ok; i++)
            if (p.units[i].io_bytes > slot) {
                ok = pinnable[i];
                forced += p.units[i].io_bytes;
            }
        if (ok && fixed + 2 * slot + forced < min)
            min = fixed + 2 * slot + forced;
    }
    SL_ASSERT(min != UINT64_MAX); /* the base plan itself is one such plan */
    *min_budget = min;

    int rc = 0;
    if (all_pinnable && budget >= fixed && budget - fixed >= all_io) {
        choose_pins(&p, 0, all_io, order, NULL);
        finish(&p, 0, true);
    } else {
        /* The deepest ring the arena has that leaves a plan, and with it
         * the plan that pins the most (as sl_plan_make does). */
        bool found = false;
        uint64_t best_pinned = 0, best_slot = 0;
        uint32_t ring = arena_slots;
        for (; ring >= 2 && !found; ring--) {
            for (uint32_t k = 0; k < n; k++) {
                uint64_t slot = p.units[order[k]].io_bytes;
                if (slot > arena_slot_bytes || (k && slot == p.units[order[k - 1]].io_bytes))
                    continue;
                if (budget < fixed || budget - fixed < (uint64_t)ring * slot)
                    continue;
                uint64_t pinned = choose_pins(&p, slot, budget - fixed - (uint64_t)ring * slot, order, pinnable);
                bool streams = false;
                for (uint32_t i = 0; i < n; i++)
                    streams |= !p.units[i].pinned;
                if (pinned != UINT64_MAX && streams && (!found || pinned > best_pinned)) {
                    found = true;
                    best_pinned = pinned;
                    best_slot = slot;
                }
            }
        }
        if (found) {
            ring++; /* the loop stepped past the depth that worked */
            choose_pins(&p, best_slot, budget - fixed - (uint64_t)ring * best_slot, order, pinnable);
            finish(&p, ring, true);
        } else {
            SL_ERROR("a budget of %llu bytes (%.1f MiB) is below this pipeline's minimum of %llu bytes (%.1f MiB)",
                     (unsigned long long)budget, budget / 1048576.0, (unsigned long long)min, min / 1048576.0);
            rc = -SL_ERANGE;
        }
    }
    free(order);
    free(pinnable);
    if (rc) {
        free(p.units);
        return rc;
    }
    SL_ASSERT(p.total_bytes <= budget && p.slot_bytes <= arena_slot_bytes);
    *out = p;
    return 0;
}

void sl_plan_free(sl_plan *p)
{
    if (!p)
        return;
    free(p->units);
    p->units = NULL;
}

int sl_plan_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v <= 0)
        return -SL_EINVAL;
    double mult = 1;
    switch (*end) {
    case 'K': case 'k': mult = 1024.0; end++; break;
    case 'M': case 'm': mult = 1048576.0; end++; break;
    case 'G': case 'g': mult = 1073741824.0; end++; break;
    case 'T': case 't': mult = 1099511627776.0; end++; break;
    default: break;
    }
    if (*end == 'i' && mult > 1) /* accept "MiB"-style spellings too */
        end++;
    if ((*end == 'B' || *end == 'b') && end[1] == 0)
        end++;
    double bytes = v * mult;
    if (*end || bytes < 1 || bytes > 1.8e19)
        return -SL_EINVAL;
    *out = (uint64_t)bytes;
    return 0;
}
