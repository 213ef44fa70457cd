/* Durable session records in shared memory; see sessions.h for the layout
 * and the commit protocol. */
#include "coordinator/sessions.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "shm/segment.h"

typedef struct ss_header {
    uint32_t magic;
    uint32_t version;
    uint32_t max_sessions;
    uint32_t n_ctx;
    uint64_t record_bytes;
    _Atomic uint32_t weights_ready;
    uint32_t reserved;
    uint64_t commits;
    uint64_t zero[3];
} ss_header;

typedef struct ss_record {
    _Atomic uint32_t cur;
    uint32_t zero[3];
    sl_sess_state state[2];
    /* then the token array */
} ss_record;

_Static_assert(sizeof(ss_header) == 64, "sessions header layout");
_Static_assert(offsetof(ss_header, weights_ready) == 24 && offsetof(ss_header, commits) == 32,
               "sessions header layout");
_Static_assert(sizeof(sl_sess_state) == 4288, "session state layout");
_Static_assert(sizeof(sl_sess_state) % 64 == 0, "session state copies stay 64-byte aligned");
_Static_assert(offsetof(sl_sess_state, n_tokens) == 40 && offsetof(sl_sess_state, final_tok) == 64,
               "session state layout");
_Static_assert(offsetof(sl_sess_state, sp) == 72 && offsetof(sl_sess_state, dt) == 112 &&
                   offsetof(sl_sess_state, ss) == 128,
               "session state layout");
_Static_assert(offsetof(ss_record, state) == 16, "session record layout");

#define KIND "sess"
#define REGION "sessions"

struct sl_sessions {
    sl_seg *seg;
    ss_header *hdr;
    uint8_t *records;
    uint64_t record_bytes;
    uint32_t max_sessions, n_ctx;
};

static uint64_t record_bytes(uint32_t n_ctx)
{
    uint64_t b = sizeof(ss_record) + 4ull * n_ctx;
    return (b + 63) & ~63ull;
}

static ss_record *record(const sl_sessions *s, uint32_t i)
{
    SL_ASSERT(i < s->max_sessions);
    return (ss_record *)(s->records + (uint64_t)i * s->record_bytes);
}

static int wrap(sl_seg *seg, uint32_t max_sessions, uint32_t n_ctx, sl_sessions **out)
{
    uint64_t size;
    ss_header *h = sl_seg_region_get(seg, REGION, &size);
    const uint64_t rb = record_bytes(n_ctx);
    if (!h || size < sizeof *h + rb * max_sessions) {
        SL_ERROR("segment %s has no region '%s' of %llu bytes", KIND, REGION,
                 (unsigned long long)(sizeof *h + rb * max_sessions));
        return -SL_EFORMAT;
    }
    if (h->magic != SL_SESSIONS_MAGIC || h->version != SL_SESSIONS_VERSION) {
        SL_ERROR("session records have magic 0x%08x version %u; this build writes 0x%08x version %u", h->magic,
                 h->version, SL_SESSIONS_MAGIC, SL_SESSIONS_VERSION);
        return h->magic == SL_SESSIONS_MAGIC ? -SL_EVERSION : -SL_EFORMAT;
    }
    if (h->max_sessions != max_sessions || h->n_ctx != n_ctx || h->record_bytes != rb) {
        SL_ERROR("session records are for %u sessions of %u tokens (%llu bytes each); this coordinator has %u of "
                 "%u (%llu bytes)",
                 h->max_sessions, h->n_ctx, (unsigned long long)h->record_bytes, max_sessions, n_ctx,
                 (unsigned long long)rb);
        return -SL_EFORMAT;
    }
    sl_sessions *s = calloc(1, sizeof *s);
    if (!s) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    *s = (sl_sessions){seg, h, (uint8_t *)(h + 1), rb, max_sessions, n_ctx};
    *out = s;
    return 0;
}

int sl_sessions_create(const char *instance, uint32_t max_sessions, uint32_t n_ctx, uint64_t epoch,
                       sl_sessions **out)
{
    *out = NULL;
    if (!max_sessions || !n_ctx) {
        SL_ERROR("%u sessions of %u tokens", max_sessions, n_ctx);
        return -SL_EINVAL;
    }
    const sl_seg_region r = {REGION, sizeof(ss_header) + record_bytes(n_ctx) * max_sessions};
    sl_seg *seg;
    int rc = sl_seg_create(instance, KIND, SL_SESSIONS_VERSION, &r, 1, epoch, &seg);
    if (rc)
        return rc;
    /* Zero-filled: every record is FREE (magic 0). */
    ss_header *h = sl_seg_region_get(seg, REGION, NULL);
    h->magic = SL_SESSIONS_MAGIC;
    h->version = SL_SESSIONS_VERSION;
    h->max_sessions = max_sessions;
    h->n_ctx = n_ctx;
    h->record_bytes = record_bytes(n_ctx);
    if ((rc = wrap(seg, max_sessions, n_ctx, out)) || (rc = sl_seg_publish(seg))) {
        free(*out);
        *out = NULL;
        sl_seg_close(seg);
        return rc;
    }
    return 0;
}

int sl_sessions_adopt(const char *instance, uint32_t max_sessions, uint32_t n_ctx, uint64_t epoch,
                      sl_sessions **out)
{
    *out = NULL;
    sl_seg *seg;
    int rc = sl_seg_attach(instance, KIND, SL_SESSIONS_VERSION, 0, &seg);
    if (rc)
        return rc;
    if ((rc = wrap(seg, max_sessions, n_ctx, out)) == 0 && (rc = sl_seg_adopt(seg, epoch)) != 0) {
        free(*out);
        *out = NULL;
    }
    if (rc)
        sl_seg_close(seg);
    return rc;
}

void sl_sessions_close(sl_sessions *s)
{
    if (!s)
        return;
    sl_seg_close(s->seg);
    free(s);
}

void sl_sessions_remove(sl_sessions *s)
{
    if (!s)
        return;
    sl_seg_remove(s->seg);
    free(s);
}

void sl_sessions_load(const sl_sessions *s, uint32_t i, sl_sess_state *out)
{
    const ss_record *r = record(s, i);
    uint32_t cur = atomic_load_explicit(&((ss_record *)r)->cur, memory_order_acquire);
    *out = r->state[cur & 1];
    if (out->magic == 0) {
        memset(out, 0, sizeof *out);
        return;
    }
    const sl_sess_state *t = out;
    bool ok = t->magic == SL_SESS_STATE_MAGIC && t->phase <= SL_SESS_DONE && t->n_tokens <= s->n_ctx &&
              t->n_fed <= t->n_tokens && t->n_prompt <= t->n_tokens && t->n_gen <= t->n_tokens - t->n_prompt &&
              (t->phase != SL_SESS_RUNNING || t->n_prompt > 0) && t->seq <= (uint64_t)t->n_gen + 1 &&
              t->ss.magic == SL_SAMPLER_MAGIC && t->ss.version == SL_SAMPLER_VERSION &&
              t->ss.ring_head < SL_SAMPLER_MAX_LAST_N && t->ss.ring_len <= SL_SAMPLER_MAX_LAST_N &&
              t->dt.n_pending <= 3 && sl_sampler_params_check(&t->sp) == 0;
    if (!ok) {
        SL_WARN("session record %u is damaged (magic 0x%08x, phase %u, %u tokens of %u); dropping it", i, t->magic,
                t->phase, t->n_tokens, s->n_ctx);
        memset(out, 0, sizeof *out);
    }
}

void sl_sessions_commit(sl_sessions *s, uint32_t i, sl_sess_state *st)
{
    ss_record *r = record(s, i);
    uint32_t cur = atomic_load_explicit(&r->cur, memory_order_relaxed) & 1;
    s->hdr->commits++;
    st->magic = SL_SESS_STATE_MAGIC;
    if (st->phase == SL_SESS_DONE && r->state[cur].phase != SL_SESS_DONE)
        st->ended = s->hdr->commits;
    r->state[cur ^ 1] = *st;
    /* The copy is complete before the flip is visible. */
    atomic_store_explicit(&r->cur, cur ^ 1, memory_order_release);
}

int32_t *sl_sessions_tokens(sl_sessions *s, uint32_t i)
{
    return (int32_t *)((uint8_t *)record(s, i) + sizeof(ss_record));
}

bool sl_sessions_weights_ready(const sl_sessions *s)
{
    return atomic_load_explicit(&s->hdr->weights_ready, memory_order_acquire) != 0;
}

void sl_sessions_set_weights_ready(sl_sessions *s, bool ready)
{
    atomic_store_explicit(&s->hdr->weights_ready, ready ? 1u : 0u, memory_order_release);
}
