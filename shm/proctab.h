/* The process table: who is attached to an instance's shared memory, and
 * whether each of them is alive (DESIGN.md §3).
 *
 * Lives in a region of the ctl segment. Each loader, compute worker and
 * coordinator registers an entry on start, stamps a heartbeat while it
 * runs, and frees the entry on a clean exit. The coordinator reaps: it finds
 * entries whose process is gone (pid and start time, see proc.h), has the
 * caller release what they held (slots being filled, slot references), and
 * frees the entry; a process that is alive but whose heartbeat is older
 * than a limit is hung, and is killed with SIGKILL first, because a hung
 * process that later resumed could still write into memory that has been
 * handed to someone else. Only a dead process's state is ever reclaimed.
 *
 * The table is partitioned by role, so an entry's index within its role is
 * a small dense id: a worker's role id is the bit it sets in a slot's holder
 * mask, and the table has exactly as many worker entries as slot words have
 * holder bits. A loader's owner id (what it writes into the slots it fills)
 * adds the entry's incarnation, bumped on every reuse, so that a reclaim
 * aimed at a dead loader can never touch the slots of the next process that
 * registers in the same entry.
 *
 * Region layout (native byte order; every field is an atomic or written
 * only by sl_proctab_format):
 *   header, 64 bytes:
 *     0  u64 magic        SL_PROCTAB_MAGIC
 *     8  u32 version      SL_PROCTAB_VERSION
 *    12  u32 n_entries    SL_PROCTAB_ENTRIES
 *    16  u64 reaper       sl_proc_ident of the process reaping now, 0: none
 *    24  40 bytes zero
 *   then n_entries entries of 64 bytes, coordinators first, then workers,
 *   then loaders:
 *     0  u64 ident        sl_proc_ident of the registered process; 0: free
 *     8  u64 heartbeat    CLOCK_MONOTONIC ns of its last heartbeat
 *    16  u64 registered   CLOCK_MONOTONIC ns of its registration
 *    24  u32 incarnation  bumped each time the entry is freed
 *    28  u32 role         enum sl_role, fixed by the entry's index
 *    32  u64 user         a word the registered process may publish
 *                         (e.g. what it is working on); 0 on registration
 *    40  24 bytes zero
 *
 * Threads and processes: every function may be called concurrently from
 * any process attached to the table; none blocks. */
#ifndef SL_SHM_PROCTAB_H
#define SL_SHM_PROCTAB_H

#include <stdbool.h>
#include <stdint.h>

#include "shm/proc.h"

#define SL_PROCTAB_MAGIC 0x3153434f52504c53ull /* "SLPROCS1" in memory */
#define SL_PROCTAB_VERSION 1u
#define SL_PROCTAB_COORDINATORS 2u /* the running one and a replacement */
#define SL_PROCTAB_WORKERS 20u     /* = SL_SLOTS_MAX_HOLDERS */
#define SL_PROCTAB_LOADERS 64u
#define SL_PROCTAB_ENTRIES (SL_PROCTAB_COORDINATORS + SL_PROCTAB_WORKERS + SL_PROCTAB_LOADERS)

enum sl_role { SL_ROLE_COORDINATOR = 0, SL_ROLE_WORKER = 1, SL_ROLE_LOADER = 2 };

/* What sl_proctab_check finds in an entry. */
enum sl_proc_state {
    SL_PROC_FREE = 0,  /* nobody registered */
    SL_PROC_ALIVE = 1, /* running, heartbeat recent enough */
    SL_PROC_STALE = 2, /* running, but no heartbeat within the limit: hung */
    SL_PROC_DEAD = 3,  /* registered, but the process is gone */
};

typedef struct sl_proctab sl_proctab;

/* Called by sl_proctab_reap for an entry whose process is dead, before the
 * entry is freed: release what it held. rid is its index within its role,
 * owner_id what sl_proctab_owner_id gave it. */
typedef void (*sl_proctab_dead_fn)(void *ctx, enum sl_role role, uint32_t rid, uint32_t owner_id);

/* Bytes the region needs. */
uint64_t sl_proctab_size(void);

/* Number of entries for `role`. */
uint32_t sl_proctab_capacity(enum sl_role role);

/* Writes an empty table into `region` (size bytes, zero-filled: a fresh
 * segment region). Returns 0, or -SL_EINVAL (logged) when size is too small.
 * For the creator, before the segment is published. */
int sl_proctab_format(void *region, uint64_t size);

/* Checks the region's magic, version, entry count and roles, and returns a
 * handle in *out. Failures (logged, *out NULL): -SL_EFORMAT (too small,
 * wrong magic or entries), -SL_EVERSION (other version), -SL_ENOMEM.
 * The caller owns the handle (sl_proctab_close); the region must outlive it. */
int sl_proctab_open(void *region, uint64_t size, sl_proctab **out);

/* Frees the handle (not the region). NULL is accepted. */
void sl_proctab_close(sl_proctab *t);

/* Registers the calling process in a free entry of `role` and stores the
 * entry's role id in *rid (0 .. capacity-1). Returns 0, or -SL_ERANGE
 * (logged) when every entry of the role is taken (reap first). */
int sl_proctab_register(sl_proctab *t, enum sl_role role, uint32_t *rid);

/* The owner id of the current registration of entry (role, rid): for
 * loaders (incarnation mod 2^14) << 6 | rid, a 20-bit value to put into
 * slot words; for other roles the rid itself. */
uint32_t sl_proctab_owner_id(const sl_proctab *t, enum sl_role role, uint32_t rid);

/* Stamps the entry's heartbeat with the current time. Returns 0, or
 * -SL_ENOTFOUND (logged) when the entry no longer belongs to the calling
 * process: it was declared dead and reaped, so whatever it held was handed
 * to others; it must stop touching shared memory and exit. Cheap (a load and
 * a store); call it at least a few times per heartbeat limit. */
int sl_proctab_heartbeat(sl_proctab *t, enum sl_role role, uint32_t rid);

/* Publishes a word in the entry's `user` field (monitoring). */
void sl_proctab_set_user(sl_proctab *t, enum sl_role role, uint32_t rid, uint64_t value);

/* Frees the calling process's entry on a clean exit (release everything it
 * holds first). Returns 0, or -SL_ENOTFOUND (logged) when the entry is not
 * the caller's. */
int sl_proctab_deregister(sl_proctab *t, enum sl_role role, uint32_t rid);

/* The state of entry (role, rid) at time now_ns (sl_proc_clock_ns); a
 * heartbeat older than stale_ns makes a running process STALE (stale_ns 0:
 * never). Stores the entry's identity in *ident when not NULL. */
enum sl_proc_state sl_proctab_check(const sl_proctab *t, enum sl_role role, uint32_t rid, uint64_t now_ns,
                                    uint64_t stale_ns, sl_proc_ident *ident);

/* Whether owner_id (from sl_proctab_owner_id) names a current registration
 * of `role` whose process is running. Suitable for slot reclamation. */
bool sl_proctab_live(const sl_proctab *t, enum sl_role role, uint32_t owner_id);

/* One reaping pass, by the coordinator. For every other registered entry:
 * if its process is dead, calls dead(ctx, ...) and then frees the entry; if
 * it is alive but STALE (stale_ns > 0), sends it SIGKILL (logged as a
 * warning) and counts it in *killed (may be NULL); a later pass reaps it.
 * Only one process reaps at a time: when another running process is
 * reaping, returns 0 at once (a dead reaper's claim is taken over).
 * Returns the number of entries freed. Does not block. */
int sl_proctab_reap(sl_proctab *t, uint64_t stale_ns, sl_proctab_dead_fn dead, void *ctx, uint32_t *killed);

#endif
