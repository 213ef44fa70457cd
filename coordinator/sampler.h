/* Token sampler: turns one logits vector into one token id.
 *
 * The chain is fixed, in llama.cpp's default order and with its flag
 * meanings:
 *   penalties -> top-k -> top-p -> min-p -> temperature -> draw
 * A temperature <= 0 means greedy: after the penalties the highest logit wins
 * (ties go to the lowest token id) and the random generator is not advanced.
 *
 * Restartability (DESIGN.md §3): everything that changes from one token to
 * the next lives in sl_sampler_state, a plain fixed-size struct without
 * pointers. The coordinator keeps it in shared memory; a restarted
 * coordinator that finds the same bytes produces the same tokens as an
 * uninterrupted run. The parameters are a separate plain struct that never
 * changes during a request. Copying a state with memcpy forks the stream.
 *
 * No allocation per token: the buffer used to sort and filter candidates is
 * supplied by the caller, sized with sl_sampler_scratch_bytes().
 *
 * Binary layout of sl_sampler_state (native endianness; the struct is only
 * shared between processes of one machine), 4152 bytes:
 *   off    0  u32 magic        SL_SAMPLER_MAGIC ("SLSS")
 *   off    4  u32 version      SL_SAMPLER_VERSION
 *   off    8  u64 rng[4]       xoshiro256** state, seeded by splitmix64(seed)
 *   off   40  u64 n_accepted   tokens ever passed to sl_sampler_accept
 *   off   48  u32 ring_head    index in ring[] where the next token goes
 *   off   52  u32 ring_len     valid entries in ring[] (<= SL_SAMPLER_MAX_LAST_N)
 *   off   56  i32 ring[SL_SAMPLER_MAX_LAST_N]  most recent tokens, circular
 * A state whose magic, version, head or length is out of range is refused
 * with -SL_EFORMAT rather than trusted. */
#ifndef SL_COORDINATOR_SAMPLER_H
#define SL_COORDINATOR_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#define SL_SAMPLER_MAGIC 0x53534c53u /* "SLSS" read as little-endian bytes */
#define SL_SAMPLER_VERSION 1u
/* Longest penalty window the state can hold (llama.cpp's default is 64). */
#define SL_SAMPLER_MAX_LAST_N 1024

typedef struct sl_sampler_params {
    float temperature;       /* <= 0: greedy; otherwise logits are divided by it */
    int32_t top_k;           /* keep the k highest logits; 0 disables */
    float top_p;             /* keep the smallest prefix with probability mass >= p; 1 disables */
    float min_p;             /* drop tokens with p < min_p * p_max; 0 disables */
    float repeat_penalty;    /* divide positive / multiply negative logits of recent tokens; 1 disables */
    float presence_penalty;  /* subtracted once from every recent token's logit; 0 disables */
    float frequency_penalty; /* subtracted per occurrence in the window; 0 disables */
    int32_t penalty_last_n;  /* window of recent tokens the penalties look at; 0 disables */
    uint64_t seed;           /* seeds the generator in sl_sampler_init */
} sl_sampler_params;

typedef struct sl_sampler_state {
    uint32_t magic;
    uint32_t version;
    uint64_t rng[4];
    uint64_t n_accepted;
    uint32_t ring_head;
    uint32_t ring_len;
    int32_t ring[SL_SAMPLER_MAX_LAST_N];
} sl_sampler_state;

/* Fills *p with llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95,
 * min_p 0.05, no penalties (repeat 1.0, presence 0, frequency 0) over a
 * window of 64, seed 0. Never fails. */
void sl_sampler_params_default(sl_sampler_params *p);

/* Returns 0 when every field of *p is in range, otherwise -SL_EINVAL after
 * logging the first offending field and its value. Ranges: temperature not
 * NaN or +inf; top_k >= 0; top_p and min_p in [0, 1]; repeat_penalty > 0 and finite;
 * presence/frequency penalties finite; penalty_last_n in
 * [0, SL_SAMPLER_MAX_LAST_N]. Does not block. */
int sl_sampler_params_check(const sl_sampler_params *p);

/* Resets *s for a new stream: seeds the generator from p->seed and empties
 * the token window. Returns 0, or -SL_EINVAL (logged) when *p fails
 * sl_sampler_params_check. Does not allocate. */
int sl_sampler_init(sl_sampler_state *s, const sl_sampler_params *p);

/* Bytes of scratch sl_sampler_sample needs for a vocabulary of n_vocab
 * tokens; 0 when n_vocab <= 0 or the size would overflow. Allocate once per
 * session (or per worker) and reuse it for every token. */
size_t sl_sampler_scratch_bytes(int n_vocab);

/* Chooses the next token from logits[0 .. n_vocab-1] (not modified; NaN is
 * treated as -inf) and returns its id (>= 0). Advances the generator of *s
 * unless the choice is greedy; does NOT record the token in the penalty
 * window: call sl_sampler_accept for every token that enters the context
 * (prompt tokens too, as llama.cpp does). `scratch` must hold
 * sl_sampler_scratch_bytes(n_vocab) bytes, any alignment.
 * Errors (logged once): -SL_EINVAL for bad arguments, bad parameters or a
 * small scratch; -SL_EFORMAT for a state that fails its magic/version/range
 * checks; -SL_ERANGE when every logit is -inf or NaN. On error *s is
 * unchanged. Does not allocate or block. Cost: O(n_vocab) for greedy,
 * penalties, min-p and the draw; O(n_vocab log k) for top-k; top-p is a
 * selection of expected O(n_vocab), not a full sort. */
int sl_sampler_sample(sl_sampler_state *s, const sl_sampler_params *p, const float *logits, int n_vocab,
                      void *scratch, size_t scratch_bytes);

/* Appends `token` to the penalty window (the oldest entry falls out when the
 * window holds SL_SAMPLER_MAX_LAST_N tokens). Returns 0, -SL_EINVAL (logged)
 * for a negative token, or -SL_EFORMAT for a corrupt state. */
int sl_sampler_accept(sl_sampler_state *s, int32_t token);

#endif
