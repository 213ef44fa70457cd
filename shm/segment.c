/* Named shared-memory segments; see segment.h for the layout and rules.
 *
 * The header is validated from a private copy read with pread, and the
 * region directory is kept in the handle after validation: nothing another
 * process writes into the mapped header later can move a region outside
 * the mapping. */
#include "shm/segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#if defined(__linux__)
/* Where glibc's shm_open keeps its objects: a tmpfs whose files can be
 * listed and hard-linked. */
#define SHM_DIR "/dev/shm"
#else
#error "shm/segment.c: port the segment directory (listing and atomic publication) to this platform"
#endif

#define PREFIX_SIZE 32u /* bytes of the stable header prefix */
#define NAME_CAP 80u    /* "/sluice-" + instance + "-" + kind, NUL */

_Static_assert(sizeof(sl_seg_region_desc) == 32, "region descriptor layout");
_Static_assert(offsetof(sl_seg_header, owner) == 24, "stable prefix layout");
_Static_assert(offsetof(sl_seg_header, owner_epoch) == PREFIX_SIZE, "stable prefix size");
_Static_assert(offsetof(sl_seg_header, kind) == 64, "header layout");
_Static_assert(offsetof(sl_seg_header, instance) == 80, "header layout");
_Static_assert(offsetof(sl_seg_header, n_regions) == 128, "header layout");
_Static_assert(offsetof(sl_seg_header, regions) == 160, "header layout");
_Static_assert(sizeof(sl_seg_header) == 672, "header layout");
_Static_assert(sizeof(sl_seg_header) <= SL_SEG_HEADER_SIZE, "header fits its page");
_Static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4,
               "atomics have the size of their plain types");
_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "atomics in shared memory must be lock-free (address-free)");
_Static_assert(SL_SEG_INSTANCE_MAX < sizeof(((sl_seg_header *)0)->instance), "instance field");

struct sl_seg {
    int fd;
    uint8_t *base;
    uint64_t size;
    sl_seg_header *hdr;
    bool published; /* false: the object still has its temporary name */
    bool readonly;
    uint32_t n_regions;
    sl_seg_region_desc regions[SL_SEG_MAX_REGIONS]; /* validated copy */
    char name[NAME_CAP];
    char tmp[NAME_CAP + 16];
};

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static bool valid_kind(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > SL_SEG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static bool valid_instance(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > SL_SEG_INSTANCE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* A fixed-size, NUL-padded name field: terminated inside the field and a
 * valid kind/region name. */
static bool valid_field_name(const char *field, size_t cap)
{
    if (!memchr(field, 0, cap))
        return false;
    return valid_kind(field);
}

int sl_seg_name(char *buf, size_t n, const char *instance, const char *kind)
{
    if (!valid_instance(instance)) {
        SL_ERROR("instance name '%.64s' is not 1..%u characters of [A-Za-z0-9_.-]", instance ? instance : "(null)",
                 SL_SEG_INSTANCE_MAX);
        return -SL_EINVAL;
    }
    if (!valid_kind(kind)) {
        SL_ERROR("segment kind '%.64s' is not 1..%u characters of [a-z0-9_]", kind ? kind : "(null)",
                 SL_SEG_NAME_MAX);
        return -SL_EINVAL;
    }
    int m = snprintf(buf, n, "/sluice-%s-%s", instance, kind);
    if (m < 0 || (size_t)m >= n) {
        SL_ERROR("buffer of %zu bytes too small for the name of %s/%s", n, instance, kind);
        return -SL_EINVAL;
    }
    return 0;
}

uint64_t sl_seg_new_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t e = (ns & ~(uint64_t)0xffff) | ((uint64_t)getpid() & 0xffff);
    return e ? e : 1;
}

static void shm_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s%s", SHM_DIR, name); /* name starts with '/' */
}

static uint64_t get_u64(const uint8_t *raw, size_t off)
{
    uint64_t v;
    memcpy(&v, raw + off, sizeof v);
    return v;
}

static uint32_t get_u32(const uint8_t *raw, size_t off)
{
    uint32_t v;
    memcpy(&v, raw + off, sizeof v);
    return v;
}

/* Reads the stable prefix of the object `name` (opened read-only) into
 * *magic and *owner. Returns false when it cannot be opened or is
 * shorter than the prefix. For diagnostics and clean-up only. */
static bool read_prefix(const char *name, uint64_t *magic, uint64_t *owner)
{
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct stat st;
    uint8_t raw[PREFIX_SIZE];
    bool ok = fstat(fd, &st) == 0 && st.st_size >= (off_t)PREFIX_SIZE &&
              pread(fd, raw, sizeof raw, 0) == (ssize_t)sizeof raw;
    close(fd);
    if (!ok)
        return false;
    *magic = get_u64(raw, offsetof(sl_seg_header, magic));
    *owner = get_u64(raw, offsetof(sl_seg_header, owner));
    return true;
}

int sl_seg_create(const char *instance, const char *kind, uint32_t kind_version,
                  const sl_seg_region *regions, uint32_t n_regions, uint64_t epoch, sl_seg **out)
{
    *out = NULL;
    char name[NAME_CAP];
    int rc = sl_seg_name(name, sizeof name, instance, kind);
    if (rc)
        return rc;
    if (n_regions < 1 || n_regions > SL_SEG_MAX_REGIONS || !regions) {
        SL_ERROR("segment %s: %u regions (allowed 1..%u)", name, n_regions, SL_SEG_MAX_REGIONS);
        return -SL_EINVAL;
    }
    if (epoch == 0) {
        SL_ERROR("segment %s: epoch 0 is reserved", name);
        return -SL_EINVAL;
    }
    sl_seg_region_desc desc[SL_SEG_MAX_REGIONS];
    memset(desc, 0, sizeof desc);
    uint64_t off = SL_SEG_HEADER_SIZE;
    /* Keep sizes well inside off_t and size_t so nothing below overflows. */
    const uint64_t limit = (uint64_t)1 << 52;
    for (uint32_t i = 0; i < n_regions; i++) {
        if (!valid_kind(regions[i].name)) {
            SL_ERROR("segment %s: region name '%.64s' is not 1..%u characters of [a-z0-9_]", name,
                     regions[i].name ? regions[i].name : "(null)", SL_SEG_NAME_MAX);
            return -SL_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(regions[i].name, regions[j].name) == 0) {
                SL_ERROR("segment %s: region '%s' named twice", name, regions[i].name);
                return -SL_EINVAL;
            }
        if (regions[i].size == 0 || regions[i].size > limit - off) {
            SL_ERROR("segment %s: region '%s' of %llu bytes (allowed 1..%llu here)", name, regions[i].name,
                     (unsigned long long)regions[i].size, (unsigned long long)(limit - off));
            return -SL_EINVAL;
        }
        strcpy(desc[i].name, regions[i].name);
        desc[i].offset = off;
        desc[i].size = regions[i].size;
        off += round_up(regions[i].size, SL_SEG_ALIGN);
    }
    const uint64_t total = off;

    sl_seg *s = calloc(1, sizeof *s);
    if (!s) {
        SL_ERROR("segment %s: out of memory", name);
        return -SL_ENOMEM;
    }
    s->fd = -1;
    strcpy(s->name, name);
    snprintf(s->tmp, sizeof s->tmp, "%s~%d", name, (int)getpid());
    int fd = shm_open(s->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        /* Left by an earlier process that had our pid: it is gone (we hold
         * the pid now), so the object is garbage. */
        shm_unlink(s->tmp);
        fd = shm_open(s->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        SL_ERROR("cannot create shared memory %s: errno %d (%s)", s->tmp, errno, strerror(errno));
        free(s);
        return -SL_EIO;
    }
    s->fd = fd;
    s->published = false; /* from here on, sl_seg_close deletes s->tmp */
    if (ftruncate(fd, (off_t)total) != 0) {
        SL_ERROR("cannot size %s to %llu bytes: errno %d (%s)", s->tmp, (unsigned long long)total, errno,
                 strerror(errno));
        sl_seg_close(s);
        return -SL_EIO;
    }
    /* Reserve the pages now: tmpfs is sparse, and a write to a page it
     * cannot back later would be SIGBUS in whichever process touches it. */
    int fr = posix_fallocate(fd, 0, (off_t)total);
    if (fr == ENOSPC || fr == ENOMEM || fr == EFBIG) {
        SL_ERROR("not enough shared memory for %s: %llu bytes (%s); free space in %s or lower the budget",
                 name, (unsigned long long)total, strerror(fr), SHM_DIR);
        sl_seg_close(s);
        return -SL_ENOMEM;
    }
    if (fr != 0 && fr != EOPNOTSUPP && fr != EINVAL) {
        SL_ERROR("cannot reserve %llu bytes for %s: %s", (unsigned long long)total, name, strerror(fr));
        sl_seg_close(s);
        return -SL_EIO;
    }
    void *base = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        SL_ERROR("cannot map %s (%llu bytes): errno %d (%s)", s->tmp, (unsigned long long)total, errno,
                 strerror(errno));
        sl_seg_close(s);
        return -SL_EIO;
    }
    s->base = base;
    s->size = total;
    s->hdr = base;
    s->n_regions = n_regions;
    memcpy(s->regions, desc, sizeof desc);

    /* The object is fresh (zero-filled); write every field but the magic. */
    sl_seg_header *h = s->hdr;
    sl_proc_ident self = sl_proc_self();
    h->version = SL_SEG_VERSION;
    h->header_size = SL_SEG_HEADER_SIZE;
    h->total_size = total;
    atomic_store_explicit(&h->owner, self, memory_order_relaxed);
    atomic_store_explicit(&h->owner_epoch, epoch, memory_order_relaxed);
    h->epoch = epoch;
    h->creator_pid = sl_proc_pid(self);
    h->creator_start = (uint32_t)self;
    atomic_store_explicit(&h->retired, 0, memory_order_relaxed);
    h->kind_version = kind_version;
    strcpy(h->kind, kind);
    strcpy(h->instance, instance);
    h->n_regions = n_regions;
    memcpy(h->regions, desc, sizeof desc);
    *out = s;
    return 0;
}

int sl_seg_publish(sl_seg *s)
{
    if (s->published) {
        SL_ERROR("segment %s is already published", s->name);
        return -SL_EINVAL;
    }
    /* Everything written so far (header, formatted regions) becomes visible
     * to whoever acquires the magic. */
    atomic_store_explicit(&s->hdr->magic, SL_SEG_MAGIC, memory_order_release);
    char from[NAME_CAP + 32], to[NAME_CAP + 32];
    shm_path(from, sizeof from, s->tmp);
    shm_path(to, sizeof to, s->name);
    if (link(from, to) != 0) {
        int e = errno;
        uint64_t magic, owner;
        if (e == EEXIST && read_prefix(s->name, &magic, &owner) && magic == SL_SEG_MAGIC)
            SL_ERROR("segment %s already exists (owner pid %d, %s); remove it or attach to it", s->name,
                     (int)sl_proc_pid(owner), sl_proc_alive(owner) ? "running" : "gone");
        else
            SL_ERROR("cannot publish %s: link failed with errno %d (%s)", s->name, e, strerror(e));
        return -SL_EIO;
    }
    s->published = true;
    if (shm_unlink(s->tmp) != 0)
        SL_WARN("cannot remove the temporary name %s: errno %d", s->tmp, errno);
    return 0;
}

/* Checks a header copy (`got` bytes of `raw`, the object being file_size
 * bytes) against everything attach requires, and fills the handle's region
 * directory. Returns 0 or a negative sl_err, logged with the reason. */
static int validate(sl_seg *s, const uint8_t *raw, size_t got, uint64_t file_size, const char *instance,
                    const char *kind, uint32_t kind_version)
{
    const char *name = s->name;
    uint64_t magic = get_u64(raw, offsetof(sl_seg_header, magic));
    if (magic != SL_SEG_MAGIC) {
        if (magic == 0)
            SL_ERROR("%s has no header (magic 0): its creator did not finish publishing it", name);
        else if (magic == SL_SEG_MAGIC_SWAPPED)
            SL_ERROR("%s was written with the other byte order", name);
        else
            SL_ERROR("%s is not a sluice segment: magic 0x%016llx, expected 0x%016llx", name,
                     (unsigned long long)magic, (unsigned long long)SL_SEG_MAGIC);
        return -SL_EFORMAT;
    }
    uint32_t version = get_u32(raw, offsetof(sl_seg_header, version));
    if (version != SL_SEG_VERSION) {
        SL_ERROR("%s has header layout version %u; this build reads version %u", name, version, SL_SEG_VERSION);
        return -SL_EVERSION;
    }
    uint32_t header_size = get_u32(raw, offsetof(sl_seg_header, header_size));
    if (header_size != SL_SEG_HEADER_SIZE) {
        SL_ERROR("%s has a header size of %u bytes; version %u headers are %u", name, header_size, version,
                 SL_SEG_HEADER_SIZE);
        return -SL_EFORMAT;
    }
    if (file_size < header_size || got < header_size) {
        SL_ERROR("%s is truncated: %llu bytes, smaller than its %u-byte header", name,
                 (unsigned long long)file_size, header_size);
        return -SL_EFORMAT;
    }
    uint64_t total = get_u64(raw, offsetof(sl_seg_header, total_size));
    if (total != file_size) {
        SL_ERROR("%s: header says %llu bytes but the object has %llu (truncated or resized)", name,
                 (unsigned long long)total, (unsigned long long)file_size);
        return -SL_EFORMAT;
    }
    const char *hkind = (const char *)raw + offsetof(sl_seg_header, kind);
    if (!memchr(hkind, 0, 16) || strcmp(hkind, kind) != 0) {
        SL_ERROR("%s holds kind '%.15s', expected '%s'", name, hkind, kind);
        return -SL_EFORMAT;
    }
    const char *hinst = (const char *)raw + offsetof(sl_seg_header, instance);
    if (!memchr(hinst, 0, 48) || strcmp(hinst, instance) != 0) {
        SL_ERROR("%s belongs to instance '%.47s', expected '%s'", name, hinst, instance);
        return -SL_EFORMAT;
    }
    if (get_u32(raw, offsetof(sl_seg_header, retired)) != 0) {
        SL_DEBUG("%s is retired (its owner removed it)", name);
        return -SL_ENOTFOUND;
    }
    uint32_t kv = get_u32(raw, offsetof(sl_seg_header, kind_version));
    if (kv != kind_version) {
        SL_ERROR("%s has '%s' layout version %u; this build reads version %u", name, kind, kv, kind_version);
        return -SL_EVERSION;
    }
    uint32_t nr = get_u32(raw, offsetof(sl_seg_header, n_regions));
    if (nr > SL_SEG_MAX_REGIONS) {
        SL_ERROR("%s lists %u regions (at most %u)", name, nr, SL_SEG_MAX_REGIONS);
        return -SL_EFORMAT;
    }
    uint64_t prev_end = header_size;
    for (uint32_t i = 0; i < nr; i++) {
        sl_seg_region_desc d;
        memcpy(&d, raw + offsetof(sl_seg_header, regions) + i * sizeof d, sizeof d);
        if (!valid_field_name(d.name, sizeof d.name)) {
            SL_ERROR("%s: region %u has an invalid name", name, i);
            return -SL_EFORMAT;
        }
        /* Bounds without overflow: offset <= total, then the rounded size
         * against what remains. */
        if (d.offset % SL_SEG_ALIGN || d.offset < prev_end || d.offset > total || d.size == 0 ||
            d.size > total - d.offset || round_up(d.size, SL_SEG_ALIGN) > total - d.offset) {
            SL_ERROR("%s: region '%s' at offset %llu, %llu bytes, does not fit in %llu bytes after offset %llu "
                     "at %u-byte alignment",
                     name, d.name, (unsigned long long)d.offset, (unsigned long long)d.size,
                     (unsigned long long)total, (unsigned long long)prev_end, SL_SEG_ALIGN);
            return -SL_EFORMAT;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(s->regions[j].name, d.name) == 0) {
                SL_ERROR("%s: region '%s' listed twice", name, d.name);
                return -SL_EFORMAT;
            }
        prev_end = d.offset + round_up(d.size, SL_SEG_ALIGN);
        s->regions[i] = d;
    }
    s->n_regions = nr;
    return 0;
}

int sl_seg_attach(const char *instance, const char *kind, uint32_t kind_version, unsigned flags,
                  sl_seg **out)
{
    *out = NULL;
    char name[NAME_CAP];
    int rc = sl_seg_name(name, sizeof name, instance, kind);
    if (rc)
        return rc;
    const bool ro = (flags & SL_SEG_READONLY) != 0;
    int fd = shm_open(name, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT) {
            SL_DEBUG("no segment %s", name);
            return -SL_ENOTFOUND;
        }
        SL_ERROR("cannot open %s: errno %d (%s)", name, errno, strerror(errno));
        return -SL_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        SL_ERROR("cannot stat %s: errno %d (%s)", name, errno, strerror(errno));
        close(fd);
        return -SL_EIO;
    }
    const uint64_t file_size = (uint64_t)st.st_size;
    if (file_size < PREFIX_SIZE) {
        SL_ERROR("%s is truncated: %llu bytes, less than the %u-byte header prefix", name,
                 (unsigned long long)file_size, PREFIX_SIZE);
        close(fd);
        return -SL_EFORMAT;
    }
    if (file_size > SIZE_MAX) {
        SL_ERROR("%s has %llu bytes, more than this process can map", name, (unsigned long long)file_size);
        close(fd);
        return -SL_EFORMAT;
    }
    sl_seg *s = calloc(1, sizeof *s);
    uint8_t *raw = calloc(1, SL_SEG_HEADER_SIZE);
    if (!s || !raw) {
        SL_ERROR("%s: out of memory", name);
        free(s);
        free(raw);
        close(fd);
        return -SL_ENOMEM;
    }
    s->fd = fd;
    s->published = true;
    s->readonly = ro;
    strcpy(s->name, name);
    size_t want = file_size < SL_SEG_HEADER_SIZE ? (size_t)file_size : SL_SEG_HEADER_SIZE;
    ssize_t got = pread(fd, raw, want, 0);
    if (got != (ssize_t)want) {
        SL_ERROR("cannot read the header of %s: got %zd of %zu bytes", name, got, want);
        rc = -SL_EIO;
    } else {
        rc = validate(s, raw, (size_t)got, file_size, instance, kind, kind_version);
    }
    free(raw);
    if (rc) {
        sl_seg_close(s);
        return rc;
    }
    void *base = mmap(NULL, (size_t)file_size, ro ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        SL_ERROR("cannot map %s (%llu bytes): errno %d (%s)", name, (unsigned long long)file_size, errno,
                 strerror(errno));
        sl_seg_close(s);
        return -SL_EIO;
    }
    s->base = base;
    s->size = file_size;
    s->hdr = base;
    /* Pairs with the creator's release store: the regions' contents
     * formatted before publication are visible from here on. */
    if (atomic_load_explicit(&s->hdr->magic, memory_order_acquire) != SL_SEG_MAGIC) {
        SL_ERROR("%s changed while being attached", name);
        sl_seg_close(s);
        return -SL_EFORMAT;
    }
    *out = s;
    return 0;
}

void *sl_seg_region_get(const sl_seg *s, const char *name, uint64_t *size)
{
    for (uint32_t i = 0; i < s->n_regions; i++)
        if (strcmp(s->regions[i].name, name) == 0) {
            if (size)
                *size = s->regions[i].size;
            return s->base + s->regions[i].offset;
        }
    return NULL;
}

const sl_seg_header *sl_seg_info(const sl_seg *s) { return s->hdr; }

bool sl_seg_retired(const sl_seg *s)
{
    return atomic_load_explicit(&s->hdr->retired, memory_order_acquire) != 0;
}

bool sl_seg_linked(const sl_seg *s)
{
    if (sl_seg_retired(s))
        return false;
    struct stat st;
    /* tmpfs counts names: a published segment has one, an unlinked one 0. */
    return fstat(s->fd, &st) != 0 || st.st_nlink > 0;
}

int sl_seg_adopt(sl_seg *s, uint64_t epoch)
{
    if (s->readonly) {
        SL_ERROR("%s is attached read-only and cannot be adopted", s->name);
        return -SL_EINVAL;
    }
    sl_proc_ident self = sl_proc_self();
    sl_proc_ident old = atomic_load_explicit(&s->hdr->owner, memory_order_acquire);
    if (old != self) {
        if (sl_proc_alive(old)) {
            SL_ERROR("%s is owned by pid %d, which is running", s->name, (int)sl_proc_pid(old));
            return -SL_EINVAL;
        }
        if (!atomic_compare_exchange_strong_explicit(&s->hdr->owner, &old, self, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            SL_ERROR("%s was adopted by pid %d meanwhile", s->name, (int)sl_proc_pid(old));
            return -SL_EINVAL;
        }
    }
    atomic_store_explicit(&s->hdr->owner_epoch, epoch, memory_order_release);
    return 0;
}

/* Unlinks `name` if it still names the object open as fd. Returns 1 when
 * it unlinked it, 0 when the name is gone or names another object now,
 * -SL_EIO (logged) when the unlink failed. */
static int unlink_if_same(const char *name, int fd)
{
    char path[NAME_CAP + 32];
    shm_path(path, sizeof path, name);
    struct stat mine, now;
    if (fstat(fd, &mine) != 0 || stat(path, &now) != 0)
        return 0;
    if (mine.st_dev != now.st_dev || mine.st_ino != now.st_ino)
        return 0;
    if (shm_unlink(name) != 0) {
        if (errno == ENOENT)
            return 0;
        SL_ERROR("cannot unlink %s: errno %d (%s)", name, errno, strerror(errno));
        return -SL_EIO;
    }
    return 1;
}

int sl_seg_remove(sl_seg *s)
{
    if (!s)
        return 0;
    int rc = 0;
    if (s->published) {
        if (!s->readonly && s->hdr)
            atomic_store_explicit(&s->hdr->retired, 1, memory_order_release);
        rc = unlink_if_same(s->name, s->fd);
        if (rc > 0)
            rc = 0;
    }
    sl_seg_close(s);
    return rc;
}

void sl_seg_close(sl_seg *s)
{
    if (!s)
        return;
    if (s->base)
        munmap(s->base, (size_t)s->size);
    if (!s->published && s->tmp[0])
        shm_unlink(s->tmp);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* Parses a /dev/shm entry of the instance: after "sluice-<instance>-" comes
 * a kind, then either the end (a published segment) or "~<pid>" (a
 * temporary). Returns 1 published, 2 temporary (pid in *pid), 0 not ours. */
static int parse_entry(const char *rest, pid_t *pid)
{
    size_t k = strspn(rest, "abcdefghijklmnopqrstuvwxyz0123456789_");
    if (k < 1 || k > SL_SEG_NAME_MAX)
        return 0;
    if (rest[k] == 0)
        return 1;
    if (rest[k] != '~' || rest[k + 1] < '1' || rest[k + 1] > '9')
        return 0;
    char *end;
    errno = 0;
    long v = strtol(rest + k + 1, &end, 10);
    if (errno || *end || v <= 0 || v > INT32_MAX)
        return 0;
    *pid = (pid_t)v;
    return 2;
}

/* The page-aligned part of [addr, addr + len) inside s's mapping, as file
 * offsets; `outward` widens it to whole pages instead of shrinking it.
 * Returns false when the range is not inside the mapping. */
static bool page_range(const sl_seg *s, const void *addr, uint64_t len, bool outward, uint64_t *off, uint64_t *n)
{
    const uint8_t *p = addr;
    if (p < s->base || len > s->size || (uint64_t)(p - s->base) > s->size - len)
        return false;
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t lo = (uint64_t)(p - s->base), hi = lo + len;
    if (outward) {
        lo = lo / page * page;
        hi = round_up(hi, page) < s->size ? round_up(hi, page) : s->size;
    } else {
        lo = round_up(lo, page);
        hi = hi / page * page;
    }
    *off = lo;
    *n = hi > lo ? hi - lo : 0;
    return true;
}

int sl_seg_release(sl_seg *s, void *addr, uint64_t len)
{
    uint64_t off, n;
    if (s->readonly || !page_range(s, addr, len, false, &off, &n)) {
        SL_ERROR("%s: cannot release %llu bytes at %p (mapping of %llu bytes at %p%s)", s->name,
                 (unsigned long long)len, addr, (unsigned long long)s->size, (void *)s->base,
                 s->readonly ? ", read-only" : "");
        return -SL_EINVAL;
    }
    if (n == 0)
        return 0;
    /* Punching a hole frees the tmpfs pages and unmaps them from every
     * process; MADV_REMOVE does the same through the mapping where the
     * file system lacks the fallocate mode. */
    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n) != 0 &&
        madvise(s->base + off, (size_t)n, MADV_REMOVE) != 0) {
        SL_ERROR("%s: cannot release %llu bytes at offset %llu: errno %d (%s)", s->name, (unsigned long long)n,
                 (unsigned long long)off, errno, strerror(errno));
        return -SL_EIO;
    }
    return 0;
}

int sl_seg_reserve(sl_seg *s, void *addr, uint64_t len)
{
    uint64_t off, n;
    if (s->readonly || !page_range(s, addr, len, true, &off, &n)) {
        SL_ERROR("%s: cannot reserve %llu bytes at %p (mapping of %llu bytes at %p%s)", s->name,
                 (unsigned long long)len, addr, (unsigned long long)s->size, (void *)s->base,
                 s->readonly ? ", read-only" : "");
        return -SL_EINVAL;
    }
    if (n == 0)
        return 0;
    int fr = posix_fallocate(s->fd, (off_t)off, (off_t)n);
    if (fr == ENOSPC || fr == ENOMEM || fr == EFBIG) {
        SL_ERROR("not enough shared memory to reserve %llu bytes of %s (%s)", (unsigned long long)n, s->name,
                 strerror(fr));
        return -SL_ENOMEM;
    }
    if (fr != 0 && fr != EOPNOTSUPP && fr != EINVAL) {
        SL_ERROR("cannot reserve %llu bytes of %s: %s", (unsigned long long)n, s->name, strerror(fr));
        return -SL_EIO;
    }
    return 0;
}

uint64_t sl_seg_allocated(const sl_seg *s)
{
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return 0;
    return (uint64_t)st.st_blocks * 512u;
}

int sl_seg_clean(const char *instance, unsigned flags)
{
    if (!valid_instance(instance)) {
        SL_ERROR("instance name '%.64s' is not 1..%u characters of [A-Za-z0-9_.-]", instance ? instance : "(null)",
                 SL_SEG_INSTANCE_MAX);
        return -SL_EINVAL;
    }
    const bool all = (flags & SL_SEG_CLEAN_ALL) != 0;
    char prefix[NAME_CAP];
    int plen = snprintf(prefix, sizeof prefix, "sluice-%s-", instance);
    DIR *d = opendir(SHM_DIR);
    if (!d) {
        SL_ERROR("cannot list %s: errno %d (%s)", SHM_DIR, errno, strerror(errno));
        return -SL_EIO;
    }
    int removed = 0;
    const pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        /* +16: room for a temporary's "~<pid>" */
        if (strncmp(e->d_name, prefix, (size_t)plen) != 0 || strlen(e->d_name) >= NAME_CAP + 14)
            continue;
        pid_t pid = 0;
        int what = parse_entry(e->d_name + plen, &pid);
        if (what == 0)
            continue;
        char name[NAME_CAP + 16];
        snprintf(name, sizeof name, "/%s", e->d_name);
        if (what == 2) {
            if (pid == self || (!all && sl_proc_ident_of(pid) != 0))
                continue;
            if (shm_unlink(name) == 0) {
                SL_INFO("removed %s, an unfinished segment of pid %d", name, (int)pid);
                removed++;
            }
            continue;
        }
        int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            continue; /* removed meanwhile */
        struct stat st;
        uint8_t raw[PREFIX_SIZE];
        bool ours = fstat(fd, &st) == 0 && st.st_size >= (off_t)PREFIX_SIZE &&
                    pread(fd, raw, sizeof raw, 0) == (ssize_t)sizeof raw &&
                    get_u64(raw, offsetof(sl_seg_header, magic)) == SL_SEG_MAGIC;
        if (!ours) {
            SL_WARN("leaving %s alone: it is not a sluice segment", name);
        } else {
            sl_proc_ident owner = get_u64(raw, offsetof(sl_seg_header, owner));
            if (all || !sl_proc_alive(owner)) {
                if (unlink_if_same(name, fd) > 0) {
                    SL_INFO("removed %s (owner pid %d %s)", name, (int)sl_proc_pid(owner),
                            sl_proc_alive(owner) ? "running" : "gone");
                    removed++;
                }
            }
        }
        close(fd);
    }
    closedir(d);
    return removed;
}
