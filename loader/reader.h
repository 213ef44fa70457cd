/* Reads byte ranges of a file with direct I/O, for the loaders.
 *
 * Weights go from storage into shared-memory slots without passing through
 * the page cache (DESIGN.md §2), so that the memory budget is the real
 * footprint. Direct I/O (O_DIRECT) wants the file offset, the length and the
 * buffer address aligned to the device's block size; the reader uses
 * SL_READER_ALIGN (4 KiB), which covers every common device. A request for
 * [offset, offset + len) is therefore served by reading the aligned span
 *     [offset rounded down to 4 KiB, offset + len rounded up to 4 KiB)
 * into the caller's aligned buffer; the wanted bytes start `skip` bytes into
 * it (skip = offset % 4 KiB). Bytes of the span outside the wanted range are
 * file bytes too, except past the end of the file, where they are
 * unspecified.
 *
 * One device queue is rarely saturated by one outstanding read, so a large
 * request is cut into chunks (SL_READER_DEFAULT_CHUNK) that a few threads
 * owned by the reader read with pread(2) at the same time; the calling
 * thread reads chunks too and returns when all are in. A request of one
 * chunk is read by the caller alone, with no thread hand-off.
 *
 * When the file system refuses O_DIRECT (ramfs, some FUSE and network file
 * systems), the reader warns once per process and falls back to ordinary
 * buffered reads behind the same interface and alignment rules.
 *
 * Nothing is allocated per request: the buffers are the caller's
 * (aligned_alloc(SL_READER_ALIGN, sl_reader_span(...)), a page-aligned
 * shared-memory slot, ...). Requests on one reader are served one at a
 * time; concurrent callers are serialised. */
#ifndef SL_LOADER_READER_H
#define SL_LOADER_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Alignment of buffers, offsets and lengths for direct I/O. */
#define SL_READER_ALIGN 4096u

/* Default bytes per pread(2) and default reader threads (besides the
 * caller): bench/RESULTS.md has the measurements behind them. */
#define SL_READER_DEFAULT_CHUNK (1u << 20)
#define SL_READER_DEFAULT_THREADS 3u

/* Largest accepted chunk size and thread count. */
#define SL_READER_MAX_CHUNK (64u << 20)
#define SL_READER_MAX_THREADS 64u

enum sl_reader_flags {
    /* Do not try O_DIRECT: buffered reads (page cache), e.g. to compare. */
    SL_READER_BUFFERED = 1u << 0,
    /* For tests: act as if the file system refused O_DIRECT, so that the
     * fallback (warning, buffered reads) runs where O_DIRECT works. */
    SL_READER_SIMULATE_NO_DIRECT = 1u << 1,
};

typedef struct sl_reader_opts {
    uint32_t n_threads; /* reader threads besides the caller; 0: none, all reads on the caller */
    uint32_t chunk;     /* bytes per pread, a multiple of SL_READER_ALIGN in [ALIGN, MAX_CHUNK] */
    uint32_t flags;     /* sl_reader_flags */
} sl_reader_opts;

/* The defaults: SL_READER_DEFAULT_THREADS threads, SL_READER_DEFAULT_CHUNK,
 * no flags. */
sl_reader_opts sl_reader_opts_default(void);

typedef struct sl_reader sl_reader;

/* Opens `path` for reading (opts NULL: the defaults) and starts the reader
 * threads. Tries O_DIRECT and, when the file system refuses it, falls back
 * to buffered reads with one warning per process. Returns 0 and the reader
 * in *out (owned by the caller: sl_reader_close), or, logged, with *out
 * NULL: -SL_EINVAL (bad options), -SL_EIO (open, fstat or a probe read
 * failed; not a regular file), -SL_ENOMEM. Blocks on the open. */
int sl_reader_open(const char *path, const sl_reader_opts *opts, sl_reader **out);

/* Switches the reader to the file at `path`, keeping its options and
 * threads: for callers that read many files in turn (a packed model's
 * shards, loader/shard.h) without starting threads per file. Returns 0, or
 * the errors of sl_reader_open (logged); after a failure the reader has no
 * file and every read fails until a reopen succeeds. Blocks on the open;
 * serialised with reads. */
int sl_reader_reopen(sl_reader *r, const char *path);

/* Stops the threads, closes the file and frees the reader. NULL is
 * accepted. No request may be in progress. */
void sl_reader_close(sl_reader *r);

/* Size of the file in bytes when it was opened. Never fails. */
uint64_t sl_reader_size(const sl_reader *r);

/* Whether reads bypass the page cache (O_DIRECT in use). Never fails. */
bool sl_reader_direct(const sl_reader *r);

/* Bytes of buffer needed to read [offset, offset + len): the length of the
 * aligned span described at the top, or 0 when it does not fit in size_t.
 * Pure; never fails. */
size_t sl_reader_span(uint64_t offset, size_t len);

/* Reads the aligned span around [offset, offset + len) into buf and stores
 * in *skip where the byte at `offset` landed (buf + *skip). buf must be
 * SL_READER_ALIGN-aligned and buf_size at least sl_reader_span(offset, len).
 * Returns 0, or, logged with the offsets, nothing promised about buf:
 * -SL_EINVAL (misaligned or short buffer, len 0), -SL_ERANGE (the range
 * ends past the end of the file as opened), -SL_EIO (a read failed, or the
 * file ended early: it was truncated after it was opened). Blocks until
 * every byte is in; allocates nothing; serialised with other calls on the
 * same reader. */
int sl_reader_read(sl_reader *r, uint64_t offset, size_t len, void *buf, size_t buf_size, size_t *skip);

#endif
