/* The gateway's side of the coordinator protocol (proto/msg.h).
 *
 * One background thread keeps a DEALER to the coordinator for what is not
 * tied to one HTTP request: a `status` request every second (its reply says
 * whether the coordinator is up, how many sessions it runs at once, its
 * context length; a changed epoch is a restart) and the `cancel` messages
 * of requests whose client went away. With a monitor endpoint it also
 * subscribes to the coordinator's `stats` and `step` events
 * (coordinator/monitor.h), for /metrics. A socket that gets no reply for a while is closed and opened
 * again (Lazy Pirate), so a restarted coordinator is found again.
 *
 * Everything tied to one request runs in the caller's thread on sockets of
 * its own: generation through proto/client.h (which resends after silence
 * and resumes after a coordinator restart), tokenize and detokenize
 * through sl_backend_call. All functions are thread-safe. */
#ifndef SL_GATEWAY_BACKEND_H
#define SL_GATEWAY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/client.h"
#include "proto/msg.h"

typedef struct sl_backend sl_backend;

/* What the gateway knows of the coordinator. */
typedef struct sl_backend_status {
    bool up;      /* a status reply came within the last few seconds */
    bool ever_up; /* one came at some point */
    char model[SL_PROTO_MAX_NAME + 1];
    uint32_t n_ctx, n_vocab, sessions, max_sessions, loaders, workers;
    uint64_t mem_budget, mem_used, pinned, epoch;
    uint64_t restarts; /* epoch changes seen: coordinator restarts */
    /* From the monitor's events (coordinator/monitor.h); all 0 without a
     * monitor endpoint. The `stats` totals restart from 0 with the
     * coordinator. */
    bool monitored;          /* a stats event came */
    uint64_t steps;          /* stats.steps: forward steps */
    uint64_t tokens;         /* stats.tokens: tokens generated */
    uint64_t loaded_bytes;   /* stats.loaded_bytes: weight bytes read from storage into slots */
    uint64_t hits, misses;   /* stats: units served from the pinned set / from ring slots */
    uint64_t proc_restarts;  /* stats.restarts: pipeline processes restarted */
    uint64_t step_events;    /* step events seen by this gateway ... */
    uint64_t step_seqs;      /* ... and the sum of their seqs (sessions per step) */
} sl_backend_status;

/* Connects to the coordinator's client endpoint (and, when monitor is not
 * NULL, its monitor endpoint) and starts the thread. Returns 0 and the
 * handle in *out, or -SL_ENOMEM / -SL_EIO / -SL_EINVAL (logged: a bad
 * endpoint). Does not wait for the coordinator to answer. */
int sl_backend_new(const char *endpoint, const char *monitor, sl_backend **out);

/* Stops the thread, closes the sockets, frees the handle. NULL accepted.
 * Blocks for at most one poll interval. */
void sl_backend_free(sl_backend *b);

/* Copies the latest status into *out. Never blocks for long. */
void sl_backend_status_get(sl_backend *b, sl_backend_status *out);

/* A request id no other client of the coordinator uses (random high bits,
 * then a counter), never 0. */
uint64_t sl_backend_new_id(sl_backend *b);

/* Sends *req (its id is set here) and waits for its reply: a message with
 * the same id (its reply type, or an `error`). Resends on a new socket
 * after silence; gives up after timeout_s. On success returns 0 with *reply
 * filled: it points into *buf, a malloc'd buffer the caller frees. Returns
 * -SL_EIO when the coordinator did not answer in time (logged), -SL_ENOMEM
 * or a packing error. Blocks. */
int sl_backend_call(sl_backend *b, sl_msg *req, uint8_t **buf, sl_msg *reply, double timeout_s);

/* Starts a generate request (its id is set here) on a client of its own
 * (proto/client.h); the caller reads its events with sl_client_next and
 * frees it with sl_client_free. What *req points to must stay valid until
 * the generation ends. Returns 0 or the error of sl_client_new/start.
 * Does not block. */
int sl_backend_generate(sl_backend *b, sl_msg *req, sl_client **out);

/* Asks the coordinator to stop generation `id` (sent by the background
 * thread; the generation's last event, finish "cancel", goes to its own
 * client). Never blocks; never fails (a cancel that cannot be queued is
 * logged and dropped). */
void sl_backend_cancel(sl_backend *b, uint64_t id);

#endif
