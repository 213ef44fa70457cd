/* Named shared-memory segments with a versioned header (DESIGN.md §2).
 *
 * Every piece of state that outlives a process (slot states and weights, KV
 * cache, activations, process table, sessions) lives in a segment named
 * `/sluice-<instance>-<kind>`. The coordinator creates and sizes the
 * segments; loaders, workers and a restarted coordinator attach to them.
 * A segment starts with the header below and holds a small directory of
 * named regions (e.g. the ctl segment: "procs" and "slots"), each 4 KiB
 * aligned so that direct I/O can read into them. What a region contains is
 * defined by the module that owns it, which puts its own magic and version
 * at the region's start.
 *
 * Life cycle:
 *   creator:  sl_seg_create -> format the regions -> sl_seg_publish
 *             ... sl_seg_remove on clean shutdown.
 *   attacher: sl_seg_attach (validates everything before trusting it)
 *             ... sl_seg_close.
 *   restart:  a new coordinator attaches to the segments of a dead one and
 *             takes them over with sl_seg_adopt, or removes them (sl_seg_clean)
 *             and creates new ones.
 *
 * Publication is atomic: a segment is built under a private temporary name
 * (`/sluice-<instance>-<kind>~<pid>`), its magic is stored last with release
 * ordering, and only then is it linked under its real name (failing if that
 * name exists, like O_EXCL). An attacher therefore never sees a half-written
 * header; it still loads the magic with acquire ordering and refuses a
 * segment whose magic is missing.
 *
 * Memory safety: attach reads the header with pread (never through a
 * mapping), checks every size and offset against the object's actual size,
 * and maps exactly that size, so a truncated, resized or foreign object is
 * refused with a message, never faulted on. (A process of the same user that
 * truncates a segment *after* others mapped it can still make them fault;
 * segments are created mode 0600, so only the user's own processes can.)
 *
 * Platform: POSIX shm_open/mmap plus, on Linux, the tmpfs directory behind
 * it (/dev/shm) for the atomic link and for listing an instance's segments.
 * This file and segment.c are the only places that know about either.
 *
 * Thread safety: a handle may be used from several threads; creating,
 * publishing, adopting and removing are done by one thread. Nothing here
 * blocks except on the kernel's file and memory calls. */
#ifndef SL_SHM_SEGMENT_H
#define SL_SHM_SEGMENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/proc.h"

/* "SLUICESH" in memory (little-endian u64). A segment of the other byte
 * order reads as SL_SEG_MAGIC_SWAPPED and is refused as such. */
#define SL_SEG_MAGIC 0x4853454349554c53ull
#define SL_SEG_MAGIC_SWAPPED 0x534c554943455348ull
#define SL_SEG_VERSION 1u
#define SL_SEG_HEADER_SIZE 4096u /* the header occupies the first page */
#define SL_SEG_ALIGN 4096u       /* region offsets and sizes round to this */
#define SL_SEG_MAX_REGIONS 16u
#define SL_SEG_NAME_MAX 15u      /* kind and region names: 1..15 of [a-z0-9_] */
#define SL_SEG_INSTANCE_MAX 47u  /* instance names: 1..47 of [A-Za-z0-9_.-] */

/* One entry of the region directory. 32 bytes. */
typedef struct sl_seg_region_desc {
    char name[16];   /*  0: NUL-padded, [a-z0-9_], 1..15 characters */
    uint64_t offset; /* 16: from the start of the segment; a multiple of
                      *     SL_SEG_ALIGN, >= header_size */
    uint64_t size;   /* 24: bytes asked for at creation; the region's
                      *     reserved span is size rounded up to SL_SEG_ALIGN
                      *     and ends at or before total_size */
} sl_seg_region_desc;

/* The segment header, native byte order, at offset 0 of every segment.
 * The rest of the first SL_SEG_HEADER_SIZE bytes is zero.
 *
 * The first 32 bytes are the stable prefix: these fields keep their offsets
 * and meaning in every future layout version, so that any build can tell
 * whose segment it is, how big it is, and whether its owner is alive (and
 * so clean up a segment left by a newer or older build). */
typedef struct sl_seg_header {
    /* --- stable prefix --- */
    _Atomic uint64_t magic; /*  0: SL_SEG_MAGIC; stored last, with release
                             *     ordering, when the segment is published */
    uint32_t version;       /*  8: header layout version, SL_SEG_VERSION */
    uint32_t header_size;   /* 12: bytes before the first region; version 1:
                             *     SL_SEG_HEADER_SIZE */
    uint64_t total_size;    /* 16: size of the whole segment; equals the size
                             *     of the shared-memory object */
    _Atomic uint64_t owner; /* 24: sl_proc_ident of the coordinator that owns
                             *     the segment now: the creator, or a restarted
                             *     coordinator that adopted it. A segment whose
                             *     owner is dead is stale. */
    /* --- version 1 --- */
    _Atomic uint64_t owner_epoch; /* 32: the owner's epoch (changes on adopt) */
    uint64_t epoch;               /* 40: the creating coordinator's epoch
                                   *     (sl_seg_new_epoch); never 0 */
    int32_t creator_pid;          /* 48: pid of the creating process */
    uint32_t creator_start;       /* 52: its start time, low 32 bits of clock
                                   *     ticks after boot (0: unknown) */
    _Atomic uint32_t retired;     /* 56: 0 live; 1 removed by its owner (the
                                   *     name is gone; attached processes
                                   *     should re-attach to the new one) */
    uint32_t kind_version;        /* 60: layout version of the regions'
                                   *     contents, set by the module owning the
                                   *     kind; attach requires an exact match */
    char kind[16];                /* 64: NUL-padded, [a-z0-9_], 1..15 chars */
    char instance[48];            /* 80: NUL-padded instance name */
    uint32_t n_regions;           /* 128: entries used in regions[] */
    uint32_t reserved0;           /* 132: zero */
    uint64_t reserved1[3];        /* 136: zero */
    sl_seg_region_desc regions[SL_SEG_MAX_REGIONS]; /* 160: sorted by offset,
                                   *     non-overlapping, names unique */
} sl_seg_header; /* 672 bytes used of the first page */

/* A region to create: its name and size in bytes (> 0). */
typedef struct sl_seg_region {
    const char *name;
    uint64_t size;
} sl_seg_region;

typedef struct sl_seg sl_seg;

/* Flags for sl_seg_attach. */
#define SL_SEG_READONLY 1u /* map read-only (e.g. weights for a worker) */

/* Flags for sl_seg_clean. */
#define SL_SEG_CLEAN_ALL 1u /* remove live segments too (operator "stop") */

/* A new coordinator epoch: the wall-clock time in nanoseconds with the low
 * 16 bits replaced by the pid's, so two coordinators never share one. Never
 * 0; never fails. */
uint64_t sl_seg_new_epoch(void);

/* Writes "/sluice-<instance>-<kind>" into buf (capacity n). Returns 0, or
 * -SL_EINVAL (logged) when a name has characters or a length outside the
 * rules above or buf is too small. */
int sl_seg_name(char *buf, size_t n, const char *instance, const char *kind);

/* Creates an unpublished segment holding `regions` (n_regions of them,
 * 1..SL_SEG_MAX_REGIONS, names unique), laid out in order after the header,
 * each at a multiple of SL_SEG_ALIGN. The memory is reserved up front
 * (posix_fallocate), so a full /dev/shm fails here rather than with SIGBUS
 * later; the regions read as zeros. The calling process is the creator and
 * owner. Returns 0 and the handle in *out; or -SL_EINVAL (bad names, sizes,
 * counts), -SL_ENOMEM (no room in shared memory, or malloc), -SL_EIO (an OS
 * call failed), logged, with *out NULL. The caller owns the handle:
 * sl_seg_publish then eventually sl_seg_remove or sl_seg_close (closing an
 * unpublished segment deletes it). */
int sl_seg_create(const char *instance, const char *kind, uint32_t kind_version,
                  const sl_seg_region *regions, uint32_t n_regions, uint64_t epoch, sl_seg **out);

/* Makes a created segment visible under its name: stores the magic (release)
 * and links the name. Returns 0; -SL_EIO (logged, with the existing owner's
 * pid and whether it is alive) when a segment of that name already exists or
 * the link fails; -SL_EINVAL when already published. On failure the segment
 * stays unpublished (closing it deletes it). */
int sl_seg_publish(sl_seg *s);

/* Opens and maps the segment `/sluice-<instance>-<kind>` after validating its
 * header: magic, version, header size, total size against the object's size,
 * kind and instance names, kind_version (must equal the caller's), region
 * directory (bounds, alignment, order, names). Returns 0 and the handle in
 * *out. Failures, with *out NULL:
 *   -SL_ENOTFOUND  no such segment (logged at SL_LOG_DEBUG only: processes
 *                  poll for the coordinator to create it), or it was retired;
 *   -SL_EFORMAT    not a sluice segment, truncated, sizes or regions
 *                  inconsistent, names mismatched (logged, saying which);
 *   -SL_EVERSION  a header or kind layout version this build does not
 *                  read (logged with both versions);
 *   -SL_EINVAL / -SL_EIO / -SL_ENOMEM  bad arguments, OS or malloc failure.
 * The caller owns the handle: sl_seg_close. */
int sl_seg_attach(const char *instance, const char *kind, uint32_t kind_version, unsigned flags,
                  sl_seg **out);

/* The region named `name`: returns its address (SL_SEG_ALIGN-aligned) and
 * stores its size in *size (may be NULL); returns NULL when the segment has
 * no such region (not logged: the caller decides whether that is an error).
 * The memory belongs to the segment; valid until sl_seg_close. */
void *sl_seg_region_get(const sl_seg *s, const char *name, uint64_t *size);

/* The mapped header (read-only view; owner/retired are atomics that other
 * processes may change). Valid until sl_seg_close. */
const sl_seg_header *sl_seg_info(const sl_seg *s);

/* Whether the segment's owner marked it retired (removed its name). A
 * process holding a retired segment should re-attach by name. */
bool sl_seg_retired(const sl_seg *s);

/* Whether the segment's name still refers to this object: false once it
 * was retired or its name unlinked (its owner shut down, or a new
 * coordinator removed it as stale and created another under the same
 * name), so that an attached process knows to attach again. One fstat;
 * never fails (an fstat error counts as still linked). */
bool sl_seg_linked(const sl_seg *s);

/* Takes over an attached segment whose owner is dead: the calling process
 * becomes its owner, with `epoch`, so that stale clean-up treats it as live
 * again. Returns 0 (also when the caller already owns it); -SL_EINVAL
 * (logged, with the pid) when the owner is alive (another coordinator runs)
 * or the segment is attached read-only; the lost race against another
 * adopter is reported the same way. Does not block. */
int sl_seg_adopt(sl_seg *s, uint64_t epoch);

/* Clean shutdown by the owner: marks the segment retired, unlinks its name
 * (only if the name still refers to this segment, not a newer one), unmaps
 * and frees the handle. Returns 0, or -SL_EIO (logged) when the unlink
 * failed; the handle is freed either way. NULL is accepted. */
int sl_seg_remove(sl_seg *s);

/* Unmaps and frees the handle; the segment stays (unless it was never
 * published, in which case it is deleted). NULL is accepted. */
void sl_seg_close(sl_seg *s);

/* Gives the memory behind [addr, addr + len) back to the system (the range
 * is shrunk to whole pages; it must lie inside s's mapping): the pages read
 * as zeros afterwards, in every process that maps the segment, and no
 * longer count in anyone's resident set. For memory the budget no longer
 * pays for (weights that stopped being pinned, ring slots no longer used);
 * nobody may be reading or writing the range. Returns 0, or -SL_EINVAL
 * (range outside the mapping, or read-only) / -SL_EIO (the kernel refused),
 * logged. Does not block beyond the system call. */
int sl_seg_release(sl_seg *s, void *addr, uint64_t len);

/* Reserves the memory behind [addr, addr + len) again (widened to whole
 * pages), as creation does, so that a later write cannot fault for want of
 * shared memory. Returns 0; -SL_ENOMEM (no room in shared memory) or
 * -SL_EINVAL / -SL_EIO, logged. Blocks while the kernel allocates. */
int sl_seg_reserve(sl_seg *s, void *addr, uint64_t len);

/* Bytes of memory the segment occupies now (the object's allocated blocks:
 * what reservation and use allocated and sl_seg_release did not give back).
 * 0 when the kernel does not say. Does not block. */
uint64_t sl_seg_allocated(const sl_seg *s);

/* Removes the stale segments of `instance`, found by listing /dev/shm:
 * published segments whose owner (stable-prefix field) is not alive, and
 * temporaries of unfinished creations whose process is gone. With
 * SL_SEG_CLEAN_ALL, removes every segment of the instance. Objects under the
 * instance's names that are not sluice segments are left alone (logged as a
 * warning). Returns the number removed, or -SL_EINVAL / -SL_EIO (logged).
 * Does not block. */
int sl_seg_clean(const char *instance, unsigned flags);

#endif
