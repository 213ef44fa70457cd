/* Creating and attaching the pipeline's segments; see layout.h. */
#include "coordinator/layout.h"

#include <stdlib.h>
#include <string.h>
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
        plan_sz < sl_layout_plan_bytes(l->plan->n_units, l->plan->n_streamed) ||
        board_sz < sl_layout_board_bytes(l->plan->n_batch) || l->plan->n_streamed > l->plan->n_units) {
        SL_ERROR("the plan or board region is not what this build writes");
        return -SL_EFORMAT;
    }
    int rc = sl_proctab_open(procs, procs_sz, &l->procs);
    if (rc == 0 && l->plan->ring_slots)
        rc = sl_slots_open(slots_ctl, slots_sz, ring, ring_sz, &l->slots);
    return rc;
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
    sl_layout *l = calloc(1, sizeof *l);
    if (!l)
        return -SL_ENOMEM;
    const uint32_t n_slots = p->ring_slots ? p->ring_slots : 1;
    const sl_seg_region ctl[] = {
        {"procs", sl_proctab_size()},
        {"slots", sl_slots_ctl_size(n_slots)},
        {"plan", sl_layout_plan_bytes(p->n_units, p->n_streamed)},
        {"board", sl_layout_board_bytes(sp->req->n_batch)},
    };
    const sl_seg_region weights[] = {
        {"pinned", at_least_page(p->pinned_bytes)},
        {"ring", at_least_page((uint64_t)p->ring_slots * p->slot_bytes)},
    };
    const sl_seg_region kv[] = {{"kv", p->kv_bytes}};
    const sl_seg_region act[] = {{"x", p->x_bytes}, {"scratch", p->scratch_bytes}, {"logits", p->logits_bytes}};
    const struct {
        const sl_seg_region *r;
        uint32_t n;
    } segs[SEG_COUNT] = {{ctl, 4}, {weights, 2}, {kv, 1}, {act, 3}};
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
    if ((rc = sl_slots_format(slots_ctl, sz, n_slots, p->ring_slots ? p->slot_bytes : SL_SLOTS_ALIGN)))
        goto fail;
    sl_layout_plan *lp = sl_seg_region_get(l->ctl, "plan", NULL);
    lp->magic = SL_LAYOUT_PLAN_MAGIC;
    lp->n_units = p->n_units;
    lp->n_streamed = p->n_streamed;
    lp->ring_slots = p->ring_slots;
    lp->slot_bytes = p->slot_bytes;
    lp->model_size = sp->model_size;
    lp->n_ctx = sp->req->n_ctx;
    lp->n_batch = sp->req->n_batch;
    lp->max_sessions = sp->req->max_sessions;
    lp->n_threads = sp->req->n_threads;
    lp->kv_floats = p->kv_bytes / sizeof(float) / sp->req->max_sessions;
    lp->n_vocab = sp->hp->n_vocab;
    lp->n_embd = sp->hp->n_embd;
    strcpy(lp->model_path, sp->model_path);
    sl_layout_unit *units = sl_layout_units(lp);
    for (uint32_t i = 0, k = 0; i < p->n_units; i++) {
        const sl_plan_unit *u = &p->units[i];
        units[i] = (sl_layout_unit){u->offset, u->nbytes, u->io_offset, u->io_bytes, u->pin_offset, u->pinned, 0};
        if (!u->pinned)
            lp->streamed[k++] = i;
    }
    sl_layout_board *b = sl_seg_region_get(l->ctl, "board", NULL);
    b->magic = SL_LAYOUT_BOARD_MAGIC;
    if ((rc = bind_regions(l)))
        goto fail;
    /* The ring starts asking for the first streamed units of a step. */
    for (uint32_t i = 0; i < p->ring_slots; i++)
        if (sl_slots_want(l->slots, i, lp->streamed[i % p->n_streamed], NULL) != SL_SLOTS_OK) {
            rc = -SL_EFORMAT;
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

const void *sl_layout_pinned_unit(const sl_layout *l, uint32_t u)
{
    SL_ASSERT(u < l->plan->n_units);
    const sl_layout_unit *lu = &sl_layout_units(l->plan)[u];
    if (!lu->pinned)
        return NULL;
    return l->pinned + lu->pin_offset + (lu->offset - lu->io_offset);
}
