/* A client of a coordinator for one generate request at a time, with
 * Lazy Pirate retries (DESIGN.md §3): the way to talk to a pipeline whose
 * coordinator may be killed and restarted at any moment.
 *
 * The request is sent on a DEALER socket. When nothing of it has been heard
 * for a while (retry_s at first, or twice the last gap between two token
 * events when that is longer; doubling up to 8 x retry_s while nothing
 * comes), the client closes the socket, opens a new one, and sends the
 * same request again (same id) with resume_from = the seq of the first
 * token event it still lacks, plus a `status` probe. The coordinator
 * recognises the id: it carries on with the running (or finished, or,
 * after a restart, resumed) request and sends the events from resume_from
 * on; a coordinator that no longer knows the request starts it again and
 * skips the events the client has. Token events are handed to the caller
 * in seq order, each once: a duplicate (seq already delivered) or an event
 * from an earlier socket is dropped. The status probe tells a slow
 * coordinator (alive, answering) from a gone one: the client gives up only
 * after give_up_s without any message at all.
 *
 * Request ids must be unique among all clients of a coordinator, not only
 * among one client's requests: a restarted coordinator no longer knows which
 * client a request came from (socket identities do not survive it), so it
 * tells requests apart by id alone (e.g. pid and a counter, or 63 random
 * bits).
 *
 * Not thread-safe (one thread per client); no allocation after
 * sl_client_new except what libzmq does when a socket is reopened. */
#ifndef SL_PROTO_CLIENT_H
#define SL_PROTO_CLIENT_H

#include <stdint.h>

#include "proto/msg.h"

typedef struct sl_client_opts {
    double retry_s;   /* silence before the first resend; 0: SL_CLIENT_RETRY_S */
    double give_up_s; /* silence (not even a probe's reply) before giving up; 0: SL_CLIENT_GIVE_UP_S */
} sl_client_opts;

#define SL_CLIENT_RETRY_S 1.0
#define SL_CLIENT_GIVE_UP_S 15.0

typedef struct sl_client sl_client;

/* What a client has seen so far. */
typedef struct sl_client_stats {
    uint32_t resends;  /* times the request was sent again on a new socket */
    uint32_t restarts; /* coordinator epoch changes seen in probe replies */
} sl_client_stats;

/* A client of the coordinator at `endpoint` (a ZeroMQ address), in zctx.
 * opts may be NULL (defaults). Returns 0 and the handle in *out (free with
 * sl_client_free); -SL_ENOMEM, or the error of sl_endpoint_open (logged).
 * Does not block. */
int sl_client_new(void *zctx, const char *endpoint, const sl_client_opts *opts, sl_client **out);

/* Closes the socket and frees the handle. NULL accepted. */
void sl_client_free(sl_client *c);

/* Starts the generate request *req (type SL_MSG_GENERATE, id >= 1). The
 * client keeps a copy of *req; what it points to (prompt text or tokens)
 * must stay valid until the request has ended. Returns 0, or -SL_EINVAL
 * (logged) for another message type or a message that cannot be packed.
 * Does not block. */
int sl_client_start(sl_client *c, const sl_msg *req);

/* Waits up to timeout_ms for the request's next event and retries as
 * described above. Returns 1 with *ev filled: a `token` event (the next
 * seq; the last one has finish != NONE), or an `error` reply to the
 * request; *ev points into the client's buffer, valid until the next call.
 * Returns 0 when nothing came within timeout_ms; -SL_EIO (logged, with the
 * endpoint) when nothing at all was heard for give_up_s; -SL_EINVAL when no
 * request was started. Blocks for at most about timeout_ms. */
int sl_client_next(sl_client *c, int timeout_ms, sl_msg *ev);

/* Counters for the caller's report. */
sl_client_stats sl_client_get_stats(const sl_client *c);

#endif
