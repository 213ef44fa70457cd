/* Forwarding to a fallback endpoint with libcurl's multi interface, driven
 * from the caller's thread; see fallback.h. */
#include "gateway/fallback.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

#define PAUSE_ABOVE (1u << 20) /* buffered body bytes before the transfer is paused */
#define CONNECT_TIMEOUT_MS 10000L

struct sl_fwd {
    CURLM *multi;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *buf; /* received body bytes not yet read */
    size_t len, cap;
    bool paused, done, headers_done;
    CURLcode result;
    long status;
    char content_type[128];
    char errbuf[CURL_ERROR_SIZE];
};

int sl_fwd_global_init(void)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        SL_ERROR("curl_global_init: %s", curl_easy_strerror(rc));
        return -SL_EIO;
    }
    return 0;
}

void sl_fwd_global_cleanup(void) { curl_global_cleanup(); }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    sl_fwd *f = arg;
    size_t bytes = size * n;
    f->headers_done = true;
    if (f->len >= PAUSE_ABOVE) {
        f->paused = true;
        return CURL_WRITEFUNC_PAUSE; /* libcurl keeps these bytes and offers them again */
    }
    if (f->len + bytes > f->cap) {
        size_t cap = f->cap ? f->cap : 16384;
        while (cap < f->len + bytes)
            cap *= 2;
        char *p = realloc(f->buf, cap);
        if (!p)
            return 0; /* fails the transfer */
        f->buf = p;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, data, bytes);
    f->len += bytes;
    return bytes;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    sl_fwd *f = arg;
    size_t bytes = size * n;
    /* The blank line after a final (not 1xx) status's headers. */
    if (bytes <= 2 && (data[0] == '\r' || data[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200)
            f->headers_done = true;
    }
    return bytes;
}

/* Runs the transfer for up to timeout_ms or until `until` holds. */
static void drive(sl_fwd *f, int timeout_ms, bool (*until)(const sl_fwd *))
{
    const double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        int running = 0;
        curl_multi_perform(f->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(f->multi, &left)))
            if (msg->msg == CURLMSG_DONE) {
                f->done = true;
                f->result = msg->data.result;
            }
        if (f->done || until(f))
            break;
        double rest = deadline - now_s();
        if (rest <= 0)
            break;
        curl_multi_poll(f->multi, NULL, 0, (int)(rest * 1000) + 1, NULL);
    }
    if (f->headers_done || f->done) {
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &f->status);
        char *ct = NULL;
        curl_easy_getinfo(f->easy, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(f->content_type, sizeof f->content_type, "%s", ct ? ct : "application/json");
    }
}

static bool have_headers(const sl_fwd *f) { return f->headers_done; }
static bool have_body(const sl_fwd *f) { return f->len > 0; }

static int headers_result(sl_fwd *f, char *err, size_t err_size)
{
    if (f->done && f->result != CURLE_OK) {
        snprintf(err, err_size, "%s", f->errbuf[0] ? f->errbuf : curl_easy_strerror(f->result));
        return -SL_EIO;
    }
    if (f->headers_done || f->done)
        return 0;
    snprintf(err, err_size, "no response yet");
    return -SL_EAGAIN;
}

int sl_fwd_start(const char *base_url, const char *path, const char *key, const char *body, size_t len,
                 int timeout_ms, sl_fwd **out, char *err, size_t err_size)
{
    *out = NULL;
    sl_fwd *f = calloc(1, sizeof *f);
    char *url = NULL, *auth = NULL;
    if (!f || !(f->body = malloc(len + 1)) || !(url = malloc(strlen(base_url) + strlen(path) + 1)) ||
        (key && !(auth = malloc(strlen(key) + 32)))) {
        snprintf(err, err_size, "out of memory");
        free(url);
        sl_fwd_free(f);
        return -SL_ENOMEM;
    }
    memcpy(f->body, body, len);
    /* base_url without a trailing slash, then the path. */
    size_t bl = strlen(base_url);
    while (bl && base_url[bl - 1] == '/')
        bl--;
    memcpy(url, base_url, bl);
    strcpy(url + bl, path);
    f->multi = curl_multi_init();
    f->easy = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    f->headers = h;
    if (h)
        h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    if (h && auth) {
        sprintf(auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    free(auth);
    if (!f->multi || !f->easy || !h) {
        snprintf(err, err_size, "cannot set up libcurl");
        free(url);
        sl_fwd_free(f);
        return -SL_ENOMEM;
    }
    CURL *e = f->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, f->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS time-outs */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice-gateway");
    CURLMcode mc = curl_multi_add_handle(f->multi, e);
    free(url); /* libcurl copied it */
    if (mc != CURLM_OK) {
        snprintf(err, err_size, "%s", curl_multi_strerror(mc));
        sl_fwd_free(f);
        return -SL_EIO;
    }
    int rc = sl_fwd_wait_headers(f, timeout_ms, err, err_size);
    if (rc == -SL_EIO) {
        sl_fwd_free(f);
        return rc;
    }
    *out = f;
    return rc;
}

int sl_fwd_wait_headers(sl_fwd *f, int timeout_ms, char *err, size_t err_size)
{
    drive(f, timeout_ms, have_headers);
    return headers_result(f, err, err_size);
}

long sl_fwd_status(const sl_fwd *f) { return f->status; }

const char *sl_fwd_content_type(const sl_fwd *f) { return f->content_type[0] ? f->content_type : "application/json"; }

ssize_t sl_fwd_read(sl_fwd *f, char *buf, size_t cap, int timeout_ms)
{
    if (!f->len && !f->done)
        drive(f, timeout_ms, have_body);
    if (f->len) {
        size_t n = f->len < cap ? f->len : cap;
        memcpy(buf, f->buf, n);
        memmove(f->buf, f->buf + n, f->len - n);
        f->len -= n;
        if (f->paused && f->len < PAUSE_ABOVE / 2) {
            f->paused = false;
            curl_easy_pause(f->easy, CURLPAUSE_CONT);
        }
        return (ssize_t)n;
    }
    if (!f->done)
        return -SL_EAGAIN;
    if (f->result != CURLE_OK) {
        SL_ERROR("forwarding to the fallback endpoint failed: %s",
                 f->errbuf[0] ? f->errbuf : curl_easy_strerror(f->result));
        return -SL_EIO;
    }
    return 0;
}

void sl_fwd_free(sl_fwd *f)
{
    if (!f)
        return;
    if (f->multi && f->easy)
        curl_multi_remove_handle(f->multi, f->easy);
    if (f->easy)
        curl_easy_cleanup(f->easy);
    if (f->multi)
        curl_multi_cleanup(f->multi);
    curl_slist_free_all(f->headers);
    free(f->body);
    free(f->buf);
    free(f);
}
