/* Reading and checking packed-model manifests; see pack.h for the format.
 *
 * The body is decoded by a small msgpack reader of our own rather than
 * msgpack-c's unpacker, for the reason proto/msg.c gives: that one builds a
 * tree in a zone whose size follows the counts in the input, while here
 * every count is bounded by the bytes that remain before anything is
 * allocated, and only the few types a manifest uses are accepted. */
#include "model/pack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"

#define MAX_SOURCE 4096u
#define MAX_REQUANT 64u
#define MAX_FILE_NAME 255u
#define MAX_UNIT_NAME 127u
/* A unit map has 11 keys of at least 4 bytes each and their values: no
 * encoding of one takes fewer bytes than this, which bounds the count. */
#define MIN_UNIT_BYTES 64u
#define MIN_FILE_BYTES 4u /* [name, size]: array header, str header + 1, uint */
/* LZ4 blocks are limited to this many bytes (LZ4_MAX_INPUT_SIZE). */
#define LZ4_MAX_BLOCK 0x7E000000ull

typedef struct pack_file {
    char *name;
    char *path; /* "<dir>/<name>", NULL without a directory */
    uint64_t size;
} pack_file;

struct sl_pack {
    char *dir;
    char *source;
    char *requant;
    uint64_t image_size;
    uint8_t *header;
    size_t header_len;
    uint32_t n_files;
    pack_file *files;
    uint32_t n_units;
    sl_pack_unit *units;
    uint64_t max_compressed, max_size;
};

static const char *const k_kind_names[SL_PACK_KIND_COUNT] = {"layer", "head", "embd", "misc", "expert"};
static const char *const k_codec_names[SL_PACK_CODEC_COUNT] = {"none", "lz4", "zstd"};

const char *sl_pack_kind_name(sl_pack_kind k)
{
    return (unsigned)k < SL_PACK_KIND_COUNT ? k_kind_names[k] : "?";
}

const char *sl_pack_codec_name(sl_pack_codec c)
{
    return (unsigned)c < SL_PACK_CODEC_COUNT ? k_codec_names[c] : "?";
}

uint64_t sl_pack_checksum(const void *data, size_t n)
{
    return XXH3_64bits(data, n);
}

/* ---- a bounded msgpack reader ------------------------------------------- */

enum mp_tag { MP_NIL, MP_BOOL, MP_UINT, MP_NEG, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };
static const char *const k_tag_names[] = {"nil", "bool", "uint", "negative int", "float", "str", "bin",
                                          "array", "map", "ext"};

typedef struct mp_item {
    enum mp_tag tag;
    uint64_t u;        /* MP_UINT value; MP_ARRAY / MP_MAP count */
    const uint8_t *p;  /* MP_STR / MP_BIN bytes */
    uint64_t len;      /* their length */
} mp_item;

/* The decoding context: the cursor, and the first error's description. */
typedef struct pctx {
    const uint8_t *p, *end;
    const char *what; /* the field being read, for messages */
    char why[256];
} pctx;

__attribute__((format(printf, 3, 4))) static int fail(pctx *c, int err, const char *fmt, ...)
{
    if (!c->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof c->why, fmt, ap);
        va_end(ap);
    }
    return err;
}

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t left(const pctx *c) { return (uint64_t)(c->end - c->p); }

/* Reads `n` big-endian bytes. */
static int take(pctx *c, unsigned n, uint64_t *v)
{
    if (left(c) < n)
        return fail(c, -SL_EFORMAT, "%s: the body ends inside a value", c->what);
    *v = be(c->p, n);
    c->p += n;
    return 0;
}

/* Decodes one item's header (and, for str/bin, its bytes). Array and map
 * counts are checked against the bytes left: each element takes at least
 * one byte. Floats and extension types are decoded only to be refused by
 * the caller. */
static int mp_next(pctx *c, mp_item *it)
{
    memset(it, 0, sizeof *it);
    if (!left(c))
        return fail(c, -SL_EFORMAT, "%s: the body ends where a value should be", c->what);
    uint8_t b = *c->p++;
    uint64_t n = 0;
    int rc = 0;
    if (b <= 0x7f) {
        it->tag = MP_UINT;
        it->u = b;
        return 0;
    }
    if (b >= 0xe0) {
        it->tag = MP_NEG;
        return 0;
    }
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        it->tag = (b & 0xf0) == 0x80 ? MP_MAP : MP_ARRAY;
        n = b & 0x0f;
        goto container;
    }
    if ((b & 0xe0) == 0xa0) {
        it->tag = MP_STR;
        n = b & 0x1f;
        goto bytes;
    }
    switch (b) {
    case 0xc0: it->tag = MP_NIL; return 0;
    case 0xc2: case 0xc3: it->tag = MP_BOOL; it->u = b == 0xc3; return 0;
    case 0xc4: case 0xc5: case 0xc6:
        it->tag = MP_BIN;
        if ((rc = take(c, 1u << (b - 0xc4), &n)))
            return rc;
        goto bytes;
    case 0xd9: case 0xda: case 0xdb:
        it->tag = MP_STR;
        if ((rc = take(c, 1u << (b - 0xd9), &n)))
            return rc;
        goto bytes;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        it->tag = MP_UINT;
        return take(c, 1u << (b - 0xcc), &it->u);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        /* A signed encoding of a non-negative value is still a uint. */
        if ((rc = take(c, 1u << (b - 0xd0), &n)))
            return rc;
        if (n >> ((8u << (b - 0xd0)) - 1)) {
            it->tag = MP_NEG;
        } else {
            it->tag = MP_UINT;
            it->u = n;
        }
        return 0;
    case 0xca: case 0xcb:
        it->tag = MP_FLOAT;
        return take(c, b == 0xca ? 4 : 8, &n);
    case 0xdc: case 0xdd:
        it->tag = MP_ARRAY;
        if ((rc = take(c, b == 0xdc ? 2 : 4, &n)))
            return rc;
        goto container;
    case 0xde: case 0xdf:
        it->tag = MP_MAP;
        if ((rc = take(c, b == 0xde ? 2 : 4, &n)))
            return rc;
        goto container;
    default: /* ext types (0xc7-0xc9, 0xd4-0xd8) and the unused 0xc1 */
        it->tag = MP_EXT;
        return fail(c, -SL_EFORMAT, "%s: msgpack type byte 0x%02x has no place in a manifest", c->what, b);
    }
bytes:
    if (n > left(c))
        return fail(c, -SL_EFORMAT, "%s: a string of %llu bytes, but %llu remain", c->what,
                    (unsigned long long)n, (unsigned long long)left(c));
    it->p = c->p;
    it->len = n;
    c->p += n;
    return 0;
container:
    if (n > left(c) / (it->tag == MP_MAP ? 2 : 1))
        return fail(c, -SL_EFORMAT, "%s: %llu elements claimed, but %llu bytes remain", c->what,
                    (unsigned long long)n, (unsigned long long)left(c));
    it->u = n;
    return 0;
}

static int expect(pctx *c, const mp_item *it, enum mp_tag tag)
{
    if (it->tag == tag)
        return 0;
    return fail(c, it->tag == MP_NEG && tag == MP_UINT ? -SL_ERANGE : -SL_ETYPE, "%s: expected %s, found %s",
                c->what, k_tag_names[tag], k_tag_names[it->tag]);
}

static int read_uint(pctx *c, uint64_t max, uint64_t *out)
{
    mp_item it;
    int rc = mp_next(c, &it);
    if (rc || (rc = expect(c, &it, MP_UINT)))
        return rc;
    if (it.u > max)
        return fail(c, -SL_ERANGE, "%s: %llu is above the limit %llu", c->what, (unsigned long long)it.u,
                    (unsigned long long)max);
    *out = it.u;
    return 0;
}

/* A string (or bin when `bin`) of at most max bytes. */
static int read_bytes(pctx *c, enum mp_tag tag, uint64_t max, const uint8_t **p, uint64_t *len)
{
    mp_item it;
    int rc = mp_next(c, &it);
    if (rc || (rc = expect(c, &it, tag)))
        return rc;
    if (it.len > max)
        return fail(c, -SL_ERANGE, "%s: %llu bytes, at most %llu allowed", c->what, (unsigned long long)it.len,
                    (unsigned long long)max);
    *p = it.p;
    *len = it.len;
    return 0;
}

/* A string copied into a new NUL-terminated buffer; refused when it holds
 * a NUL byte. */
static int read_cstr(pctx *c, uint64_t max, char **out)
{
    const uint8_t *p = NULL;
    uint64_t len = 0;
    int rc = read_bytes(c, MP_STR, max, &p, &len);
    if (rc)
        return rc;
    if (memchr(p, 0, len))
        return fail(c, -SL_EFORMAT, "%s: a string with a NUL byte", c->what);
    char *s = malloc(len + 1);
    if (!s)
        return fail(c, -SL_ENOMEM, "%s: out of memory", c->what);
    memcpy(s, p, len);
    s[len] = 0;
    *out = s;
    return 0;
}

/* An array or map header with at most max elements, each taking at least
 * min_bytes of the body. */
static int read_count(pctx *c, enum mp_tag tag, uint64_t max, uint64_t min_bytes, uint64_t *n)
{
    mp_item it;
    int rc = mp_next(c, &it);
    if (rc || (rc = expect(c, &it, tag)))
        return rc;
    if (it.u > max || it.u > left(c) / min_bytes)
        return fail(c, -SL_ERANGE, "%s: %llu elements is more than %s allows", c->what, (unsigned long long)it.u,
                    it.u > max ? "the format" : "the rest of the body");
    *n = it.u;
    return 0;
}

/* Reads a map key and returns its index in `keys` (n names), marking it in
 * *seen; unknown and repeated keys are refused. */
static int read_key(pctx *c, const char *const *keys, int n, uint32_t *seen, int *which)
{
    const uint8_t *p = NULL;
    uint64_t len = 0;
    int rc = read_bytes(c, MP_STR, 64, &p, &len);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        if (strlen(keys[i]) == len && memcmp(keys[i], p, len) == 0) {
            if (*seen & (1u << i))
                return fail(c, -SL_EFORMAT, "%s: key \"%s\" appears twice", c->what, keys[i]);
            *seen |= 1u << i;
            *which = i;
            return 0;
        }
    }
    return fail(c, -SL_EFORMAT, "%s: unknown key \"%.*s\"", c->what, (int)len, (const char *)p);
}

static int missing(pctx *c, const char *const *keys, int n, uint32_t seen)
{
    for (int i = 0; i < n; i++)
        if (!(seen & (1u << i)))
            return fail(c, -SL_EFORMAT, "%s: key \"%s\" is missing", c->what, keys[i]);
    return 0;
}

/* Index of the word equal to the string item's bytes, or -1. */
static int lookup(const char *const *words, int n, const uint8_t *p, uint64_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(words[i]) == len && memcmp(words[i], p, len) == 0)
            return i;
    return -1;
}

/* ---- the body ------------------------------------------------------------ */

static bool valid_file_name(const char *s)
{
    if (!s[0] || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (const char *q = s; *q; q++) {
        char ch = *q;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static int parse_files(pctx *c, sl_pack *p)
{
    uint64_t n;
    c->what = "files";
    int rc = read_count(c, MP_ARRAY, SL_PACK_MAX_FILES, MIN_FILE_BYTES, &n);
    if (rc)
        return rc;
    if (n == 0)
        return fail(c, -SL_EFORMAT, "files: the list is empty");
    p->files = calloc(n, sizeof *p->files);
    if (!p->files)
        return fail(c, -SL_ENOMEM, "files: out of memory for %llu entries", (unsigned long long)n);
    p->n_files = (uint32_t)n;
    for (uint32_t i = 0; i < p->n_files; i++) {
        uint64_t two;
        if ((rc = read_count(c, MP_ARRAY, 2, 1, &two)))
            return rc;
        if (two != 2)
            return fail(c, -SL_EFORMAT, "files[%u]: expected [name, size]", i);
        c->what = "files: a name";
        if ((rc = read_cstr(c, MAX_FILE_NAME, &p->files[i].name)))
            return rc;
        if (!valid_file_name(p->files[i].name))
            return fail(c, -SL_EFORMAT, "files[%u]: \"%s\" is not a plain file name", i, p->files[i].name);
        for (uint32_t k = 0; k < i; k++)
            if (!strcmp(p->files[k].name, p->files[i].name))
                return fail(c, -SL_EFORMAT, "files: \"%s\" is listed twice", p->files[i].name);
        c->what = "files: a size";
        if ((rc = read_uint(c, UINT64_MAX, &p->files[i].size)))
            return rc;
        c->what = "files";
    }
    return 0;
}

enum { U_NAME, U_KIND, U_LAYER, U_EXPERT, U_FILE, U_OFFSET, U_STORED, U_SIZE, U_CODEC, U_XXH3, U_PIECES, U_KEYS };
static const char *const k_unit_keys[U_KEYS] = {"name",   "kind",   "layer", "expert", "file",  "offset",
                                                "stored", "size",   "codec", "xxh3",   "pieces"};

static int parse_pieces(pctx *c, sl_pack_unit *u)
{
    uint64_t n;
    int rc = read_count(c, MP_ARRAY, SL_PACK_MAX_PIECES, 3, &n);
    if (rc)
        return rc;
    if (n == 0)
        return fail(c, -SL_EFORMAT, "%s: a unit without pieces", c->what);
    u->n_pieces = (uint32_t)n;
    for (uint32_t i = 0; i < u->n_pieces; i++) {
        uint64_t two;
        if ((rc = read_count(c, MP_ARRAY, 2, 1, &two)))
            return rc;
        if (two != 2)
            return fail(c, -SL_EFORMAT, "%s: a piece is not [offset, length]", c->what);
        if ((rc = read_uint(c, SL_PACK_MAX_IMAGE, &u->pieces[i].offset)) ||
            (rc = read_uint(c, SL_PACK_MAX_IMAGE, &u->pieces[i].nbytes)))
            return rc;
    }
    return 0;
}

static int parse_unit(pctx *c, sl_pack_unit *u, uint32_t index, char *what, size_t what_size)
{
    uint64_t n, v;
    snprintf(what, what_size, "units[%u]", index);
    c->what = what;
    int rc = read_count(c, MP_MAP, U_KEYS, 2, &n);
    uint32_t seen = 0;
    for (uint64_t k = 0; k < n && rc == 0; k++) {
        int key = 0;
        const uint8_t *s = NULL;
        uint64_t len = 0;
        if ((rc = read_key(c, k_unit_keys, U_KEYS, &seen, &key)))
            break;
        switch (key) {
        case U_NAME:
            if ((rc = read_cstr(c, MAX_UNIT_NAME, (char **)&u->name)) == 0) {
                if (!u->name[0])
                    rc = fail(c, -SL_EFORMAT, "%s: an empty name", what);
                snprintf(what, what_size, "unit %.64s", u->name);
            }
            break;
        case U_KIND:
        case U_CODEC: {
            const bool kind = key == U_KIND;
            if ((rc = read_bytes(c, MP_STR, 16, &s, &len)))
                break;
            int w = kind ? lookup(k_kind_names, SL_PACK_KIND_COUNT, s, len)
                         : lookup(k_codec_names, SL_PACK_CODEC_COUNT, s, len);
            if (w < 0)
                rc = fail(c, -SL_EUNSUPPORTED, "%s: unknown %s \"%.*s\"", what, kind ? "kind" : "codec", (int)len,
                          (const char *)s);
            else if (kind)
                u->kind = (sl_pack_kind)w;
            else
                u->codec = (sl_pack_codec)w;
            break;
        }
        case U_LAYER:
        case U_EXPERT:
        case U_FILE:
            rc = read_uint(c, UINT32_MAX, &v);
            if (key == U_LAYER)
                u->layer = (uint32_t)v;
            else if (key == U_EXPERT)
                u->expert = (uint32_t)v;
            else
                u->file = (uint32_t)v;
            break;
        case U_OFFSET: rc = read_uint(c, UINT64_MAX, &u->offset); break;
        case U_STORED: rc = read_uint(c, SL_PACK_MAX_IMAGE, &u->stored); break;
        case U_SIZE: rc = read_uint(c, SL_PACK_MAX_IMAGE, &u->size); break;
        case U_XXH3: rc = read_uint(c, UINT64_MAX, &u->xxh3); break;
        case U_PIECES: rc = parse_pieces(c, u); break;
        }
    }
    return rc ? rc : missing(c, k_unit_keys, U_KEYS, seen);
}

/* Checks one parsed unit against the rest of the manifest. */
static int check_unit(pctx *c, const sl_pack *p, sl_pack_unit *u)
{
    const char *nm = u->name;
    if (u->file >= p->n_files)
        return fail(c, -SL_ERANGE, "unit %s: file %u, but %u files are listed", nm, u->file, p->n_files);
    const pack_file *f = &p->files[u->file];
    if (u->offset % SL_PACK_ALIGN)
        return fail(c, -SL_EFORMAT, "unit %s: offset %llu in %s is not a multiple of %u", nm,
                    (unsigned long long)u->offset, f->name, SL_PACK_ALIGN);
    if (u->stored == 0 || u->offset > f->size || u->stored > f->size - u->offset)
        return fail(c, -SL_ERANGE, "unit %s: %llu bytes at offset %llu do not fit in %s (%llu bytes)", nm,
                    (unsigned long long)u->stored, (unsigned long long)u->offset, f->name,
                    (unsigned long long)f->size);
    bool has_layer = u->kind == SL_PACK_LAYER || u->kind == SL_PACK_EXPERT;
    if (has_layer != (u->layer != SL_PACK_NONE) || (u->kind == SL_PACK_EXPERT) != (u->expert != SL_PACK_NONE))
        return fail(c, -SL_EFORMAT, "unit %s: kind %s with layer %u, expert %u", nm, sl_pack_kind_name(u->kind),
                    u->layer, u->expert);
    for (uint32_t i = 0; i < u->n_pieces; i++) {
        const sl_pack_piece *pc = &u->pieces[i];
        /* Both are <= SL_PACK_MAX_IMAGE (2^46): the sum cannot overflow,
         * nor can the layout's (at most 32 pieces). */
        if (pc->nbytes == 0 || pc->offset < p->header_len || pc->offset + pc->nbytes > p->image_size)
            return fail(c, -SL_ERANGE, "unit %s: piece [%llu, +%llu) is not inside the tensor data [%zu, %llu)", nm,
                        (unsigned long long)pc->offset, (unsigned long long)pc->nbytes, p->header_len,
                        (unsigned long long)p->image_size);
    }
    uint64_t total = sl_pack_unit_layout(u);
    if (u->size != total)
        return fail(c, -SL_EFORMAT, "unit %s: size %llu, but its pieces lay out to %llu bytes", nm,
                    (unsigned long long)u->size, (unsigned long long)total);
    if (u->codec == SL_PACK_CODEC_NONE && u->stored != u->size)
        return fail(c, -SL_EFORMAT, "unit %s: stored uncompressed in %llu bytes, but its size is %llu", nm,
                    (unsigned long long)u->stored, (unsigned long long)u->size);
    if (u->codec == SL_PACK_CODEC_LZ4 && (u->size > LZ4_MAX_BLOCK || u->stored > LZ4_MAX_BLOCK))
        return fail(c, -SL_ERANGE, "unit %s: %llu bytes is too large for one LZ4 block", nm,
                    (unsigned long long)u->size);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp((*(const sl_pack_unit *const *)a)->name, (*(const sl_pack_unit *const *)b)->name);
}

static int parse_units(pctx *c, sl_pack *p)
{
    uint64_t n;
    c->what = "units";
    int rc = read_count(c, MP_ARRAY, SL_PACK_MAX_UNITS, MIN_UNIT_BYTES, &n);
    if (rc)
        return rc;
    if (n == 0)
        return fail(c, -SL_EFORMAT, "units: the list is empty");
    p->units = calloc(n, sizeof *p->units);
    if (!p->units)
        return fail(c, -SL_ENOMEM, "units: out of memory for %llu entries", (unsigned long long)n);
    p->n_units = (uint32_t)n;
    char what[96];
    for (uint32_t i = 0; i < p->n_units && rc == 0; i++)
        rc = parse_unit(c, &p->units[i], i, what, sizeof what);
    c->what = "units";
    return rc;
}

enum { B_SOURCE, B_IMAGE, B_HEADER, B_REQUANT, B_FILES, B_UNITS, B_KEYS };
static const char *const k_body_keys[B_KEYS] = {"source", "image_size", "header", "requant", "files", "units"};

static int parse_body(pctx *c, sl_pack *p)
{
    uint64_t n;
    c->what = "manifest";
    int rc = read_count(c, MP_MAP, B_KEYS, 2, &n);
    uint32_t seen = 0;
    for (uint64_t k = 0; k < n && rc == 0; k++) {
        int key = 0;
        const uint8_t *s = NULL;
        uint64_t len = 0;
        c->what = "manifest";
        if ((rc = read_key(c, k_body_keys, B_KEYS, &seen, &key)))
            break;
        c->what = k_body_keys[key];
        switch (key) {
        case B_SOURCE: rc = read_cstr(c, MAX_SOURCE, &p->source); break;
        case B_REQUANT: rc = read_cstr(c, MAX_REQUANT, &p->requant); break;
        case B_IMAGE: rc = read_uint(c, SL_PACK_MAX_IMAGE, &p->image_size); break;
        case B_HEADER:
            if ((rc = read_bytes(c, MP_BIN, SL_PACK_MAX_MANIFEST, &s, &len)))
                break;
            if (!(p->header = malloc(len ? len : 1))) {
                rc = fail(c, -SL_ENOMEM, "header: out of memory for %llu bytes", (unsigned long long)len);
                break;
            }
            memcpy(p->header, s, len);
            p->header_len = (size_t)len;
            break;
        case B_FILES: rc = parse_files(c, p); break;
        case B_UNITS: rc = parse_units(c, p); break;
        }
    }
    c->what = "manifest";
    if (rc || (rc = missing(c, k_body_keys, B_KEYS, seen)))
        return rc;
    if (c->p != c->end)
        return fail(c, -SL_EFORMAT, "manifest: %llu bytes follow the body's map", (unsigned long long)left(c));
    if (p->header_len < 24 || p->header_len >= p->image_size)
        return fail(c, -SL_EFORMAT, "header: %zu bytes for an image of %llu bytes", p->header_len,
                    (unsigned long long)p->image_size);
    for (uint32_t i = 0; i < p->n_units && rc == 0; i++) {
        sl_pack_unit *u = &p->units[i];
        if ((rc = check_unit(c, p, u)))
            break;
        if (u->codec != SL_PACK_CODEC_NONE && u->stored > p->max_compressed)
            p->max_compressed = u->stored;
        if (u->size > p->max_size)
            p->max_size = u->size;
    }
    if (rc)
        return rc;
    /* Unit names are what errors name: they must tell units apart. */
    const sl_pack_unit **by_name = malloc(p->n_units * sizeof *by_name);
    if (!by_name)
        return fail(c, -SL_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < p->n_units; i++)
        by_name[i] = &p->units[i];
    qsort(by_name, p->n_units, sizeof *by_name, cmp_names);
    for (uint32_t i = 1; i < p->n_units && rc == 0; i++)
        if (!strcmp(by_name[i - 1]->name, by_name[i]->name))
            rc = fail(c, -SL_EFORMAT, "unit name \"%s\" is used twice", by_name[i]->name);
    free(by_name);
    return rc;
}

/* ---- open / parse / close ------------------------------------------------- */

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

static int parse_frame(pctx *c, const uint8_t *buf, size_t len)
{
    c->what = "manifest";
    if (len < SL_PACK_FRAME_BYTES || memcmp(buf, SL_PACK_MAGIC, 8) != 0)
        return fail(c, -SL_EFORMAT, "not a sluice pack manifest (%zu bytes; the magic \"%s\" is missing)", len,
                    SL_PACK_MAGIC);
    uint32_t version = (uint32_t)le(buf + 8, 4), flags = (uint32_t)le(buf + 12, 4);
    uint64_t body = le(buf + 16, 8), sum = le(buf + 24, 8);
    if (version != SL_PACK_VERSION)
        return fail(c, -SL_EVERSION, "format version %u; this build reads version %u (repack the model)", version,
                    SL_PACK_VERSION);
    if (flags != 0)
        return fail(c, -SL_EUNSUPPORTED, "flags 0x%x are not understood by this build", flags);
    if (body != len - SL_PACK_FRAME_BYTES)
        return fail(c, -SL_EFORMAT, "the frame announces a body of %llu bytes, the file holds %zu (truncated?)",
                    (unsigned long long)body, len - SL_PACK_FRAME_BYTES);
    uint64_t got = sl_pack_checksum(buf + SL_PACK_FRAME_BYTES, (size_t)body);
    if (got != sum)
        return fail(c, -SL_EFORMAT,
                    "checksum mismatch (XXH3 of the body %016llx, the frame says %016llx): the manifest was "
                    "edited or damaged",
                    (unsigned long long)got, (unsigned long long)sum);
    c->p = buf + SL_PACK_FRAME_BYTES;
    c->end = buf + len;
    return 0;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (s) {
        memcpy(s, dir, a);
        s[a] = '/';
        memcpy(s + a + 1, name, b + 1);
    }
    return s;
}

int sl_pack_parse(const void *buf, size_t len, const char *dir, sl_pack **out)
{
    *out = NULL;
    pctx c = {0};
    sl_pack *p = calloc(1, sizeof *p);
    if (!p) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    int rc = parse_frame(&c, buf, len);
    if (rc == 0)
        rc = parse_body(&c, p);
    if (rc == 0 && dir) {
        if (!(p->dir = strdup(dir)))
            rc = fail(&c, -SL_ENOMEM, "out of memory");
        for (uint32_t i = 0; i < p->n_files && rc == 0; i++)
            if (!(p->files[i].path = join(dir, p->files[i].name)))
                rc = fail(&c, -SL_ENOMEM, "out of memory");
    }
    if (rc) {
        SL_ERROR("%s%s%s: %s", dir ? dir : "", dir ? "/" : "", SL_PACK_MANIFEST, c.why);
        sl_pack_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Reads a whole file of at most `max` bytes into a malloc'd buffer. */
static int read_whole(const char *path, uint64_t max, uint8_t **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        SL_ERROR("cannot open %s: %s", path, strerror(errno));
        return -SL_EIO;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        SL_ERROR("%s is not a regular file", path);
        rc = -SL_EIO;
    } else if ((uint64_t)st.st_size > max) {
        SL_ERROR("%s has %lld bytes, more than a manifest may (%llu)", path, (long long)st.st_size,
                 (unsigned long long)max);
        rc = -SL_EFORMAT;
    } else if (!(*buf = malloc((size_t)st.st_size + 1))) {
        SL_ERROR("out of memory for %lld bytes", (long long)st.st_size);
        rc = -SL_ENOMEM;
    }
    size_t got = 0;
    while (rc == 0 && got < (size_t)st.st_size) {
        ssize_t n = read(fd, *buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            SL_ERROR("reading %s failed: %s", path, n < 0 ? strerror(errno) : "it shrank while being read");
            rc = -SL_EIO;
        } else {
            got += (size_t)n;
        }
    }
    close(fd);
    if (rc && *buf) {
        free(*buf);
        *buf = NULL;
    }
    *len = got;
    return rc;
}

int sl_pack_open(const char *dir, sl_pack **out)
{
    *out = NULL;
    char *path = join(dir, SL_PACK_MANIFEST);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!path) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    int rc = read_whole(path, SL_PACK_MAX_MANIFEST, &buf, &len);
    free(path);
    if (rc)
        return rc;
    sl_pack *p;
    rc = sl_pack_parse(buf, len, dir, &p);
    free(buf);
    if (rc)
        return rc;
    /* A shard of another size was truncated, extended or replaced since it
     * was packed: refuse it now, by name, rather than at the first read. */
    for (uint32_t i = 0; i < p->n_files && rc == 0; i++) {
        struct stat st;
        const pack_file *f = &p->files[i];
        if (stat(f->path, &st) != 0) {
            SL_ERROR("shard %s of the packed model %s: %s", f->name, dir, strerror(errno));
            rc = -SL_EIO;
        } else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != f->size) {
            SL_ERROR("shard %s of the packed model %s has %lld bytes; the manifest says %llu: the shard was "
                     "truncated or replaced",
                     f->path, dir, (long long)st.st_size, (unsigned long long)f->size);
            rc = -SL_EIO;
        }
    }
    if (rc) {
        sl_pack_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

void sl_pack_close(sl_pack *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; p->files && i < p->n_files; i++) {
        free(p->files[i].name);
        free(p->files[i].path);
    }
    for (uint32_t i = 0; p->units && i < p->n_units; i++)
        free((char *)p->units[i].name);
    free(p->files);
    free(p->units);
    free(p->header);
    free(p->source);
    free(p->requant);
    free(p->dir);
    free(p);
}

/* ---- accessors ------------------------------------------------------------ */

const char *sl_pack_dir(const sl_pack *p) { return p->dir; }
uint64_t sl_pack_image_size(const sl_pack *p) { return p->image_size; }
const char *sl_pack_source(const sl_pack *p) { return p->source; }
const char *sl_pack_requant(const sl_pack *p) { return p->requant; }
uint32_t sl_pack_file_count(const sl_pack *p) { return p->n_files; }
uint32_t sl_pack_unit_count(const sl_pack *p) { return p->n_units; }
uint64_t sl_pack_max_compressed(const sl_pack *p) { return p->max_compressed; }
uint64_t sl_pack_max_size(const sl_pack *p) { return p->max_size; }

const uint8_t *sl_pack_header(const sl_pack *p, size_t *len)
{
    *len = p->header_len;
    return p->header;
}

const char *sl_pack_file_name(const sl_pack *p, uint32_t i)
{
    SL_ASSERT(i < p->n_files);
    return p->files[i].name;
}

uint64_t sl_pack_file_size(const sl_pack *p, uint32_t i)
{
    SL_ASSERT(i < p->n_files);
    return p->files[i].size;
}

const char *sl_pack_file_path(const sl_pack *p, uint32_t i)
{
    SL_ASSERT(i < p->n_files);
    return p->files[i].path;
}

const sl_pack_unit *sl_pack_unit_at(const sl_pack *p, uint32_t i)
{
    SL_ASSERT(i < p->n_units);
    return &p->units[i];
}

int64_t sl_pack_unit_find(const sl_pack *p, uint64_t offset, uint64_t nbytes)
{
    for (uint32_t i = 0; i < p->n_units; i++) {
        const sl_pack_unit *u = &p->units[i];
        uint64_t total = 0;
        for (uint32_t k = 0; k < u->n_pieces; k++)
            total += u->pieces[k].nbytes;
        if (u->pieces[0].offset == offset && total == nbytes)
            return i;
    }
    return -1;
}

uint64_t sl_pack_unit_layout(sl_pack_unit *u)
{
    uint64_t window = 0, end = 0;
    for (uint32_t i = 0; i < u->n_pieces; i++) {
        sl_pack_piece *pc = &u->pieces[i];
        const uint64_t lead = pc->offset % SL_PACK_ALIGN;
        pc->at = window + lead;
        end = pc->at + pc->nbytes;
        window += (lead + pc->nbytes + SL_PACK_ALIGN - 1) / SL_PACK_ALIGN * SL_PACK_ALIGN;
    }
    return end;
}

/* ---- the image ------------------------------------------------------------ */

typedef struct span {
    uint64_t start, end;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Checks that the pieces cover every tensor of g (a tensor can take
 * several: each expert of a 3-D expert tensor is a piece of its own unit):
 * the pieces, sorted by start and merged where they overlap or touch,
 * become disjoint covered spans; a tensor is covered when the span that
 * starts at or before it reaches its end (binary search). */
static int check_coverage(const sl_pack *p, const sl_gguf *g)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < p->n_units; i++)
        n += p->units[i].n_pieces;
    span *s = malloc(n * sizeof *s);
    if (!s) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    uint64_t k = 0;
    for (uint32_t i = 0; i < p->n_units; i++)
        for (uint32_t j = 0; j < p->units[i].n_pieces; j++) {
            const sl_pack_piece *pc = &p->units[i].pieces[j];
            s[k++] = (span){pc->offset, pc->offset + pc->nbytes};
        }
    qsort(s, n, sizeof *s, cmp_span);
    uint64_t m = 0; /* merged spans in s[0..m) */
    for (uint64_t i = 0; i < n; i++) {
        if (m && s[i].start <= s[m - 1].end) {
            if (s[i].end > s[m - 1].end)
                s[m - 1].end = s[i].end;
        } else {
            s[m++] = s[i];
        }
    }
    n = m;
    int rc = 0;
    for (uint64_t t = 0; t < sl_gguf_tensor_count(g) && rc == 0; t++) {
        const sl_gguf_tensor *ti = sl_gguf_tensor_at(g, t);
        if (ti->nbytes == 0)
            continue;
        uint64_t lo = 0, hi = n; /* find the last piece with start <= offset */
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (s[mid].start <= ti->offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == 0 || s[lo - 1].end < ti->offset + ti->nbytes) {
            SL_ERROR("%s: tensor %.*s (bytes [%llu, +%llu) of the image) is not all in the manifest's units",
                     p->dir ? p->dir : "packed model", (int)ti->name.len, ti->name.ptr,
                     (unsigned long long)ti->offset, (unsigned long long)ti->nbytes);
            rc = -SL_EFORMAT;
        }
    }
    free(s);
    return rc;
}

int sl_pack_image_open(const sl_pack *p, sl_gguf **g, uint8_t **image)
{
    *g = NULL;
    *image = NULL;
    void *map = mmap(NULL, (size_t)p->image_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (map == MAP_FAILED) {
        SL_ERROR("cannot map an image of %llu bytes for %s: %s", (unsigned long long)p->image_size,
                 p->dir ? p->dir : "a packed model", strerror(errno));
        return -SL_ENOMEM;
    }
    memcpy(map, p->header, p->header_len);
    int rc = sl_gguf_open_mapping(map, (size_t)p->image_size, g); /* unmaps on failure */
    if (rc) {
        SL_ERROR("%s: the manifest's GGUF header is not valid: %s", p->dir ? p->dir : "packed model",
                 sl_strerror(rc));
        return rc;
    }
    if (sl_gguf_data_offset(*g) != p->header_len) {
        SL_ERROR("%s: the manifest's header has %zu bytes, but the GGUF header in it ends at %llu",
                 p->dir ? p->dir : "packed model", p->header_len, (unsigned long long)sl_gguf_data_offset(*g));
        rc = -SL_EFORMAT;
    }
    if (rc == 0)
        rc = check_coverage(p, *g);
    if (rc) {
        sl_gguf_close(*g);
        *g = NULL;
        return rc;
    }
    *image = map;
    return 0;
}

void sl_pack_unit_place(const sl_pack_unit *u, const void *payload, uint8_t *image)
{
    for (uint32_t i = 0; i < u->n_pieces; i++)
        memcpy(image + u->pieces[i].offset, (const uint8_t *)payload + u->pieces[i].at, u->pieces[i].nbytes);
}
