/* Direct-I/O range reader; see reader.h.
 *
 * Protocol between the caller and the reader threads: the caller (holding
 * req_mu, so one request at a time) publishes the request, sets `pending` to
 * the number of threads and bumps `gen` under `mu`, then broadcasts `wake`.
 * Everybody, the caller included, takes chunk numbers from the atomic
 * counter `next` until they run out; each thread then decrements `pending`,
 * and the one that brings it to zero signals `done`. The caller returns only
 * when `pending` is zero, because until then a thread may still be writing
 * into the caller's buffer. Requests are milliseconds long, so threads block
 * on the condition variable instead of spinning. */
#include "loader/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

struct sl_reader {
    int fd;
    bool direct;
    uint64_t size;
    uint32_t chunk;
    uint32_t n_threads;
    uint32_t flags; /* sl_reader_flags, for reopen */
    char *path; /* for messages */
    pthread_t *threads;

    pthread_mutex_t req_mu; /* serialises requests */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    uint64_t gen;     /* under mu */
    uint32_t pending; /* under mu: threads not yet finished with gen */
    bool stop;        /* under mu */

    /* The current request; written before gen is bumped, read after. */
    uint8_t *buf;
    uint64_t base;     /* file offset of buf[0], aligned */
    uint64_t need_end; /* end of the wanted bytes (file offset) */
    uint64_t span_end; /* aligned end of the span */
    uint64_t n_chunks;
    _Atomic uint64_t next;
    _Atomic int err; /* first error of the request, 0 if none */
};

static atomic_flag g_warned_fallback = ATOMIC_FLAG_INIT;

static uint64_t align_down(uint64_t v)
{
    return v & ~(uint64_t)(SL_READER_ALIGN - 1);
}

sl_reader_opts sl_reader_opts_default(void)
{
    return (sl_reader_opts){
        .n_threads = SL_READER_DEFAULT_THREADS, .chunk = SL_READER_DEFAULT_CHUNK, .flags = 0};
}

size_t sl_reader_span(uint64_t offset, size_t len)
{
    uint64_t start = align_down(offset);
    if (len > UINT64_MAX - offset || offset + len > UINT64_MAX - (SL_READER_ALIGN - 1))
        return 0;
    uint64_t end = align_down(offset + len + SL_READER_ALIGN - 1);
    uint64_t span = end - start;
    return span > SIZE_MAX ? 0 : (size_t)span;
}

/* Reads file bytes [off, off + want) into p, accepting a short read at the
 * end of the file as long as the first `need` bytes arrived. Returns 0 or a
 * logged -SL_EIO. */
static int read_chunk(const sl_reader *r, uint8_t *p, uint64_t off, size_t want, size_t need)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(r->fd, p + got, want - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            SL_ERROR("%s: reading %zu bytes at offset %llu failed: %s%s", r->path, want - got,
                     (unsigned long long)(off + got), strerror(errno), r->direct ? " (direct I/O)" : "");
            return -SL_EIO;
        }
        if (n == 0)
            break; /* end of file */
        got += (size_t)n;
        /* A direct read only stops short of an aligned length at the end of
         * the file; asking again at an unaligned offset would be refused. */
        if (r->direct && got % SL_READER_ALIGN != 0)
            break;
    }
    if (got < need) {
        SL_ERROR("%s ends at byte %llu, before byte %llu that was asked for; it was %llu bytes when opened "
                 "(truncated since?)",
                 r->path, (unsigned long long)(off + got), (unsigned long long)(off + need),
                 (unsigned long long)r->size);
        return -SL_EIO;
    }
    return 0;
}

/* Takes chunks of the current request until none are left. */
static void drain(sl_reader *r)
{
    for (;;) {
        uint64_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
        if (i >= r->n_chunks)
            return;
        if (atomic_load_explicit(&r->err, memory_order_relaxed))
            continue; /* the request has failed; skip the rest */
        uint64_t start = r->base + i * r->chunk;
        uint64_t end = r->span_end - start < r->chunk ? r->span_end : start + r->chunk;
        uint64_t need = (r->need_end < end ? r->need_end : end) - start;
        int rc = read_chunk(r, r->buf + (start - r->base), start, (size_t)(end - start), (size_t)need);
        if (rc) {
            int zero = 0;
            atomic_compare_exchange_strong(&r->err, &zero, rc);
        }
    }
}

static void *thread_main(void *arg)
{
    sl_reader *r = arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->gen == seen && !r->stop)
            pthread_cond_wait(&r->wake, &r->mu);
        if (r->stop) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        seen = r->gen;
        pthread_mutex_unlock(&r->mu);

        drain(r);

        pthread_mutex_lock(&r->mu);
        if (--r->pending == 0)
            pthread_cond_signal(&r->done);
        pthread_mutex_unlock(&r->mu);
    }
}

/* Opens the file, checks that it is a regular one and records its size;
 * then switches to an O_DIRECT descriptor when allowed and working. A file
 * system may refuse O_DIRECT at open (EINVAL) or only at the first read, so
 * a direct descriptor is confirmed with one aligned read. */
static int open_file(sl_reader *r, uint32_t flags)
{
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        SL_ERROR("cannot open %s: %s", r->path, strerror(errno));
        return -SL_EIO;
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        SL_ERROR("cannot stat %s: %s", r->path, strerror(errno));
        return -SL_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        SL_ERROR("%s is not a regular file", r->path);
        return -SL_EIO;
    }
    r->size = (uint64_t)st.st_size;
    if (flags & SL_READER_BUFFERED)
        return 0;

    int fd = (flags & SL_READER_SIMULATE_NO_DIRECT) ? (errno = EINVAL, -1)
                                                    : open(r->path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    int direct_errno = errno;
    if (fd >= 0) {
        void *probe = aligned_alloc(SL_READER_ALIGN, SL_READER_ALIGN);
        if (!probe) {
            close(fd);
            SL_ERROR("out of memory");
            return -SL_ENOMEM;
        }
        ssize_t n;
        do
            n = pread(fd, probe, SL_READER_ALIGN, 0);
        while (n < 0 && errno == EINTR);
        direct_errno = errno;
        free(probe);
        if (n >= 0) {
            close(r->fd);
            r->fd = fd;
            r->direct = true;
            return 0;
        }
        close(fd);
    }
    if (direct_errno != EINVAL) {
        SL_ERROR("%s: opening or reading it with O_DIRECT failed: %s", r->path, strerror(direct_errno));
        return -SL_EIO;
    }
    if (!atomic_flag_test_and_set(&g_warned_fallback))
        SL_WARN("the file system of %s does not support direct I/O (O_DIRECT); reading through the page "
                "cache instead, so memory use will exceed the budget by the cached bytes (warned once)",
                r->path);
    return 0;
}

int sl_reader_open(const char *path, const sl_reader_opts *opts, sl_reader **out)
{
    *out = NULL;
    sl_reader_opts o = opts ? *opts : sl_reader_opts_default();
    if (!path || o.chunk < SL_READER_ALIGN || o.chunk > SL_READER_MAX_CHUNK || o.chunk % SL_READER_ALIGN ||
        o.n_threads > SL_READER_MAX_THREADS ||
        (o.flags & ~(uint32_t)(SL_READER_BUFFERED | SL_READER_SIMULATE_NO_DIRECT))) {
        SL_ERROR(
            "bad options: path %s, chunk %u (a multiple of %u up to %u), %u threads (at most %u), flags %#x",
            path ? path : "(null)", o.chunk, SL_READER_ALIGN, SL_READER_MAX_CHUNK, o.n_threads,
            SL_READER_MAX_THREADS, o.flags);
        return -SL_EINVAL;
    }
    sl_reader *r = calloc(1, sizeof *r);
    char *p = strdup(path);
    pthread_t *th = o.n_threads ? calloc(o.n_threads, sizeof *th) : NULL;
    if (!r || !p || (o.n_threads && !th)) {
        free(r);
        free(p);
        free(th);
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    r->fd = -1;
    r->path = p;
    r->threads = th;
    r->chunk = o.chunk;
    r->flags = o.flags;
    pthread_mutex_init(&r->req_mu, NULL);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->wake, NULL);
    pthread_cond_init(&r->done, NULL);

    int rc = open_file(r, o.flags);
    if (rc) {
        sl_reader_close(r);
        return rc;
    }
    for (uint32_t i = 0; i < o.n_threads; i++) {
        int err = pthread_create(&r->threads[i], NULL, thread_main, r);
        if (err) {
            SL_ERROR("starting reader thread %u of %u failed: %s", i + 1, o.n_threads, strerror(err));
            sl_reader_close(r);
            return -SL_EIO;
        }
        r->n_threads = i + 1;
    }
    *out = r;
    return 0;
}

int sl_reader_reopen(sl_reader *r, const char *path)
{
    char *p = strdup(path);
    if (!p) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    pthread_mutex_lock(&r->req_mu);
    if (r->fd >= 0)
        close(r->fd);
    free(r->path);
    r->path = p;
    r->fd = -1;
    r->size = 0; /* until the open succeeds, every range is past the end */
    r->direct = false;
    int rc = open_file(r, r->flags);
    if (rc && r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
        r->size = 0;
    }
    pthread_mutex_unlock(&r->req_mu);
    return rc;
}

void sl_reader_close(sl_reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->mu);
    for (uint32_t i = 0; i < r->n_threads; i++)
        pthread_join(r->threads[i], NULL);
    pthread_cond_destroy(&r->done);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->req_mu);
    if (r->fd >= 0)
        close(r->fd);
    free(r->threads);
    free(r->path);
    free(r);
}

uint64_t sl_reader_size(const sl_reader *r)
{
    return r->size;
}

bool sl_reader_direct(const sl_reader *r)
{
    return r->direct;
}

int sl_reader_read(sl_reader *r, uint64_t offset, size_t len, void *buf, size_t buf_size, size_t *skip)
{
    if (!buf || !skip || len == 0 || (uintptr_t)buf % SL_READER_ALIGN != 0) {
        SL_ERROR("%s: bad request: buffer %p (must be %u-aligned), length %zu", r->path, buf, SL_READER_ALIGN,
                 len);
        return -SL_EINVAL;
    }
    if (offset > r->size || len > r->size - offset) {
        SL_ERROR("%s: range [%llu, %llu + %zu) ends past the end of the file (%llu bytes)", r->path,
                 (unsigned long long)offset, (unsigned long long)offset, len, (unsigned long long)r->size);
        return -SL_ERANGE;
    }
    size_t span = sl_reader_span(offset, len);
    if (span == 0 || buf_size < span) {
        SL_ERROR("%s: reading [%llu, %llu) needs a buffer of %zu bytes (the aligned span), got %zu", r->path,
                 (unsigned long long)offset, (unsigned long long)(offset + len), span, buf_size);
        return -SL_EINVAL;
    }

    pthread_mutex_lock(&r->req_mu);
    r->buf = buf;
    r->base = align_down(offset);
    r->need_end = offset + len;
    r->span_end = r->base + span;
    r->n_chunks = (span + r->chunk - 1) / r->chunk;
    atomic_store_explicit(&r->next, 0, memory_order_relaxed);
    atomic_store_explicit(&r->err, 0, memory_order_relaxed);

    if (r->n_chunks == 1 || r->n_threads == 0) {
        drain(r);
    } else {
        pthread_mutex_lock(&r->mu);
        r->pending = r->n_threads;
        r->gen++;
        pthread_cond_broadcast(&r->wake);
        pthread_mutex_unlock(&r->mu);

        drain(r);

        pthread_mutex_lock(&r->mu);
        while (r->pending)
            pthread_cond_wait(&r->done, &r->mu);
        pthread_mutex_unlock(&r->mu);
    }
    int rc = atomic_load_explicit(&r->err, memory_order_relaxed);
    pthread_mutex_unlock(&r->req_mu);
    *skip = (size_t)(offset - align_down(offset));
    return rc;
}
