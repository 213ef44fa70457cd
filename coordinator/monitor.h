/* Monitoring: what the coordinator publishes on its XPUB socket
 * (`--monitor ENDPOINT`), for `sluice top`, the HTTP gateway's /metrics and
 * any other subscriber. This header is the specification of the stream: a
 * client can be written from it and proto/msg.h alone
 * (tests/monitor_client.py is one, in Python).
 *
 * ## Frames and envelope
 *
 * Every event is two ZeroMQ frames, [kind][message]: the first frame is the
 * kind's bytes (so SUB sockets can subscribe by prefix), the second a
 * protocol message (proto/msg.h) of type "event" with
 *   kind  the same string as the first frame;
 *   seq   the publisher's event counter, 1 for its first event, +1 for each
 *         next (snapshot events included): a gap means the subscriber lost
 *         events (see "Slow subscribers");
 *   ts    wall-clock time of publication, ns since the Unix epoch;
 *   f     the fields below (a map of name -> nil, bool, int, float or str).
 * Numbers are ints unless marked float; byte counts are ints in bytes; every
 * field listed is always present. Later versions may add fields and kinds:
 * a client skips what it does not know.
 *
 * ## Snapshot
 *
 * When a subscription arrives (any SUB that connects and subscribes), the
 * coordinator publishes the current state before any further live event:
 *   snapshot.begin   n (events between this one and snapshot.end), epoch
 *                    (the coordinator's epoch), last (seq of the last event
 *                    published before the snapshot; 0 when none)
 *   snapshot.<kind>  one per current entity, same fields as the live <kind>:
 *                    config, mem, pressure, thermal, stats (one each), one
 *                    proc per running process, one slot per ring slot, one
 *                    session per active session
 *   snapshot.end     n (the same count)
 * Together they are the state after every event up to `last`; the live
 * events that follow (seq after snapshot.end's) change it from there. A
 * new subscriber may receive a few live events before snapshot.begin (sent
 * between its subscription and the coordinator reading it): the snapshot
 * supersedes them. A session's snapshot carries its n_gen so far. The
 * snapshot goes to every subscriber of "snapshot" (the stream has no
 * per-subscriber sends): a client already in sync may ignore it or apply it
 * again (it restates state, it changes nothing). A client that wants
 * snapshots subscribes to a prefix of "snapshot." (or to everything, "").
 *
 * ## Slow subscribers
 *
 * Publishing never blocks and never waits for a subscriber: each one has a
 * queue of SL_MONITOR_HWM events (ZMQ_SNDHWM, ZMQ_XPUB_NODROP off) and a
 * subscriber that does not keep up loses events past it; it sees a gap in
 * seq. To resynchronise, reconnect (a new subscription brings a snapshot).
 *
 * ## Kinds and fields (live events; the snapshot repeats the stateful ones)
 *
 * config      the coordinator and its configuration; at start and in snapshots.
 *   model str, instance str, epoch int, pid int, n_ctx, n_batch,
 *   max_sessions, n_units (layers + head), ring_depth (arena slots),
 *   threads (per worker)
 * proc        a loader, compute worker or the coordinator came up or went down
 *             (loaders and workers are seen in the process table, sampled every
 *             SL_MONITOR_SAMPLE_MS).
 *   role str ("coordinator", "loader", "compute"), rid (index within its role),
 *   pid, state str ("up"; "restarted": up, replacing one of its role that went
 *   down; "down": exited or died), restarts (of that role so far)
 * session     a generation started or ended (published then; a snapshot
 *             restates running ones with n_gen up to date).
 *   id (the client's request id), session (index), state str ("start", "end"),
 *   n_prompt, n_predict, n_gen, finish str ("" while running, else "stop",
 *   "length", "cancel", "error")
 * progress    a prompt being processed: after every step that fed prompt
 *             tokens, and every SL_MONITOR_SAMPLE_MS while one is in flight.
 *   id, session, fed (prompt tokens whose forward pass has finished), total
 *   (prompt tokens), step_tokens (of this session in the step in flight, 0
 *   after the last), units_done, units (of that step: how far it got through
 *   the model's layers and head)
 * step        a forward step finished (one per step: sessions share it).
 *   n (steps so far), seqs (sessions in it), tokens (tokens it fed), ms float
 *   (posted to done), paced_ms float (the delay the thermal governor put
 *   before posting it), bytes (read from storage into ring slots while it
 *   ran), hits (units served from the pinned set), misses (units served from
 *   ring slots), streamed (bytes the plan streams per step), status (0, or
 *   the negative error of a failed step)
 * experts     a step of a mixture-of-experts model finished (after its `step`):
 *             what its routed experts cost (compute/expcache.h).
 *   used (experts the step needed: per layer, each chosen expert once),
 *   hits (held by the expert cache when needed), prefetch_hits (held or
 *   being loaded because a prefetch asked for them), misses (loaded when
 *   needed), prefetched (loads prefetching asked for), wasted (prefetched
 *   experts evicted unused), bytes (of the experts loaders were asked for),
 *   hit_rate float ((hits + prefetch_hits) / used; 1 when none used),
 *   wait_ms float (time the worker waited for experts), slots (of the
 *   expert cache)
 * token       a token was generated.
 *   id, session, seq (the `seq` of the client's token event), tok, n_gen,
 *   ms float (since this request's previous token, or since the request
 *   arrived for its first), bytes, hits, misses (of the step that produced
 *   it, as in `step`)
 * slot        a ring slot changed (sampled every SL_MONITOR_SAMPLE_MS: a
 *             change between two samples is seen once, as the later state).
 *   slot, state str ("free", "wanted", "filling", "ready"), unit (the layer,
 *   or n_units - 1 for the head; -1 when free), holders (workers reading it),
 *   fills (completed fills so far), fill_ms float (the last fill), used bool
 *   (part of the ring of the plan in effect)
 * mem         memory against the budget: at start, after every budget change,
 *             and when the measured footprint changes (sampled every second).
 *   budget, used (what the plan uses: pinned + ring + kv + act), pinned, ring,
 *   kv, act, streamed (bytes streamed per step), min_budget, shm (measured:
 *   bytes the pipeline's shared-memory segments occupy), units_pinned,
 *   ring_slots, reason str ("start", "ctl", "pressure", "sample")
 * budget      a budget change was asked for or finished.
 *   from, to (bytes), source str ("ctl", "pressure"), state str ("pending",
 *   "done", "refused", "failed"), min_budget, error (0 or the sl_err code)
 * pressure    the memory-pressure watcher (Linux PSI): its state, and every
 *             trigger.
 *   state str ("off": disabled; "unavailable": no PSI or no permission;
 *   "watching"; "triggered": a stall over the threshold just happened),
 *   stall_ms, window_ms (the trigger), some_avg10, full_avg10 float (percent
 *   of the last 10 s with some / all tasks stalled on memory), triggers
 *   (so far), action str ("", "shrink", "at minimum")
 * thermal     the thermal governor: on every change, and every second while
 *             it paces.
 *   state str ("off": no limit; "no_zones": none readable; "ok"; "hot":
 *   pacing), temp_c float (hottest zone), limit_c float, zones (readable),
 *   duty float (target fraction of time spent computing, 1 = unpaced),
 *   paced_ms float (total delay added so far)
 * stats       totals, every second (rates are differences of two).
 *   uptime_s float, tokens, steps, loaded_bytes, loaded_units, hits, misses,
 *   restarts, sessions (active), max_sessions, paced_ms float, events (seq of
 *   this event)
 *
 * Rates: one `stats` event per second, not one event per layer or per slot
 * fill: the control plane carries per-token and per-step traffic only
 * (DESIGN.md §1). */
#ifndef SL_COORDINATOR_MONITOR_H
#define SL_COORDINATOR_MONITOR_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/layout.h"
#include "coordinator/plan.h"
#include "proto/endpoint.h"

#define SL_MONITOR_HWM SL_EP_XPUB_HWM /* events queued per subscriber before drops */
#define SL_MONITOR_SAMPLE_MS 100 /* slot, process and progress sampling */
#define SL_MONITOR_STATS_MS 1000 /* stats, mem and thermal period */

typedef struct sl_monitor sl_monitor;

/* The coordinator's identity and configuration (the `config` event). */
typedef struct sl_monitor_config {
    const char *model, *instance;
    uint64_t epoch;
    uint32_t n_ctx, n_batch, max_sessions, n_units, ring_depth, threads;
    bool restarted; /* this coordinator took over from one that died */
} sl_monitor_config;

/* Memory state (the `mem` event). */
typedef struct sl_monitor_mem {
    uint64_t budget, min_budget;
    const sl_plan *plan; /* the plan in effect; read during the call only */
    const char *reason;  /* a string literal */
} sl_monitor_mem;

/* Opens the XPUB socket on `endpoint` in zctx (bind), with the options of
 * "Slow subscribers" and subscriptions passed up. Returns 0 and *out
 * (sl_monitor_close), or a negative error from proto/endpoint.h (logged).
 * Buffers are allocated here, never while publishing. */
int sl_monitor_open(void *zctx, const char *endpoint, sl_monitor **out);

/* Closes the socket and frees everything. NULL accepted. */
void sl_monitor_close(sl_monitor *m);

/* The socket, to poll for ZMQ_POLLIN (subscriptions to read). */
void *sl_monitor_socket(const sl_monitor *m);

/* Reads the subscriptions that arrived and, when one subscribed, publishes
 * a snapshot. Never blocks. */
void sl_monitor_on_readable(sl_monitor *m);

/* Publishes `config` and the coordinator's `proc` (state up, or restarted).
 * Call once, after open. */
void sl_monitor_config_set(sl_monitor *m, const sl_monitor_config *c);

/* Samples the layout (process table, slots, counters) and publishes what
 * changed, stats, and mem when the footprint changed; does the work at
 * most every SL_MONITOR_SAMPLE_MS (cheap to call every loop iteration).
 * `sessions` is the number of active sessions. Never blocks. */
void sl_monitor_tick(sl_monitor *m, const sl_layout *l, uint32_t sessions);

/* Publishes `mem` (and keeps it for snapshots and the footprint samples). */
void sl_monitor_mem_set(sl_monitor *m, const sl_layout *l, const sl_monitor_mem *mem);

/* A session started (n_gen 0, finish NULL) or ended (finish "stop",
 * "length", "cancel" or "error"). */
void sl_monitor_session(sl_monitor *m, uint64_t id, uint32_t session, uint32_t n_prompt, uint32_t n_predict,
                        uint32_t n_gen, const char *finish);

/* A step finished: reads the counters of the layout's board to attribute
 * bytes, hits and misses to it, publishes `step`, and keeps them for the
 * `token` events of this step. */
void sl_monitor_step(sl_monitor *m, const sl_layout *l, uint32_t seqs, uint32_t tokens, double ms, double paced_ms,
                     uint64_t streamed, int status);

/* The expert cache's counts for the last step (the differences of
 * compute/expcache.h's counters over it) and its size: publishes
 * `experts`. Call after sl_monitor_step, for mixture-of-experts models. */
void sl_monitor_experts(sl_monitor *m, const sl_expcache_stats *step, uint32_t slots);

/* A token came out of the last step (call after sl_monitor_step). */
void sl_monitor_token(sl_monitor *m, uint64_t id, uint32_t session, uint64_t seq, int32_t tok, uint32_t n_gen,
                      double ms);

/* Prompt progress of one session (the caller samples it every
 * SL_MONITOR_SAMPLE_MS while a step with prompt tokens is in flight). */
void sl_monitor_progress(sl_monitor *m, uint64_t id, uint32_t session, uint32_t fed, uint32_t total,
                         uint32_t step_tokens, uint32_t units_done, uint32_t units);

/* A budget change: state "pending", "done", "refused" or "failed". */
void sl_monitor_budget(sl_monitor *m, uint64_t from, uint64_t to, const char *source, const char *state,
                       uint64_t min_budget, int err);

/* The pressure watcher's state (string literals; avg in percent). */
typedef struct sl_monitor_pressure {
    const char *state, *action;
    uint32_t stall_ms, window_ms;
    double some_avg10, full_avg10;
    uint64_t triggers;
} sl_monitor_pressure;
void sl_monitor_pressure_set(sl_monitor *m, const sl_monitor_pressure *p);

/* The thermal governor's state (state a string literal). */
typedef struct sl_monitor_thermal {
    const char *state;
    double temp_c, limit_c, duty, paced_ms;
    uint32_t zones;
} sl_monitor_thermal;
void sl_monitor_thermal_set(sl_monitor *m, const sl_monitor_thermal *t);

/* Events published so far (the last seq). */
uint64_t sl_monitor_events(const sl_monitor *m);

#endif
