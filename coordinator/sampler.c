/* Token sampler; see sampler.h for the chain, the state layout and why the
 * state is a plain struct.
 *
 * Candidates are (id, logit) pairs in caller scratch. The total order used
 * everywhere is "higher logit first, then lower id first", so every sort and
 * every tie is decided the same way on every run and every machine. */
#include "coordinator/sampler.h"

#include "common/log.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

_Static_assert(offsetof(sl_sampler_state, rng) == 8, "layout documented in sampler.h");
_Static_assert(offsetof(sl_sampler_state, n_accepted) == 40, "layout documented in sampler.h");
_Static_assert(offsetof(sl_sampler_state, ring_head) == 48, "layout documented in sampler.h");
_Static_assert(offsetof(sl_sampler_state, ring) == 56, "layout documented in sampler.h");
_Static_assert(sizeof(sl_sampler_state) == 56 + 4 * SL_SAMPLER_MAX_LAST_N, "layout documented in sampler.h");

typedef struct cand {
    int32_t id;
    float v; /* logit, after penalties */
} cand;

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- parameters and state ---- */

void sl_sampler_params_default(sl_sampler_params *p)
{
    *p = (sl_sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
    };
}

int sl_sampler_params_check(const sl_sampler_params *p)
{
    if (!p) {
        SL_ERROR("params is NULL");
        return -SL_EINVAL;
    }
    if (isnan(p->temperature) || p->temperature == INFINITY) {
        SL_ERROR("temperature %g must be a finite number (<= 0 means greedy)", (double)p->temperature);
        return -SL_EINVAL;
    }
    if (p->top_k < 0) {
        SL_ERROR("top_k %d is negative (0 disables it)", (int)p->top_k);
        return -SL_EINVAL;
    }
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f)) {
        SL_ERROR("top_p %g is outside [0, 1] (1 disables it)", (double)p->top_p);
        return -SL_EINVAL;
    }
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
        SL_ERROR("min_p %g is outside [0, 1] (0 disables it)", (double)p->min_p);
        return -SL_EINVAL;
    }
    if (!(p->repeat_penalty > 0.0f && isfinite(p->repeat_penalty))) {
        SL_ERROR("repeat_penalty %g must be positive and finite (1 disables it)", (double)p->repeat_penalty);
        return -SL_EINVAL;
    }
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty)) {
        SL_ERROR("presence_penalty %g / frequency_penalty %g must be finite", (double)p->presence_penalty,
                 (double)p->frequency_penalty);
        return -SL_EINVAL;
    }
    if (p->penalty_last_n < 0 || p->penalty_last_n > SL_SAMPLER_MAX_LAST_N) {
        SL_ERROR("penalty_last_n %d is outside [0, %d]", (int)p->penalty_last_n, SL_SAMPLER_MAX_LAST_N);
        return -SL_EINVAL;
    }
    return 0;
}

int sl_sampler_init(sl_sampler_state *s, const sl_sampler_params *p)
{
    SL_ASSERT(s != NULL);
    int rc = sl_sampler_params_check(p);
    if (rc < 0)
        return rc;
    memset(s, 0, sizeof *s);
    s->magic = SL_SAMPLER_MAGIC;
    s->version = SL_SAMPLER_VERSION;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    return 0;
}

/* The state may come from shared memory written by an earlier process:
 * check it before indexing with it. */
static int state_check(const sl_sampler_state *s, const char *func)
{
    if (s->magic != SL_SAMPLER_MAGIC || s->version != SL_SAMPLER_VERSION) {
        sl_log(SL_LOG_ERROR, func, "sampler state has magic 0x%08x version %u, want 0x%08x version %u",
               s->magic, s->version, SL_SAMPLER_MAGIC, SL_SAMPLER_VERSION);
        return -SL_EFORMAT;
    }
    if (s->ring_head >= SL_SAMPLER_MAX_LAST_N || s->ring_len > SL_SAMPLER_MAX_LAST_N) {
        sl_log(SL_LOG_ERROR, func, "sampler state ring head %u / length %u out of range (max %d)",
               s->ring_head, s->ring_len, SL_SAMPLER_MAX_LAST_N);
        return -SL_EFORMAT;
    }
    if ((s->rng[0] | s->rng[1] | s->rng[2] | s->rng[3]) == 0) {
        /* xoshiro's one fixed point: it would return 0 forever. */
        sl_log(SL_LOG_ERROR, func, "sampler state has an all-zero generator");
        return -SL_EFORMAT;
    }
    return 0;
}

int sl_sampler_accept(sl_sampler_state *s, int32_t token)
{
    SL_ASSERT(s != NULL);
    int rc = state_check(s, __func__);
    if (rc < 0)
        return rc;
    if (token < 0) {
        SL_ERROR("token %d is negative", (int)token);
        return -SL_EINVAL;
    }
    s->ring[s->ring_head] = token;
    s->ring_head = (s->ring_head + 1) % SL_SAMPLER_MAX_LAST_N;
    if (s->ring_len < SL_SAMPLER_MAX_LAST_N)
        s->ring_len++;
    s->n_accepted++;
    return 0;
}

/* ---- scratch layout: [pad to 8] cand[n_vocab] | u16 count[n_vocab] ---- */

size_t sl_sampler_scratch_bytes(int n_vocab)
{
    if (n_vocab <= 0)
        return 0;
    size_t n = (size_t)n_vocab;
    if (n > (SIZE_MAX - 16) / (sizeof(cand) + sizeof(uint16_t)))
        return 0;
    return 8 + n * (sizeof(cand) + sizeof(uint16_t));
}

/* ---- ordering and sorting ---- */

static inline bool before(const cand *a, const cand *b)
{
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static inline void swap_cand(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Heap over c[0..n) whose root is the candidate that comes LAST in the
 * order, i.e. the worst one kept; used both to select the best k and to
 * sort them. */
static void sift_down(cand *c, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, worst = i;
        if (l < n && before(&c[worst], &c[l]))
            worst = l;
        if (l + 1 < n && before(&c[worst], &c[l + 1]))
            worst = l + 1;
        if (worst == i)
            return;
        swap_cand(&c[i], &c[worst]);
        i = worst;
    }
}

/* Moves the best k of c[0..n) to c[0..k) in order (best first). O(n log k),
 * no recursion, no allocation; k == n sorts everything. */
static void select_sorted(cand *c, size_t n, size_t k)
{
    SL_ASSERT(k >= 1 && k <= n);
    for (size_t i = k / 2; i-- > 0;)
        sift_down(c, k, i);
    for (size_t i = k; i < n; i++) {
        if (before(&c[i], &c[0])) {
            swap_cand(&c[i], &c[0]);
            sift_down(c, k, 0);
        }
    }
    for (size_t end = k; end > 1; end--) {
        swap_cand(&c[0], &c[end - 1]);
        sift_down(c, end - 1, 0);
    }
}

static inline double weight(const cand *c, float vmax)
{
    return (double)expf(c->v - vmax);
}

/* Top-p: moves to c[0..m) the smallest set of best candidates (in the
 * order above) whose unnormalised mass reaches `target`, and returns m >= 1.
 * That set is a prefix of the full sort, but sorting a 150k vocabulary costs
 * tens of milliseconds when the distribution is flat; a quickselect that
 * tracks the mass on the better side finds the same set in expected O(n).
 * Pivots are chosen deterministically (median of three), so the result
 * and the order left behind are the same on every run. */
static size_t top_p_cut(cand *c, size_t n, float vmax, double target)
{
    size_t lo = 0, hi = n; /* the cut lies in (lo, hi]; c[0..lo) are kept */
    double acc = 0.0;      /* mass of c[0..lo), always < target */
    for (int pass = 0; lo < hi; pass++) {
        if (pass > 64) {
            /* Pivots keep landing badly: finish with a sort of what is left. */
            select_sorted(c + lo, hi - lo, hi - lo);
            for (size_t i = lo; i < hi; i++)
                if ((acc += weight(&c[i], vmax)) >= target)
                    return i + 1;
            return hi;
        }
        size_t a = lo, b = lo + (hi - lo) / 2, d = hi - 1;
        if (before(&c[b], &c[a]))
            swap_cand(&c[a], &c[b]);
        if (before(&c[d], &c[b])) {
            swap_cand(&c[b], &c[d]);
            if (before(&c[b], &c[a]))
                swap_cand(&c[a], &c[b]);
        }
        swap_cand(&c[b], &c[d]); /* median of three becomes the pivot at hi-1 */
        cand pivot = c[d];
        size_t store = lo;
        double left = 0.0;
        for (size_t i = lo; i < d; i++) {
            if (before(&c[i], &pivot)) {
                left += weight(&c[i], vmax);
                swap_cand(&c[i], &c[store++]);
            }
        }
        swap_cand(&c[store], &c[d]);
        if (acc + left >= target) {
            hi = store; /* the cut is among the better ones */
            continue;
        }
        acc += left + weight(&c[store], vmax);
        if (acc >= target)
            return store + 1;
        lo = store + 1;
    }
    /* lo == hi: either rounding kept the mass just below target (keep all
     * seen), or target <= 0 narrowed to an empty prefix, and c[0] is then
     * the best candidate: top-p keeps at least one. */
    return hi > 0 ? hi : 1;
}

/* Keeps logits usable by the arithmetic below: NaN counts as "never" (-inf)
 * and +inf as the largest float, so that max - v never computes inf - inf. */
static inline float sanitize(float v)
{
    if (isnan(v))
        return -INFINITY;
    if (v > FLT_MAX)
        return FLT_MAX;
    return v;
}

/* Repetition, presence and frequency penalties (llama.cpp semantics) on
 * c[], which is still indexed by token id. count[] is scratch: only the
 * entries of tokens in the window are touched, so it needs no clearing. */
static void apply_penalties(const sl_sampler_state *s, const sl_sampler_params *p, cand *c, uint16_t *count,
                            int n_vocab)
{
    uint32_t w = s->ring_len < (uint32_t)p->penalty_last_n ? s->ring_len : (uint32_t)p->penalty_last_n;
    uint32_t start = (s->ring_head + SL_SAMPLER_MAX_LAST_N - w) % SL_SAMPLER_MAX_LAST_N;
#define WINDOW_TOKEN(j) (s->ring[(start + (j)) % SL_SAMPLER_MAX_LAST_N])
    for (uint32_t j = 0; j < w; j++) {
        int32_t t = WINDOW_TOKEN(j);
        if (t >= 0 && t < n_vocab)
            count[t] = 0;
    }
    for (uint32_t j = 0; j < w; j++) {
        int32_t t = WINDOW_TOKEN(j);
        if (t >= 0 && t < n_vocab)
            count[t]++;
    }
    for (uint32_t j = 0; j < w; j++) {
        int32_t t = WINDOW_TOKEN(j);
        if (t < 0 || t >= n_vocab || count[t] == 0)
            continue; /* outside this vocabulary, or already penalised */
        float v = c[t].v;
        if (v <= 0.0f)
            v *= p->repeat_penalty;
        else
            v /= p->repeat_penalty;
        v -= (float)count[t] * p->frequency_penalty + p->presence_penalty;
        c[t].v = sanitize(v);
        count[t] = 0;
    }
#undef WINDOW_TOKEN
}

int sl_sampler_sample(sl_sampler_state *s, const sl_sampler_params *p, const float *logits, int n_vocab,
                      void *scratch, size_t scratch_bytes)
{
    SL_ASSERT(s != NULL);
    int rc = state_check(s, __func__);
    if (rc < 0)
        return rc;
    if ((rc = sl_sampler_params_check(p)) < 0)
        return rc;
    if (!logits || n_vocab <= 0) {
        SL_ERROR("no logits (logits %p, n_vocab %d)", (const void *)logits, n_vocab);
        return -SL_EINVAL;
    }
    size_t need = sl_sampler_scratch_bytes(n_vocab);
    if (!scratch || need == 0 || scratch_bytes < need) {
        SL_ERROR("scratch of %zu bytes at %p, need %zu for n_vocab %d", scratch_bytes, scratch, need,
                 n_vocab);
        return -SL_EINVAL;
    }
    uintptr_t base = ((uintptr_t)scratch + 7) & ~(uintptr_t)7;
    cand *c = (cand *)base;
    uint16_t *count = (uint16_t *)(c + n_vocab);
    size_t n = (size_t)n_vocab;

    for (size_t i = 0; i < n; i++)
        c[i] = (cand){(int32_t)i, sanitize(logits[i])};

    bool penalise =
        p->penalty_last_n > 0 && s->ring_len > 0 &&
        (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
    if (penalise)
        apply_penalties(s, p, c, count, n_vocab);

    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (c[i].v > c[best].v) /* strict: the lowest id wins a tie */
            best = i;
    float vmax = c[best].v;
    if (vmax == -INFINITY) {
        SL_ERROR("all %d logits are -inf or NaN after penalties", n_vocab);
        return -SL_ERANGE;
    }
    if (p->temperature <= 0.0f)
        return c[best].id;

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        select_sorted(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }

    if (p->top_p < 1.0f) {
        double total = 0.0;
        for (size_t i = 0; i < n; i++)
            total += weight(&c[i], vmax);
        n = top_p_cut(c, n, vmax, (double)p->top_p * total);
    }

    if (p->min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p);
         * the best token always passes, so at least one remains. */
        double threshold = (double)vmax + log((double)p->min_p);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++)
            if ((double)c[i].v >= threshold)
                c[kept++] = c[i];
        n = kept;
    }

    /* Temperature folded into the softmax: exp((v - max) / T) is
     * softmax(v / T) without overflowing for small T. */
    double inv_t = 1.0 / (double)p->temperature;
    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += exp(((double)c[i].v - (double)vmax) * inv_t);
    double u = rng_uniform(s->rng) * total;
    double cum = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < n; i++) {
        double w = exp(((double)c[i].v - (double)vmax) * inv_t);
        if (w <= 0.0)
            continue;
        cum += w;
        last_positive = i;
        if (cum > u)
            return c[i].id;
    }
    /* Rounding left u just above the summed weights. */
    return c[last_positive].id;
}
