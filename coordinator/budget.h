/* Changing the memory budget of a running pipeline (issue: memory pressure
 * and `sluice ctl budget SIZE`) without stopping generation.
 *
 * A change is asked for (sl_budget_request) at any time: the new plan is
 * computed at once (sl_plan_rebudget: a subset of the units pinned at
 * creation stays pinned, the rest streams through the ring arena), so a
 * budget below the minimum is refused right away. It is then applied by
 * the coordinator between two steps (sl_budget_apply, called while no step
 * is in flight and no new step is posted until it is done):
 *   1. reserve the memory the new plan uses beyond the old one;
 *   2. read the units it pins that the old plan streamed into their ranges
 *      of the pinned region (only when the budget grows; this blocks the
 *      coordinator for the time of those reads);
 *   3. make it the plan in effect (sl_layout_set_plan: plan_gen + 1);
 *   4. settle the ring for the new streamed list (repeated until loaders
 *      finish the fills in progress);
 *   5. give back the memory the new plan does not use (sl_seg_release), so
 *      that the pipeline's footprint really drops.
 * Which bytes a step reads never changes, only where they come from, so
 * the output is identical.
 *
 * Single-threaded: the coordinator's loop owns the handle. */
#ifndef SL_COORDINATOR_BUDGET_H
#define SL_COORDINATOR_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/layout.h"
#include "coordinator/plan.h"

typedef struct sl_budget sl_budget;

/* A controller for layout l, created from plan `base` (copied) for
 * `budget` bytes, with ring arena geometry from sl_layout_arena. Returns 0
 * and *out (sl_budget_free), or -SL_ENOMEM. */
int sl_budget_new(sl_layout *l, const sl_plan *base, uint64_t budget, sl_budget **out);

/* Frees the controller (a pending change is dropped). NULL accepted. */
void sl_budget_free(sl_budget *b);

/* Asks for `bytes` of budget. Returns 0 when the change is pending (apply
 * it between steps); -SL_ERANGE (logged) when bytes is below the minimum;
 * -SL_EAGAIN (not logged) while another change is pending; -SL_ENOMEM.
 * Stores the minimum budget in *min_budget (may be NULL) in every case.
 * Does not block. */
int sl_budget_request(sl_budget *b, uint64_t bytes, uint64_t *min_budget);

/* Whether a change is pending: the coordinator posts no step until
 * sl_budget_apply has finished it. */
bool sl_budget_pending(const sl_budget *b);

/* Advances the pending change; call only while no step is in flight.
 * Returns 0 when it needs another call (the ring is still settling), 1 when
 * the new plan is in effect: *cur (the coordinator's copy of the plan in
 * effect) is freed and replaced by it; or a negative error (-SL_ENOMEM, no
 * shared memory for a larger plan; -SL_EIO, the model could not be read or
 * memory not released), logged, after which the old plan stays in effect
 * (when the failure came before step 3) and nothing is pending. Blocks for
 * the reads of step 2 only. */
int sl_budget_apply(sl_budget *b, sl_plan *cur);

/* The budget in effect, and the smallest one this pipeline accepts. */
uint64_t sl_budget_current(const sl_budget *b);
uint64_t sl_budget_min(const sl_budget *b);

/* The budget the pending change asks for (0 when none). */
uint64_t sl_budget_target(const sl_budget *b);

#endif
