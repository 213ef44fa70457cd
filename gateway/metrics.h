/* The gateway's counters and GET /metrics in Prometheus' text format
 * (version 0.0.4).
 *
 * The llamacpp: metrics are those llama.cpp's server exposes, with the same
 * names and meanings, so that dashboards made for it work: prompt and
 * generated tokens and the seconds spent on them (from the requests this
 * gateway served locally), decode calls (pipeline steps) and sequences per
 * step (from the coordinator's monitor events), requests processing and
 * deferred (waiting for a session), KV-cache tokens and usage. The sluice_
 * metrics are sluice's own: weight bytes streamed from storage, the share of
 * weight units steps found in memory (the weight cache's hit rate), session
 * occupancy, process and coordinator restarts, forwarded, cancelled and
 * failed requests, and the coordinator's state. Those that come from the
 * coordinator's monitor stream are 0 when the gateway has no monitor
 * endpoint. */
#ifndef SL_GATEWAY_METRICS_H
#define SL_GATEWAY_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "gateway/backend.h"
#include "gateway/jbuf.h"

typedef struct sl_metrics {
    pthread_mutex_t mu;
    uint64_t prompt_tokens, predicted_tokens;
    double prompt_s, predicted_s;
    uint64_t http_requests, http_errors; /* responses, and those with status >= 400 */
    uint64_t forwarded;                  /* served by the fallback endpoint */
    uint64_t cancelled;                  /* generations stopped because the client left */
    uint64_t sse_bytes;                  /* bytes of server-sent events written */
    /* gauges, set by the server */
    uint32_t processing, deferred;
    uint64_t kv_tokens; /* tokens in the context of local generations now */
} sl_metrics;

/* Initialises *m (all zero). Never fails. */
void sl_metrics_init(sl_metrics *m);
void sl_metrics_destroy(sl_metrics *m);

/* A locally served generation finished: its prompt and generated tokens,
 * and the seconds each took. Thread-safe; does not block for long. */
void sl_metrics_generation(sl_metrics *m, uint32_t prompt_tokens, double prompt_s, uint32_t predicted_tokens,
                           double predicted_s);

/* Adds `delta` to the counter (or gauge) at *field, under the lock. */
void sl_metrics_add(sl_metrics *m, uint64_t *field, int64_t delta);
void sl_metrics_add32(sl_metrics *m, uint32_t *field, int32_t delta);

/* Appends the whole exposition: the counters of m and the coordinator's
 * state st. */
void sl_metrics_render(sl_metrics *m, const sl_backend_status *st, sl_jbuf *out);

#endif
