/* Sampler tests: greedy and its ties, determinism per seed, equivalences
 * (top-k 1, tiny top-p), min-p filtering, empirical frequencies against the
 * distribution the chain should produce, penalties, resuming from a copied
 * state, and parameter validation. */
#include "common/log.h"
#include "coordinator/sampler.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Test-local generator for logits, independent of the sampler's. */
static uint64_t g_lcg = 12345;
static float rand_logit(void)
{
    g_lcg = g_lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_lcg >> 11) * 0x1.0p-53 * 20.0 - 10.0);
}

static void fill_random(float *l, int n)
{
    for (int i = 0; i < n; i++)
        l[i] = rand_logit();
}

static int argmax_lowest(const float *l, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b])
            b = i;
    return b;
}

static sl_sampler_params plain(float temp, uint64_t seed)
{
    sl_sampler_params p;
    sl_sampler_params_default(&p);
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static void *g_scratch;
static size_t g_scratch_bytes;

static int sample(sl_sampler_state *s, const sl_sampler_params *p, const float *l, int n)
{
    return sl_sampler_sample(s, p, l, n, g_scratch, g_scratch_bytes);
}

static void test_greedy(void)
{
    sl_sampler_params p = plain(0.0f, 1);
    sl_sampler_state s;
    CHECK(sl_sampler_init(&s, &p) == 0, "init");
    float l[300];
    for (int t = 0; t < 100; t++) {
        fill_random(l, 300);
        int want = argmax_lowest(l, 300);
        CHECK(sample(&s, &p, l, 300) == want, "greedy is argmax at trial %d", t);
    }
    float ties[] = {1.0f, 3.0f, -2.0f, 3.0f, 2.0f, 3.0f};
    CHECK(sample(&s, &p, ties, 6) == 1, "tie goes to the lowest id");
    /* Negative temperature is greedy too; NaN counts as -inf. */
    p.temperature = -1.0f;
    float withnan[] = {NAN, 0.5f, NAN, 0.7f};
    CHECK(sample(&s, &p, withnan, 4) == 3, "NaN ignored");
    /* Greedy does not consume random numbers. */
    sl_sampler_state before = s;
    sample(&s, &p, ties, 6);
    CHECK(memcmp(&before, &s, sizeof s) == 0, "greedy leaves the state alone");
}

static void run_stream(uint64_t seed, int *out, int n_tokens)
{
    sl_sampler_params p;
    sl_sampler_params_default(&p);
    p.seed = seed;
    p.repeat_penalty = 1.1f;
    sl_sampler_state s;
    sl_sampler_init(&s, &p);
    uint64_t saved = g_lcg;
    g_lcg = 777; /* the same logits for every stream */
    float l[512];
    for (int t = 0; t < n_tokens; t++) {
        for (int i = 0; i < 512; i++)
            l[i] = rand_logit() * 0.3f; /* flat enough that draws vary */
        out[t] = sample(&s, &p, l, 512);
        sl_sampler_accept(&s, out[t]);
    }
    g_lcg = saved;
}

static void test_determinism(void)
{
    enum { N = 200 };
    int a[N], b[N], c[N];
    run_stream(42, a, N);
    run_stream(42, b, N);
    run_stream(43, c, N);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed gives the same tokens");
    int differ = 0;
    for (int i = 0; i < N; i++)
        differ += a[i] != c[i];
    CHECK(differ > N / 4, "different seeds differ (%d of %d positions)", differ, N);
    int all_valid = 1;
    for (int i = 0; i < N; i++)
        all_valid &= a[i] >= 0 && a[i] < 512;
    CHECK(all_valid, "tokens in range");
}

static void test_equivalences(void)
{
    float l[1000];
    sl_sampler_state s;
    for (int t = 0; t < 100; t++) {
        fill_random(l, 1000);
        if (t % 3 == 0) { /* plant ties at the top */
            int m = argmax_lowest(l, 1000);
            l[999] = l[m];
            l[500] = l[m];
        }
        int want = argmax_lowest(l, 1000);
        sl_sampler_params p = plain(1.5f, (uint64_t)t);
        p.top_k = 1;
        sl_sampler_init(&s, &p);
        CHECK(sample(&s, &p, l, 1000) == want, "top-k 1 is greedy (trial %d)", t);
        p = plain(1.5f, (uint64_t)t);
        p.top_p = 1e-6f;
        sl_sampler_init(&s, &p);
        CHECK(sample(&s, &p, l, 1000) == want, "tiny top-p is greedy (trial %d)", t);
        p.top_p = 0.0f;
        CHECK(sample(&s, &p, l, 1000) == want, "top-p 0 is greedy (trial %d)", t);
        p = plain(1.5f, (uint64_t)t);
        p.min_p = 1.0f;
        sl_sampler_init(&s, &p);
        /* min-p 1 keeps exactly the tokens tied for the highest logit. */
        int got = sample(&s, &p, l, 1000);
        CHECK(got >= 0 && l[got] == l[want], "min-p 1 keeps only the best (trial %d)", t);
    }
}

/* Draws n times and compares the frequency of every token with want[]:
 * each must lie within 5 standard deviations of the binomial count. */
static void check_frequencies(const char *what, sl_sampler_params p, const float *l, const double *want,
                              int n_vocab, int n)
{
    sl_sampler_state s;
    sl_sampler_init(&s, &p);
    int count[16] = {0};
    for (int i = 0; i < n; i++) {
        int t = sample(&s, &p, l, n_vocab);
        if (t >= 0 && t < 16)
            count[t]++;
    }
    for (int t = 0; t < n_vocab; t++) {
        double f = (double)count[t] / n;
        double sd = sqrt(want[t] * (1 - want[t]) / n);
        double bound = 5 * sd + 1e-12;
        CHECK(fabs(f - want[t]) <= bound, "%s: token %d frequency %.5f, want %.5f +- %.5f", what, t, f,
              want[t], bound);
    }
}

static void test_distributions(void)
{
    const double prob[6] = {0.4, 0.3, 0.15, 0.1, 0.05, 0.0};
    float l[6];
    for (int i = 0; i < 5; i++)
        l[i] = (float)log(prob[i]) + 3.0f; /* softmax ignores the shift */
    l[5] = -INFINITY;
    const int N = 200000;

    check_frequencies("plain", plain(1.0f, 7), l, prob, 6, N);

    double w[6];
    double z = 0;
    for (int i = 0; i < 6; i++)
        z += (w[i] = sqrt(prob[i]));
    for (int i = 0; i < 6; i++)
        w[i] /= z;
    check_frequencies("temperature 2", plain(2.0f, 8), l, w, 6, N);

    sl_sampler_params p = plain(1.0f, 9);
    p.top_k = 2;
    double k2[6] = {0.4 / 0.7, 0.3 / 0.7, 0, 0, 0, 0};
    check_frequencies("top-k 2", p, l, k2, 6, N);

    /* Cumulative 0.4, 0.7, 0.85: the first prefix with mass >= 0.8 has 3. */
    p = plain(1.0f, 10);
    p.top_p = 0.8f;
    double p3[6] = {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0, 0};
    check_frequencies("top-p 0.8", p, l, p3, 6, N);

    /* min-p 0.3: threshold 0.12 keeps 0.4, 0.3, 0.15. */
    p = plain(1.0f, 11);
    p.min_p = 0.3f;
    check_frequencies("min-p 0.3", p, l, p3, 6, N);
    /* min-p 0.5: threshold 0.2 keeps 0.4, 0.3. */
    p.min_p = 0.5f;
    p.seed = 12;
    check_frequencies("min-p 0.5", p, l, k2, 6, N);

    /* The chain order: top-k 3 first, then min-p relative to the best. */
    p = plain(1.0f, 13);
    p.top_k = 3;
    p.min_p = 0.6f; /* threshold 0.24 keeps 0.4, 0.3 */
    check_frequencies("top-k 3 + min-p 0.6", p, l, k2, 6, N);
}

static void test_penalties(void)
{
    sl_sampler_params p = plain(0.0f, 1);
    sl_sampler_state s;

    /* Repetition penalty divides a positive logit: 2.0 / 1.2 = 1.67 < 1.9. */
    float pos[] = {2.0f, 1.9f, 0.0f};
    p.repeat_penalty = 1.2f;
    sl_sampler_init(&s, &p);
    CHECK(sample(&s, &p, pos, 3) == 0, "no history: no penalty");
    sl_sampler_accept(&s, 0);
    CHECK(sample(&s, &p, pos, 3) == 1, "repeat penalty divides positive logits");
    p.repeat_penalty = 1.05f; /* 1.905 > 1.9 */
    CHECK(sample(&s, &p, pos, 3) == 0, "small repeat penalty keeps token 0");

    /* ... and multiplies a negative one: -1.0 * 1.2 = -1.2 < -1.1. */
    float neg[] = {-1.0f, -1.1f};
    p.repeat_penalty = 1.2f;
    CHECK(sample(&s, &p, neg, 2) == 1, "repeat penalty multiplies negative logits");

    /* Presence: subtracted once however often the token occurred. */
    float pr[] = {2.0f, 1.5f};
    p = plain(0.0f, 1);
    p.presence_penalty = 0.4f;
    sl_sampler_init(&s, &p);
    for (int i = 0; i < 5; i++)
        sl_sampler_accept(&s, 0);
    CHECK(sample(&s, &p, pr, 2) == 0, "presence 0.4: 1.6 > 1.5");
    p.presence_penalty = 0.6f;
    CHECK(sample(&s, &p, pr, 2) == 1, "presence 0.6: 1.4 < 1.5");

    /* Frequency: subtracted per occurrence. */
    p = plain(0.0f, 1);
    p.frequency_penalty = 0.2f;
    sl_sampler_init(&s, &p);
    sl_sampler_accept(&s, 0);
    CHECK(sample(&s, &p, pr, 2) == 0, "frequency x1: 1.8 > 1.5");
    sl_sampler_accept(&s, 0);
    sl_sampler_accept(&s, 0);
    CHECK(sample(&s, &p, pr, 2) == 1, "frequency x3: 1.4 < 1.5");

    /* Only the last penalty_last_n tokens count. */
    p.penalty_last_n = 2;
    sl_sampler_accept(&s, 1); /* window now {0, 1} -> 0 occurs once */
    CHECK(sample(&s, &p, pr, 2) == 0, "window of 2: token 0 once (1.8), token 1 once (1.3)");
    sl_sampler_accept(&s, 1); /* window {1, 1} */
    CHECK(sample(&s, &p, pr, 2) == 0, "token 0 left the window");
    p.penalty_last_n = 0;
    sl_sampler_accept(&s, 0);
    CHECK(sample(&s, &p, pr, 2) == 0, "penalty_last_n 0 disables");

    /* Tokens outside the vocabulary in the window are ignored. */
    p = plain(0.0f, 1);
    p.presence_penalty = 5.0f;
    sl_sampler_init(&s, &p);
    sl_sampler_accept(&s, 100000);
    CHECK(sample(&s, &p, pr, 2) == 0, "out-of-vocabulary history ignored");

    /* The window wraps around the ring. */
    p = plain(0.0f, 1);
    p.frequency_penalty = 0.1f;
    p.penalty_last_n = SL_SAMPLER_MAX_LAST_N;
    sl_sampler_init(&s, &p);
    for (int i = 0; i < SL_SAMPLER_MAX_LAST_N + 10; i++)
        sl_sampler_accept(&s, i < 20 ? 1 : 0); /* 20 ones, 10 of which fall out */
    float fq[] = {200.0f, 101.5f};
    /* token 0: 200 - 0.1 * (MAX - 10), token 1: 101.5 - 0.1 * 10 = 100.5 */
    int want = 200.0f - 0.1f * (SL_SAMPLER_MAX_LAST_N - 10) > 100.5f ? 0 : 1;
    CHECK(sample(&s, &p, fq, 2) == want, "ring wrap counts");
    CHECK(s.n_accepted == SL_SAMPLER_MAX_LAST_N + 10, "n_accepted");
    CHECK(s.ring_len == SL_SAMPLER_MAX_LAST_N, "ring full");
}

static void test_resume_from_copy(void)
{
    sl_sampler_params p;
    sl_sampler_params_default(&p);
    p.seed = 99;
    p.repeat_penalty = 1.3f;
    p.frequency_penalty = 0.1f;
    p.temperature = 1.2f;
    sl_sampler_state s, copy;
    sl_sampler_init(&s, &p);
    float l[256];
    g_lcg = 2024;
    for (int t = 0; t < 50; t++) {
        for (int i = 0; i < 256; i++)
            l[i] = rand_logit() * 0.2f;
        sl_sampler_accept(&s, sample(&s, &p, l, 256));
    }
    memcpy(&copy, &s, sizeof s); /* what a restarted coordinator would find in shm */
    uint64_t lcg_at_fork = g_lcg;
    int a[100], b[100];
    for (int t = 0; t < 100; t++) {
        for (int i = 0; i < 256; i++)
            l[i] = rand_logit() * 0.2f;
        a[t] = sample(&s, &p, l, 256);
        sl_sampler_accept(&s, a[t]);
    }
    g_lcg = lcg_at_fork;
    for (int t = 0; t < 100; t++) {
        for (int i = 0; i < 256; i++)
            l[i] = rand_logit() * 0.2f;
        b[t] = sample(&copy, &p, l, 256);
        sl_sampler_accept(&copy, b[t]);
    }
    CHECK(memcmp(a, b, sizeof a) == 0, "copied state resumes identically");
    CHECK(memcmp(&s, &copy, sizeof s) == 0, "states agree afterwards");
}

static void test_validation(void)
{
    sl_sampler_params good = plain(1.0f, 1), p;
    CHECK(sl_sampler_params_check(&good) == 0, "defaults valid");
    sl_sampler_params_default(&p);
    CHECK(sl_sampler_params_check(&p) == 0, "llama defaults valid");
#define BAD(field, value)                                                                                    \
    do {                                                                                                     \
        p = good;                                                                                            \
        p.field = value;                                                                                     \
        CHECK(sl_sampler_params_check(&p) == -SL_EINVAL, #field " = " #value " rejected");                   \
    } while (0)
    BAD(top_k, -1);
    BAD(top_p, -0.1f);
    BAD(top_p, 1.5f);
    BAD(top_p, NAN);
    BAD(min_p, -0.01f);
    BAD(min_p, 2.0f);
    BAD(repeat_penalty, 0.0f);
    BAD(repeat_penalty, -1.0f);
    BAD(repeat_penalty, INFINITY);
    BAD(presence_penalty, NAN);
    BAD(frequency_penalty, INFINITY);
    BAD(penalty_last_n, -1);
    BAD(penalty_last_n, SL_SAMPLER_MAX_LAST_N + 1);
    BAD(temperature, NAN);
    BAD(temperature, INFINITY);
#undef BAD

    sl_sampler_state s;
    p = good;
    p.top_k = -3;
    CHECK(sl_sampler_init(&s, &p) == -SL_EINVAL, "init rejects bad params");
    sl_sampler_init(&s, &good);
    float l[4] = {1, 2, 3, 4};
    CHECK(sl_sampler_sample(&s, &p, l, 4, g_scratch, g_scratch_bytes) == -SL_EINVAL,
          "sample rejects bad params");
    CHECK(sl_sampler_sample(&s, &good, l, 4, g_scratch, sl_sampler_scratch_bytes(4) - 1) == -SL_EINVAL,
          "small scratch rejected");
    CHECK(sl_sampler_sample(&s, &good, l, 0, g_scratch, g_scratch_bytes) == -SL_EINVAL, "n_vocab 0 rejected");
    CHECK(sl_sampler_sample(&s, &good, NULL, 4, g_scratch, g_scratch_bytes) == -SL_EINVAL,
          "NULL logits rejected");
    CHECK(sl_sampler_scratch_bytes(0) == 0 && sl_sampler_scratch_bytes(-5) == 0, "scratch of 0");
    CHECK(sl_sampler_accept(&s, -1) == -SL_EINVAL, "negative token rejected");
    float inf[3] = {-INFINITY, NAN, -INFINITY};
    CHECK(sample(&s, &good, inf, 3) == -SL_ERANGE, "no finite logit");

    sl_sampler_state bad = s;
    bad.magic ^= 1;
    CHECK(sample(&bad, &good, l, 4) == -SL_EFORMAT, "bad magic");
    CHECK(sl_sampler_accept(&bad, 1) == -SL_EFORMAT, "accept checks magic");
    bad = s;
    bad.ring_head = SL_SAMPLER_MAX_LAST_N;
    CHECK(sample(&bad, &good, l, 4) == -SL_EFORMAT, "bad ring head");
    bad = s;
    bad.ring_len = SL_SAMPLER_MAX_LAST_N + 1;
    CHECK(sl_sampler_accept(&bad, 1) == -SL_EFORMAT, "bad ring length");
    bad = s;
    memset(bad.rng, 0, sizeof bad.rng);
    CHECK(sample(&bad, &good, l, 4) == -SL_EFORMAT, "zero generator");
    sl_sampler_state before = s;
    p = good;
    p.top_p = 2;
    sample(&s, &p, l, 4);
    CHECK(memcmp(&before, &s, sizeof s) == 0, "failed sample leaves state alone");

    /* +inf logits and extreme temperatures stay well-defined. */
    float big[3] = {INFINITY, 1.0f, INFINITY};
    p = plain(1.0f, 3);
    int t = sample(&s, &p, big, 3);
    CHECK(t == 0 || t == 2, "+inf logits win (got %d)", t);
    p.temperature = 1e-30f;
    CHECK(sample(&s, &p, l, 4) == 3, "tiny temperature is (almost) greedy");
    p.temperature = 1e30f;
    t = sample(&s, &p, l, 4);
    CHECK(t >= 0 && t < 4, "huge temperature");
}

/* Top-p on larger vocabularies against a brute-force reference: every
 * drawn token must lie in the smallest sorted prefix reaching the mass,
 * and (with many draws) the prefix's last member must be reachable. */
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void test_top_p_reference(void)
{
    enum { V = 3000 };
    static float l[V], sorted[V];
    for (int trial = 0; trial < 6; trial++) {
        fill_random(l, V);
        for (int i = 0; i < V; i++)
            l[i] = roundf(l[i] * 4.0f) / 4.0f; /* plenty of ties */
        float p_top = 0.2f + 0.15f * (float)trial;
        memcpy(sorted, l, sizeof l);
        qsort(sorted, V, sizeof(float), cmp_desc);
        double total = 0, cum = 0;
        for (int i = 0; i < V; i++)
            total += exp((double)sorted[i] - sorted[0]);
        float cut_logit = sorted[0];
        for (int i = 0; i < V; i++) {
            cum += exp((double)sorted[i] - sorted[0]) / total;
            cut_logit = sorted[i];
            if (cum >= p_top)
                break;
        }
        sl_sampler_params p = plain(1.0f, (uint64_t)trial);
        p.top_p = p_top;
        sl_sampler_state s;
        sl_sampler_init(&s, &p);
        int outside = 0;
        for (int d = 0; d < 3000; d++) {
            int t = sample(&s, &p, l, V);
            outside += t < 0 || l[t] < cut_logit;
        }
        CHECK(outside == 0, "top-p %.2f: %d draws outside the nucleus", (double)p_top, outside);
    }
}

/* A realistic vocabulary with the default chain; checks bounds only. */
static void test_large_vocab(void)
{
    enum { V = 151936 };
    float *l = malloc(sizeof(float) * V);
    size_t need = sl_sampler_scratch_bytes(V);
    void *scr = malloc(need);
    sl_sampler_params p;
    sl_sampler_params_default(&p);
    p.top_k = 0; /* forces the full sort in top-p */
    p.repeat_penalty = 1.1f;
    sl_sampler_state s;
    sl_sampler_init(&s, &p);
    int ok = 1;
    for (int t = 0; t < 20; t++) {
        fill_random(l, V);
        int tok = sl_sampler_sample(&s, &p, l, V, scr, need);
        ok &= tok >= 0 && tok < V;
        sl_sampler_accept(&s, tok);
    }
    CHECK(ok, "large vocabulary tokens in range");
    free(l);
    free(scr);
}

int main(void)
{
    g_scratch_bytes = sl_sampler_scratch_bytes(4096);
    g_scratch = malloc(g_scratch_bytes + 1);
    /* Deliberately misaligned: any alignment must work. */
    g_scratch = (char *)g_scratch + 1;
    test_greedy();
    test_determinism();
    test_equivalences();
    test_distributions();
    test_penalties();
    test_resume_from_copy();
    test_validation();
    test_top_p_reference();
    test_large_vocab();
    free((char *)g_scratch - 1);
    return sl_test_finish();
}
