/* Durable session records: what the coordinator must not lose when it is
 * killed (DESIGN.md §3).
 *
 * A session's volatile parts (the client's socket identity, timings) die
 * with the coordinator; everything needed to carry on producing exactly
 * the same tokens lives here, in the shared-memory segment
 * /sluice-<instance>-sess, which a restarted coordinator re-attaches to and
 * adopts (shm/segment.h) together with the pipeline's other segments
 * (coordinator/layout.h: the KV caches stay where they were):
 *   - the request: its id, a hash of its parameters (to tell a resend from
 *     another request that reuses the id), the sampling parameters and
 *     n_predict;
 *   - the context: prompt and accepted tokens, how many of them have their
 *     K/V committed (a forward pass finished) and how many were generated;
 *   - the sampler's state (RNG and penalty window, coordinator/sampler.h)
 *     and the streaming detokenizer's held-back bytes (model/detok.h), both
 *     pointer-free on purpose;
 *   - how many token events were sent (the next event's seq), and for a
 *     finished request how it ended, so that a client that missed events
 *     can be sent them again from the tokens.
 *
 * Commit protocol. Each record holds two copies of its state and a word
 * saying which one is committed. sl_sessions_commit writes the other copy
 * and then flips the word (release). A coordinator killed at any point
 * leaves the last committed copy intact; a restarted one reads that copy
 * (acquire). The token array is shared by both copies and only appended to
 * past the committed n_tokens, so a torn append is invisible. A commit
 * copies one state (about 4.3 KB): it is done once per session per step,
 * never per layer.
 *
 * The memory counts outside the budget, like the ctl segment: per session
 * two states plus n_ctx token ids.
 *
 * Segment "sess" (kind_version SL_SESSIONS_VERSION), one region "sessions",
 * native byte order (shared only between processes of one machine and one
 * build):
 *   header, 64 bytes:
 *     0  u32 magic          SL_SESSIONS_MAGIC
 *     4  u32 version        SL_SESSIONS_VERSION
 *     8  u32 max_sessions   records that follow
 *    12  u32 n_ctx          token ids in each record's token array
 *    16  u64 record_bytes   bytes of one record (a multiple of 64)
 *    24  u32 weights_ready  1 once the pinned units of the plan in effect
 *                           are loaded; a coordinator that adopts the
 *                           segments and finds 0 loads them again
 *    28  u32 reserved       0
 *    32  u64 commits        commits so far (orders finished records: the
 *                           oldest finished record is reused first)
 *    40  24 bytes zero
 *   then max_sessions records of record_bytes:
 *     0  u32 cur            which state copy (0 or 1) is committed
 *     4  12 bytes zero
 *    16  sl_sess_state[2]   the two copies (layout below), each padded to
 *                           a multiple of 64 bytes
 *     ... i32 tokens[n_ctx]
 *
 * sl_sess_state, 4288 bytes:
 *     0  u32 magic        SL_SESS_STATE_MAGIC in a copy that was ever
 *                         committed; 0 in a record never used
 *     4  u32 phase        enum sl_sess_phase
 *     8  u64 req_id       the client's request id (>= 1)
 *    16  u64 req_hash     hash of the request's parameters (prompt, n_predict,
 *                         sampling, add_bos)
 *    24  u64 seq          token events sent: the next event's seq
 *    32  u64 ended        header.commits when the request finished
 *    40  u32 n_tokens     tokens in the context (prompt + generated)
 *    44  u32 n_fed        tokens whose K/V are committed
 *    48  u32 n_prompt     prompt tokens
 *    52  u32 n_predict    tokens to generate at most
 *    56  u32 n_gen        tokens generated (tokens[n_prompt .. n_prompt+n_gen))
 *    60  u32 finish       DONE: how it ended (proto/msg.h sl_msg_finish values)
 *    64  i32 final_tok    DONE: token of the last event when it has one of
 *                         its own (the end-of-generation token, or -1)
 *    68  u32 cancelled    1: a cancel arrived; ends after the step in flight
 *    72  sl_sampler_params (40 bytes)
 *   112  sl_detok (12 bytes)
 *   124  u32 reserved     0
 *   128  sl_sampler_state (4152 bytes)
 *  4280  8 bytes zero
 *
 * Threads: one process (the coordinator) writes; nothing here blocks
 * except on the kernel's shared-memory calls in create/adopt. */
#ifndef SL_COORDINATOR_SESSIONS_H
#define SL_COORDINATOR_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/sampler.h"
#include "model/detok.h"

#define SL_SESSIONS_MAGIC 0x45534c53u    /* "SLSE" as little-endian bytes */
#define SL_SESSIONS_VERSION 1u           /* also the segment's kind_version */
#define SL_SESS_STATE_MAGIC 0x54534c53u  /* "SLST" */

enum sl_sess_phase {
    SL_SESS_FREE = 0,    /* unused (or its request was dropped) */
    SL_SESS_RUNNING = 1, /* generating */
    SL_SESS_DONE = 2,    /* finished; kept so that a resend can be answered */
};

typedef struct sl_sess_state {
    uint32_t magic;
    uint32_t phase;
    uint64_t req_id;
    uint64_t req_hash;
    uint64_t seq;
    uint64_t ended;
    uint32_t n_tokens, n_fed, n_prompt, n_predict, n_gen;
    uint32_t finish;
    int32_t final_tok;
    uint32_t cancelled;
    sl_sampler_params sp;
    sl_detok dt;
    uint32_t reserved;
    sl_sampler_state ss;
    uint64_t reserved2;
} sl_sess_state;

typedef struct sl_sessions sl_sessions;

/* Creates and publishes the session segment of `instance` with
 * max_sessions free records of n_ctx tokens, owned by the calling process
 * with `epoch`. Returns 0 and a handle in *out (the caller owns it:
 * sl_sessions_remove on a clean shutdown); -SL_EINVAL for a zero count,
 * -SL_ENOMEM / -SL_EIO (logged; also when a segment of that name exists:
 * remove stale ones first with sl_seg_clean). Blocks on shared-memory
 * allocation. */
int sl_sessions_create(const char *instance, uint32_t max_sessions, uint32_t n_ctx, uint64_t epoch,
                       sl_sessions **out);

/* Attaches to the session segment a coordinator that died left behind and
 * takes it over (sl_seg_adopt, with `epoch`). Returns 0 and a handle in
 * *out; -SL_ENOTFOUND (not logged) when there is none; -SL_EFORMAT or
 * -SL_EVERSION (logged, saying what differs) when it is another build's or
 * holds another number or size of records: remove it and create anew;
 * -SL_EINVAL (logged) when its owner is alive. */
int sl_sessions_adopt(const char *instance, uint32_t max_sessions, uint32_t n_ctx, uint64_t epoch,
                      sl_sessions **out);

/* Unmaps; the segment stays (for the next coordinator). NULL accepted. */
void sl_sessions_close(sl_sessions *s);

/* Unlinks the segment and unmaps (clean shutdown). NULL accepted. */
void sl_sessions_remove(sl_sessions *s);

/* Copies record i's committed state into *out. A record that was never
 * committed, or whose state fails its checks (magic, phase, counts against
 * n_ctx), reads as FREE (the latter logged once as a warning): a damaged
 * record must cost its request, never the coordinator. Never fails. */
void sl_sessions_load(const sl_sessions *s, uint32_t i, sl_sess_state *out);

/* Commits *st as record i's state (see the protocol above); st->magic is
 * set here. When st->phase is DONE and the committed state was not,
 * st->ended is stamped. Never fails; does not allocate. */
void sl_sessions_commit(sl_sessions *s, uint32_t i, sl_sess_state *st);

/* Record i's token array (n_ctx ids), in shared memory; valid until close. */
int32_t *sl_sessions_tokens(sl_sessions *s, uint32_t i);

/* The header's weights_ready flag (see above). */
bool sl_sessions_weights_ready(const sl_sessions *s);
void sl_sessions_set_weights_ready(sl_sessions *s, bool ready);

#endif
