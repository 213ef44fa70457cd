/* The process table; see proctab.h for the layout and the rules.
 *
 * An entry is claimed and freed by compare-and-swap on its ident word, so
 * a process that dies at any point leaves either a free entry or one with
 * its identity in it, never one that nobody can attribute. The incarnation
 * is bumped by whoever frees the entry, before the ident is cleared, so a
 * new registrant always reads the incarnation it will be known by. */
#include "shm/proctab.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include "common/log.h"

typedef struct pt_header {
    uint64_t magic;
    uint32_t version;
    uint32_t n_entries;
    _Atomic uint64_t reaper;
    uint64_t reserved[5];
} pt_header;

typedef struct pt_entry {
    _Atomic uint64_t ident;
    _Atomic uint64_t heartbeat;
    _Atomic uint64_t registered;
    _Atomic uint32_t incarnation;
    uint32_t role;
    _Atomic uint64_t user;
    uint64_t reserved[3];
} pt_entry;

_Static_assert(sizeof(pt_header) == 64, "proctab header layout");
_Static_assert(offsetof(pt_header, reaper) == 16, "proctab header layout");
_Static_assert(sizeof(pt_entry) == 64, "proctab entry layout");
_Static_assert(offsetof(pt_entry, incarnation) == 24 && offsetof(pt_entry, user) == 32, "proctab entry layout");
_Static_assert(SL_PROCTAB_LOADERS <= 64, "loader role ids take 6 bits of an owner id");

#define LOADER_RID_BITS 6u
#define INCARNATION_MASK 0x3fffu /* 14 bits: owner ids are 20 bits */

struct sl_proctab {
    pt_header *hdr;
    pt_entry *entries;
};

static const uint32_t role_base[3] = {0, SL_PROCTAB_COORDINATORS, SL_PROCTAB_COORDINATORS + SL_PROCTAB_WORKERS};
static const uint32_t role_cap[3] = {SL_PROCTAB_COORDINATORS, SL_PROCTAB_WORKERS, SL_PROCTAB_LOADERS};
static const char *const role_name[3] = {"coordinator", "worker", "loader"};

uint64_t sl_proctab_size(void) { return sizeof(pt_header) + SL_PROCTAB_ENTRIES * sizeof(pt_entry); }

uint32_t sl_proctab_capacity(enum sl_role role)
{
    SL_ASSERT((unsigned)role < 3);
    return role_cap[role];
}

static pt_entry *entry(const sl_proctab *t, enum sl_role role, uint32_t rid)
{
    SL_ASSERT((unsigned)role < 3 && rid < role_cap[role]);
    return &t->entries[role_base[role] + rid];
}

int sl_proctab_format(void *region, uint64_t size)
{
    if (size < sl_proctab_size()) {
        SL_ERROR("region of %llu bytes; the process table needs %llu", (unsigned long long)size,
                 (unsigned long long)sl_proctab_size());
        return -SL_EINVAL;
    }
    pt_header *h = region;
    pt_entry *e = (pt_entry *)(h + 1);
    h->magic = SL_PROCTAB_MAGIC;
    h->version = SL_PROCTAB_VERSION;
    h->n_entries = SL_PROCTAB_ENTRIES;
    atomic_store_explicit(&h->reaper, 0, memory_order_relaxed);
    for (uint32_t r = 0; r < 3; r++)
        for (uint32_t i = 0; i < role_cap[r]; i++) {
            pt_entry *p = &e[role_base[r] + i];
            atomic_store_explicit(&p->ident, 0, memory_order_relaxed);
            atomic_store_explicit(&p->incarnation, 0, memory_order_relaxed);
            p->role = r;
        }
    return 0;
}

int sl_proctab_open(void *region, uint64_t size, sl_proctab **out)
{
    *out = NULL;
    if (size < sizeof(pt_header)) {
        SL_ERROR("process table region of %llu bytes is smaller than its header", (unsigned long long)size);
        return -SL_EFORMAT;
    }
    pt_header *h = region;
    if (h->magic != SL_PROCTAB_MAGIC) {
        SL_ERROR("process table has magic 0x%016llx, expected 0x%016llx", (unsigned long long)h->magic,
                 (unsigned long long)SL_PROCTAB_MAGIC);
        return -SL_EFORMAT;
    }
    if (h->version != SL_PROCTAB_VERSION) {
        SL_ERROR("process table layout version %u; this build reads version %u", h->version,
                 SL_PROCTAB_VERSION);
        return -SL_EVERSION;
    }
    if (h->n_entries != SL_PROCTAB_ENTRIES || size < sl_proctab_size()) {
        SL_ERROR("process table has %u entries in %llu bytes; expected %u in %llu", h->n_entries,
                 (unsigned long long)size, SL_PROCTAB_ENTRIES, (unsigned long long)sl_proctab_size());
        return -SL_EFORMAT;
    }
    pt_entry *e = (pt_entry *)(h + 1);
    for (uint32_t r = 0; r < 3; r++)
        for (uint32_t i = 0; i < role_cap[r]; i++)
            if (e[role_base[r] + i].role != r) {
                SL_ERROR("process table entry %u has role %u, expected %u", role_base[r] + i,
                         e[role_base[r] + i].role, r);
                return -SL_EFORMAT;
            }
    sl_proctab *t = malloc(sizeof *t);
    if (!t) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    t->hdr = h;
    t->entries = e;
    *out = t;
    return 0;
}

void sl_proctab_close(sl_proctab *t) { free(t); }

int sl_proctab_register(sl_proctab *t, enum sl_role role, uint32_t *rid)
{
    SL_ASSERT((unsigned)role < 3);
    const sl_proc_ident self = sl_proc_self();
    const uint64_t now = sl_proc_clock_ns();
    for (uint32_t i = 0; i < role_cap[role]; i++) {
        pt_entry *e = entry(t, role, i);
        uint64_t expect = 0;
        if (atomic_load_explicit(&e->ident, memory_order_relaxed) != 0)
            continue;
        /* Stamp the heartbeat before claiming, so a reaper that sees our
         * ident never ages the previous registrant's last heartbeat and
         * kills us as hung. A registrant that loses the race for this entry
         * has only written a fresh time into it, which is harmless. */
        atomic_store_explicit(&e->heartbeat, now, memory_order_release);
        if (atomic_compare_exchange_strong_explicit(&e->ident, &expect, self, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            atomic_store_explicit(&e->registered, now, memory_order_relaxed);
            atomic_store_explicit(&e->user, 0, memory_order_release);
            *rid = i;
            return 0;
        }
    }
    SL_ERROR("no free %s entry: all %u are registered (reap dead ones first)", role_name[role], role_cap[role]);
    return -SL_ERANGE;
}

uint32_t sl_proctab_owner_id(const sl_proctab *t, enum sl_role role, uint32_t rid)
{
    if (role != SL_ROLE_LOADER)
        return rid;
    uint32_t inc = atomic_load_explicit(&entry(t, role, rid)->incarnation, memory_order_acquire);
    return ((inc & INCARNATION_MASK) << LOADER_RID_BITS) | rid;
}

int sl_proctab_heartbeat(sl_proctab *t, enum sl_role role, uint32_t rid)
{
    pt_entry *e = entry(t, role, rid);
    sl_proc_ident self = sl_proc_self();
    if (atomic_load_explicit(&e->ident, memory_order_acquire) != self) {
        SL_ERROR("%s entry %u no longer belongs to pid %d: it was reaped", role_name[role], rid,
                 (int)sl_proc_pid(self));
        return -SL_ENOTFOUND;
    }
    atomic_store_explicit(&e->heartbeat, sl_proc_clock_ns(), memory_order_release);
    return 0;
}

void sl_proctab_set_user(sl_proctab *t, enum sl_role role, uint32_t rid, uint64_t value)
{
    atomic_store_explicit(&entry(t, role, rid)->user, value, memory_order_release);
}

/* Frees an entry still holding `ident`: the incarnation moves on first, so
 * the next registrant gets a new owner id. Returns false when the ident
 * changed meanwhile (someone else freed it). */
static bool free_entry(pt_entry *e, sl_proc_ident ident)
{
    if (atomic_load_explicit(&e->ident, memory_order_acquire) != ident)
        return false;
    atomic_fetch_add_explicit(&e->incarnation, 1, memory_order_acq_rel);
    return atomic_compare_exchange_strong_explicit(&e->ident, &ident, 0, memory_order_acq_rel,
                                                   memory_order_relaxed);
}

int sl_proctab_deregister(sl_proctab *t, enum sl_role role, uint32_t rid)
{
    sl_proc_ident self = sl_proc_self();
    if (!free_entry(entry(t, role, rid), self)) {
        SL_ERROR("%s entry %u does not belong to pid %d", role_name[role], rid, (int)sl_proc_pid(self));
        return -SL_ENOTFOUND;
    }
    return 0;
}

enum sl_proc_state sl_proctab_check(const sl_proctab *t, enum sl_role role, uint32_t rid, uint64_t now_ns,
                                    uint64_t stale_ns, sl_proc_ident *ident)
{
    const pt_entry *e = entry(t, role, rid);
    sl_proc_ident id = atomic_load_explicit(&((pt_entry *)e)->ident, memory_order_acquire);
    if (ident)
        *ident = id;
    if (id == 0)
        return SL_PROC_FREE;
    if (!sl_proc_alive(id))
        return SL_PROC_DEAD;
    uint64_t hb = atomic_load_explicit(&((pt_entry *)e)->heartbeat, memory_order_acquire);
    if (stale_ns && now_ns > hb && now_ns - hb > stale_ns)
        return SL_PROC_STALE;
    return SL_PROC_ALIVE;
}

bool sl_proctab_live(const sl_proctab *t, enum sl_role role, uint32_t owner_id)
{
    uint32_t rid = role == SL_ROLE_LOADER ? owner_id & ((1u << LOADER_RID_BITS) - 1) : owner_id;
    if (rid >= role_cap[role])
        return false;
    const pt_entry *e = entry(t, role, rid);
    sl_proc_ident id = atomic_load_explicit(&((pt_entry *)e)->ident, memory_order_acquire);
    if (id == 0 || sl_proctab_owner_id(t, role, rid) != owner_id)
        return false;
    return sl_proc_alive(id);
}

/* Takes the reaper claim: free, already ours, or held by a dead process. */
static bool claim_reaper(pt_header *h, sl_proc_ident self)
{
    sl_proc_ident cur = atomic_load_explicit(&h->reaper, memory_order_acquire);
    for (;;) {
        if (cur == self)
            return true;
        if (cur != 0 && sl_proc_alive(cur))
            return false;
        if (atomic_compare_exchange_weak_explicit(&h->reaper, &cur, self, memory_order_acq_rel,
                                                  memory_order_acquire))
            return true;
    }
}

int sl_proctab_reap(sl_proctab *t, uint64_t stale_ns, sl_proctab_dead_fn dead, void *ctx, uint32_t *killed)
{
    if (killed)
        *killed = 0;
    const sl_proc_ident self = sl_proc_self();
    if (!claim_reaper(t->hdr, self))
        return 0;
    const uint64_t now = sl_proc_clock_ns();
    int freed = 0;
    for (uint32_t r = 0; r < 3; r++)
        for (uint32_t i = 0; i < role_cap[r]; i++) {
            sl_proc_ident id;
            enum sl_proc_state st = sl_proctab_check(t, (enum sl_role)r, i, now, stale_ns, &id);
            if (st == SL_PROC_FREE || id == self)
                continue;
            if (st == SL_PROC_STALE) {
                pt_entry *e = entry(t, (enum sl_role)r, i);
                uint64_t hb = atomic_load_explicit(&e->heartbeat, memory_order_acquire);
                SL_WARN("%s %u (pid %d) sent no heartbeat for %llu ms: killing it", role_name[r], i,
                        (int)sl_proc_pid(id), (unsigned long long)((now - hb) / 1000000));
                if (sl_proc_kill(id) == 0 && killed)
                    (*killed)++;
                continue;
            }
            if (st != SL_PROC_DEAD)
                continue;
            if (dead)
                dead(ctx, (enum sl_role)r, i, sl_proctab_owner_id(t, (enum sl_role)r, i));
            if (free_entry(entry(t, (enum sl_role)r, i), id)) {
                SL_INFO("reaped %s %u (pid %d)", role_name[r], i, (int)sl_proc_pid(id));
                freed++;
            }
        }
    sl_proc_ident me = self;
    atomic_compare_exchange_strong_explicit(&t->hdr->reaper, &me, 0, memory_order_acq_rel, memory_order_relaxed);
    return freed;
}
