/* Gateway counters and their Prometheus exposition; see metrics.h. */
#include "gateway/metrics.h"

#include <string.h>

void sl_metrics_init(sl_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void sl_metrics_destroy(sl_metrics *m) { pthread_mutex_destroy(&m->mu); }

void sl_metrics_generation(sl_metrics *m, uint32_t prompt_tokens, double prompt_s, uint32_t predicted_tokens,
                           double predicted_s)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt_tokens;
    m->prompt_s += prompt_s > 0 ? prompt_s : 0;
    m->predicted_tokens += predicted_tokens;
    m->predicted_s += predicted_s > 0 ? predicted_s : 0;
    pthread_mutex_unlock(&m->mu);
}

void sl_metrics_add(sl_metrics *m, uint64_t *field, int64_t delta)
{
    pthread_mutex_lock(&m->mu);
    *field += (uint64_t)delta;
    pthread_mutex_unlock(&m->mu);
}

void sl_metrics_add32(sl_metrics *m, uint32_t *field, int32_t delta)
{
    pthread_mutex_lock(&m->mu);
    *field += (uint32_t)delta;
    pthread_mutex_unlock(&m->mu);
}

static void metric(sl_jbuf *b, const char *name, const char *type, const char *help, double v)
{
    sl_jbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s ", name, help, name, type, name);
    sl_jbuf_num(b, v);
    sl_jbuf_puts(b, "\n");
}

void sl_metrics_render(sl_metrics *m, const sl_backend_status *st, sl_jbuf *b)
{
    pthread_mutex_lock(&m->mu);
    sl_metrics c = *m;
    pthread_mutex_unlock(&m->mu);
    const double ctx = (double)st->n_ctx * st->max_sessions;

    metric(b, "llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.",
           (double)c.prompt_tokens);
    metric(b, "llamacpp:prompt_seconds_total", "counter", "Prompt process time", c.prompt_s);
    metric(b, "llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.",
           (double)c.predicted_tokens);
    metric(b, "llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time", c.predicted_s);
    metric(b, "llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls (pipeline steps)",
           (double)st->steps);
    metric(b, "llamacpp:n_busy_slots_per_decode", "gauge",
           "Average number of busy slots per llama_decode() call (sequences per step)",
           st->step_events ? (double)st->step_seqs / st->step_events : 0);
    metric(b, "llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
           c.prompt_s > 0 ? c.prompt_tokens / c.prompt_s : 0);
    metric(b, "llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
           c.predicted_s > 0 ? c.predicted_tokens / c.predicted_s : 0);
    metric(b, "llamacpp:kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.",
           ctx > 0 ? c.kv_tokens / ctx : 0);
    metric(b, "llamacpp:kv_cache_tokens", "gauge", "KV-cache tokens.", (double)c.kv_tokens);
    metric(b, "llamacpp:requests_processing", "gauge", "Number of requests processing.", c.processing);
    metric(b, "llamacpp:requests_deferred", "gauge", "Number of requests deferred.", c.deferred);

    metric(b, "sluice_bytes_streamed_total", "counter",
           "Weight bytes read from storage into the pipeline's streaming slots.", (double)st->loaded_bytes);
    metric(b, "sluice_cache_hit_ratio", "gauge",
           "Share of the weight units steps used that were in memory (pinned) rather than streamed.",
           st->hits + st->misses ? (double)st->hits / (double)(st->hits + st->misses) : 0);
    metric(b, "sluice_slot_occupancy_ratio", "gauge", "Coordinator sessions (slots) in use over sessions allowed.",
           st->max_sessions ? (double)st->sessions / st->max_sessions : 0);
    metric(b, "sluice_sessions", "gauge", "Coordinator sessions in use.", st->sessions);
    metric(b, "sluice_sessions_max", "gauge", "Sessions the coordinator's budget allows.", st->max_sessions);
    metric(b, "sluice_restarts_total", "counter", "Pipeline processes restarted (loaders, workers).",
           (double)st->proc_restarts);
    metric(b, "sluice_coordinator_restarts_total", "counter", "Coordinator restarts seen (epoch changes).",
           (double)st->restarts);
    metric(b, "sluice_coordinator_up", "gauge", "1 when the coordinator answers.", st->up ? 1 : 0);
    metric(b, "sluice_loaders", "gauge", "Loader processes registered.", st->loaders);
    metric(b, "sluice_workers", "gauge", "Compute workers registered.", st->workers);
    metric(b, "sluice_mem_budget_bytes", "gauge", "The pipeline's memory budget.", (double)st->mem_budget);
    metric(b, "sluice_mem_used_bytes", "gauge", "Bytes the pipeline's plan uses.", (double)st->mem_used);
    metric(b, "sluice_pinned_bytes", "gauge", "Weight bytes pinned in memory.", (double)st->pinned);
    metric(b, "sluice_http_requests_total", "counter", "HTTP responses sent.", (double)c.http_requests);
    metric(b, "sluice_http_errors_total", "counter", "HTTP responses with a status of 400 or more.",
           (double)c.http_errors);
    metric(b, "sluice_fallback_requests_total", "counter", "Requests served by the fallback endpoint.",
           (double)c.forwarded);
    metric(b, "sluice_cancelled_requests_total", "counter", "Generations stopped because their client left.",
           (double)c.cancelled);
    metric(b, "sluice_sse_bytes_total", "counter", "Bytes of server-sent events written to clients.",
           (double)c.sse_bytes);
}
