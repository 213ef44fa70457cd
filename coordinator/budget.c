/* Changing the memory budget of a running pipeline; see budget.h. */
#include "coordinator/budget.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "loader/fetch.h"

enum stage { IDLE, RESERVE, SETTLE };

struct sl_budget {
    sl_layout *l;
    sl_plan base;       /* the plan the segments were created from */
    uint32_t arena_slots;
    uint64_t arena_slot_bytes;
    uint64_t budget;    /* in effect */
    uint64_t min_budget;
    enum stage stage;
    sl_plan next;       /* the pending plan */
    uint64_t next_budget;
};

static int copy_plan(const sl_plan *from, sl_plan *to)
{
    *to = *from;
    to->units = malloc(from->n_units * sizeof *to->units);
    if (!to->units)
        return -SL_ENOMEM;
    memcpy(to->units, from->units, from->n_units * sizeof *to->units);
    return 0;
}

int sl_budget_new(sl_layout *l, const sl_plan *base, uint64_t budget, sl_budget **out)
{
    *out = NULL;
    sl_budget *b = calloc(1, sizeof *b);
    if (!b || copy_plan(base, &b->base)) {
        free(b);
        return -SL_ENOMEM;
    }
    b->l = l;
    b->budget = budget;
    b->arena_slots = sl_slots_count(l->slots);
    b->arena_slot_bytes = sl_slots_slot_size(l->slots);
    /* The minimum does not depend on the budget asked for. */
    sl_plan probe;
    int rc = sl_plan_rebudget(&b->base, UINT64_MAX, b->arena_slots, b->arena_slot_bytes, &probe, &b->min_budget);
    if (rc) {
        sl_budget_free(b);
        return rc;
    }
    sl_plan_free(&probe);
    *out = b;
    return 0;
}

void sl_budget_free(sl_budget *b)
{
    if (!b)
        return;
    sl_plan_free(&b->base);
    sl_plan_free(&b->next);
    free(b);
}

int sl_budget_request(sl_budget *b, uint64_t bytes, uint64_t *min_budget)
{
    if (min_budget)
        *min_budget = b->min_budget;
    if (b->stage != IDLE)
        return -SL_EAGAIN;
    int rc = sl_plan_rebudget(&b->base, bytes, b->arena_slots, b->arena_slot_bytes, &b->next, &b->min_budget);
    if (rc)
        return rc;
    b->next_budget = bytes;
    b->stage = RESERVE;
    return 0;
}

bool sl_budget_pending(const sl_budget *b) { return b->stage != IDLE; }

uint64_t sl_budget_current(const sl_budget *b) { return b->budget; }
uint64_t sl_budget_min(const sl_budget *b) { return b->min_budget; }
uint64_t sl_budget_target(const sl_budget *b) { return b->stage == IDLE ? 0 : b->next_budget; }

/* Reads the units np pins that the plan in effect streams into their
 * ranges of the pinned region (the budget grew). */
static int load_new_pins(sl_budget *b, const sl_plan *np)
{
    sl_layout_plan *lp = b->l->plan;
    const sl_layout_unit *units = sl_layout_units(lp);
    sl_fetcher *f = NULL;
    int rc = 0;
    for (uint32_t i = 0; i < np->n_units && rc == 0; i++) {
        const sl_layout_unit *lu = &units[i];
        if (!np->units[i].pinned || lu->pinned)
            continue;
        if (!f && (rc = sl_fetcher_open(lp->model_path, lp->model_size, NULL, &f)))
            break;
        rc = sl_layout_fetch_unit(b->l, f, i, b->l->pinned + lu->pin_offset, lu->io_bytes);
    }
    sl_fetcher_close(f);
    return rc;
}

int sl_budget_apply(sl_budget *b, sl_plan *cur)
{
    if (b->stage == IDLE)
        return 1;
    if (b->stage == RESERVE) {
        int rc = sl_layout_reserve_plan(b->l, &b->next);
        if (rc == 0)
            rc = load_new_pins(b, &b->next);
        if (rc) {
            /* The old plan stays; what was reserved for nothing goes back. */
            sl_layout_release_unused(b->l);
            sl_plan_free(&b->next);
            b->stage = IDLE;
            return rc < 0 ? rc : -SL_EIO;
        }
        sl_layout_set_plan(b->l, &b->next, b->next_budget);
        b->stage = SETTLE;
    }
    if (!sl_layout_ring_settle(b->l))
        return 0; /* a loader is finishing a fill of the old plan */
    if (sl_layout_release_unused(b->l))
        SL_WARN("the new plan is in effect, but some memory it no longer uses could not be given back");
    sl_plan_free(cur);
    *cur = b->next;
    memset(&b->next, 0, sizeof b->next);
    b->budget = b->next_budget;
    b->stage = IDLE;
    return 1;
}
