/* The native fast lane of the KV-event subscribers (see lane.py): for every endpoint, read its
 * engine's PUB socket straight from the TCP connection (ZMTP 3.0 frames, after the handshake
 * zmtp.py made), and for a stream that is live and in order decode each vLLM batch and apply it
 * to the precise index's key table — exactly what EndpointStream.on_live and PreciseIndex.apply
 * do for such a batch, without a Python call, and without libzmq's I/O thread waking for every
 * message: the sockets are read on the subscribers' drain timer, all at once.
 *
 * The lane only ever takes the common case. A batch it is not sure of (out of order, another
 * layout, an AllBlocksCleared, a KV-cache group still to learn, a block size or a first block
 * to check, anything malformed) closes the lane before anything of it is applied and is handed
 * back, with every message after it, to the Python path, which stays the reference
 * (tests/datalayer/test_kv_lane.py runs both on the same streams and compares them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <sys/socket.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

/* ---- msgpack, just what a vLLM batch uses -------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
} Reader;

static inline int
need(Reader *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n;
}

static inline uint64_t
be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* A container's header (`fix`: its fixed form's high nibble; `wide16`, `wide32`: the forms
 * with a 2- and 4-byte count); 1 on success. */
static int
read_count(Reader *r, uint32_t *n, uint8_t fix, uint8_t wide16, uint8_t wide32)
{
    if (!need(r, 1))
        return 0;
    uint8_t b = *r->p;
    if ((b & 0xF0) == fix) {
        *n = b & 0x0F;
        r->p += 1;
        return 1;
    }
    if (b == wide16 && need(r, 3)) {
        *n = (uint32_t)be(r->p + 1, 2);
        r->p += 3;
        return 1;
    }
    if (b == wide32 && need(r, 5)) {
        *n = (uint32_t)be(r->p + 1, 4);
        r->p += 5;
        return 1;
    }
    return 0;
}

static inline int
read_array(Reader *r, uint32_t *n)
{
    return read_count(r, n, 0x90, 0xDC, 0xDD);
}

static inline int
read_map(Reader *r, uint32_t *n)
{
    return read_count(r, n, 0x80, 0xDE, 0xDF);
}

/* Whether `s` is valid UTF-8 (msgspec refuses a string that is not: so does the lane, for every
 * string it reads or skips — stricter than needed inside raw token ids, which is safe). */
static int
utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0)
            len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, cp = c & 0x07;
        else
            return 0;
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0; /* overlong, out of range, or a surrogate */
        i += len;
    }
    return 1;
}

static int
read_str(Reader *r, const char **s, uint32_t *n)
{
    if (!need(r, 1))
        return 0;
    uint8_t b = *r->p;
    size_t head, len;
    if ((b & 0xE0) == 0xA0) {
        head = 1, len = b & 0x1F;
    } else if (b == 0xD9 && need(r, 2)) {
        head = 2, len = r->p[1];
    } else if (b == 0xDA && need(r, 3)) {
        head = 3, len = be(r->p + 1, 2);
    } else if (b == 0xDB && need(r, 5)) {
        head = 5, len = be(r->p + 1, 4);
    } else {
        return 0;
    }
    if (!need(r, head + len) || !utf8_ok(r->p + head, len))
        return 0;
    *s = (const char *)r->p + head;
    *n = (uint32_t)len;
    r->p += head + len;
    return 1;
}

static inline int
is_nil(Reader *r)
{
    if (need(r, 1) && *r->p == 0xC0) {
        r->p += 1;
        return 1;
    }
    return 0;
}

/* An integer as the two's-complement low 64 bits of its value (what `int & mask` keeps);
 * `fits` is whether it is also an int64 (a group index, a block size). */
static int
read_int(Reader *r, uint64_t *v, int *fits)
{
    if (!need(r, 1))
        return 0;
    uint8_t b = *r->p;
    *fits = 1;
    if (b <= 0x7F) {
        *v = b;
        r->p += 1;
        return 1;
    }
    if (b >= 0xE0) {
        *v = (uint64_t)(int64_t)(int8_t)b;
        r->p += 1;
        return 1;
    }
    int n;
    int sign;
    switch (b) {
    case 0xCC: n = 1, sign = 0; break;
    case 0xCD: n = 2, sign = 0; break;
    case 0xCE: n = 4, sign = 0; break;
    case 0xCF: n = 8, sign = 0; break;
    case 0xD0: n = 1, sign = 1; break;
    case 0xD1: n = 2, sign = 1; break;
    case 0xD2: n = 4, sign = 1; break;
    case 0xD3: n = 8, sign = 1; break;
    default: return 0;
    }
    if (!need(r, 1 + (size_t)n))
        return 0;
    uint64_t raw = be(r->p + 1, n);
    if (sign && n < 8 && (raw >> (8 * n - 1)) & 1)
        raw |= ~(uint64_t)0 << (8 * n);  /* sign-extend */
    if (!sign && n == 8 && raw > (uint64_t)INT64_MAX)
        *fits = 0;
    *v = raw;
    r->p += 1 + n;
    return 1;
}

static int
read_number(Reader *r)
{
    uint64_t v;
    int fits;
    if (read_int(r, &v, &fits))
        return 1;
    if (need(r, 5) && *r->p == 0xCA) {
        r->p += 5;
        return 1;
    }
    if (need(r, 9) && *r->p == 0xCB) {
        r->p += 9;
        return 1;
    }
    return 0;
}

/* Skips one value of any type (nesting bounded). */
static int
skip(Reader *r, int depth)
{
    if (depth > 32 || !need(r, 1))
        return 0;
    uint8_t b = *r->p;
    uint32_t n;
    const char *s;
    if (b <= 0x7F || b >= 0xE0 || b == 0xC0 || b == 0xC2 || b == 0xC3) {
        r->p += 1;
        return 1;
    }
    if ((b & 0xE0) == 0xA0 || (b >= 0xD9 && b <= 0xDB))
        return read_str(r, &s, &n);
    if ((b & 0xF0) == 0x90 || b == 0xDC || b == 0xDD) {
        if (!read_array(r, &n))
            return 0;
        for (uint32_t i = 0; i < n; i++) {
            /* token ids, most of a batch's bytes: small ints inline */
            if (need(r, 3)) {
                uint8_t c = *r->p;
                if (c <= 0x7F || c >= 0xE0) {
                    r->p += 1;
                    continue;
                }
                if (c == 0xCC || c == 0xD0) {
                    r->p += 2;
                    continue;
                }
                if (c == 0xCD || c == 0xD1) {
                    r->p += 3;
                    continue;
                }
                if ((c == 0xCE || c == 0xD2) && need(r, 5)) { /* vocabularies over 65k */
                    r->p += 5;
                    continue;
                }
            }
            if (!skip(r, depth + 1))
                return 0;
        }
        return 1;
    }
    if ((b & 0xF0) == 0x80 || b == 0xDE || b == 0xDF) {
        if (!read_map(r, &n))
            return 0;
        for (uint32_t i = 0; i < 2 * n; i++)
            if (!skip(r, depth + 1))
                return 0;
        return 1;
    }
    size_t len, head;
    switch (b) {
    case 0xCC: case 0xD0: head = 1, len = 1; break;
    case 0xCD: case 0xD1: head = 1, len = 2; break;
    case 0xCE: case 0xD2: case 0xCA: head = 1, len = 4; break;
    case 0xCF: case 0xD3: case 0xCB: head = 1, len = 8; break;
    case 0xC4: if (!need(r, 2)) return 0; head = 2, len = r->p[1]; break;
    case 0xC5: if (!need(r, 3)) return 0; head = 3, len = be(r->p + 1, 2); break;
    case 0xC6: if (!need(r, 5)) return 0; head = 5, len = be(r->p + 1, 4); break;
    case 0xD4: head = 2, len = 1; break;
    case 0xD5: head = 2, len = 2; break;
    case 0xD6: head = 2, len = 4; break;
    case 0xD7: head = 2, len = 8; break;
    case 0xD8: head = 2, len = 16; break;
    case 0xC7: if (!need(r, 3)) return 0; head = 3, len = r->p[1]; break;
    case 0xC8: if (!need(r, 4)) return 0; head = 4, len = be(r->p + 1, 2); break;
    case 0xC9: if (!need(r, 6)) return 0; head = 6, len = be(r->p + 1, 4); break;
    default: return 0;
    }
    if (!need(r, head + len))
        return 0;
    r->p += head + len;
    return 1;
}

/* Optional typed fields as the typed decoders take them: nil or the type. */
static int
opt_int(Reader *r, int *present, int64_t *v)
{
    uint64_t raw;
    int fits;
    if (is_nil(r)) {
        *present = 0;
        return 1;
    }
    if (!read_int(r, &raw, &fits) || !fits)
        return 0;
    *present = 1;
    *v = (int64_t)raw;
    return 1;
}

static int
opt_str(Reader *r, int *present, const char **s, uint32_t *n)
{
    if (is_nil(r)) {
        *present = 0;
        return 1;
    }
    *present = 1;
    return read_str(r, s, n);
}

static int
opt_array(Reader *r)  /* extra_keys: nil or a list of anything */
{
    if (is_nil(r))
        return 1;
    if (!need(r, 1))
        return 0;
    uint8_t b = *r->p;
    if (!((b & 0xF0) == 0x90 || b == 0xDC || b == 0xDD))
        return 0;
    return skip(r, 0);
}

/* ---- a batch, decoded into operations ------------------------------------------------------- */

enum { OP_SKIP_TIER, OP_SKIP_GROUP, OP_STORE, OP_REMOVE };

typedef struct {
    int op;
    Py_ssize_t first, count; /* hashes[first : first + count] */
} Op;

typedef struct {
    Op *ops;
    Py_ssize_t nops, cap_ops;
    uint64_t *hashes;
    Py_ssize_t nhashes, cap_hashes;
    Py_ssize_t events;
} Batch;

static Batch scratch;
static PyObject *one; /* the int 1 */

static int
grow(void **buf, Py_ssize_t *cap, Py_ssize_t want, size_t item)
{
    if (want <= *cap)
        return 1;
    Py_ssize_t cap2 = *cap ? *cap : 64;
    while (cap2 < want)
        cap2 *= 2;
    void *p = PyMem_Realloc(*buf, (size_t)cap2 * item);
    if (p == NULL)
        return 0;
    *buf = p;
    *cap = cap2;
    return 1;
}

static int
read_hashes(Reader *r, Batch *b, Py_ssize_t *first, Py_ssize_t *count)
{
    uint32_t n;
    if (!read_array(r, &n))
        return 0;
    if (!grow((void **)&b->hashes, &b->cap_hashes, b->nhashes + n, sizeof(uint64_t)))
        return 0;
    *first = b->nhashes;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t v;
        int fits;
        if (!read_int(r, &v, &fits))  /* bytes digests: the Python path */
            return 0;
        b->hashes[b->nhashes++] = v;
    }
    *count = n;
    return 1;
}

/* What the lane knows of the endpoint's index entry (see Lane). */
typedef struct {
    int group_known;
    int64_t group;
    int64_t block_size;
    int verified;
} Known;

#define MEDIUM_IS_GPU(present, s, n) (!(present) || ((n) == 3 && memcmp((s), "GPU", 3) == 0))

/* One event's fields, from either layout. */
typedef struct {
    int kind; /* 1 stored, 2 removed */
    Py_ssize_t first, count;
    int have_hashes, have_parent, have_tokens, have_size;
    int parent_present;
    int64_t block_size;
    int medium_present;
    const char *medium;
    uint32_t medium_len;
    int group_present;
    int64_t group;
} Fields;

/* The op an event becomes, as PreciseIndex.apply would take it; 0: the Python path. */
static int
event_op(const Fields *f, const Known *k, Batch *b)
{
    if (!grow((void **)&b->ops, &b->cap_ops, b->nops + 1, sizeof(Op)))
        return 0;
    Op *op = &b->ops[b->nops];
    op->first = f->first;
    op->count = f->count;
    if (!MEDIUM_IS_GPU(f->medium_present, f->medium, f->medium_len)) {
        op->op = OP_SKIP_TIER;
    } else if (f->group_present && !(k->group_known && f->group == k->group)) {
        if (f->kind == 1 && !k->group_known)
            return 0; /* a group to learn */
        op->op = OP_SKIP_GROUP;
    } else if (f->kind == 1) {
        if (f->block_size != k->block_size)
            return 0; /* the endpoint becomes unusable */
        if (!f->parent_present && !k->verified)
            return 0; /* the first block's hash to check */
        op->op = OP_STORE;
    } else {
        op->op = OP_REMOVE;
    }
    b->nops++;
    return 1;
}

static int
tag_of(const char *s, uint32_t n)
{
    if (n == 11 && memcmp(s, "BlockStored", 11) == 0)
        return 1;
    if (n == 12 && memcmp(s, "BlockRemoved", 12) == 0)
        return 2;
    return 0; /* AllBlocksCleared or unknown: the Python path */
}

static int
array_event(Reader *r, uint32_t n, const Known *k, Batch *b)
{
    Fields f = {0};
    const char *s;
    uint32_t len;
    if (n < 1 || !read_str(r, &s, &len))
        return 0;
    f.kind = tag_of(s, len);
    if (f.kind == 1) {
        /* [tag, hashes, parent, token_ids, block_size, lora_id?, medium?, lora_name?,
         *  extra_keys?, group_idx?, kv_cache_spec_kind?, kv_cache_spec_sliding_window?] */
        if (n < 5 || n > 12)
            return 0;
        int64_t ignored;
        int present;
        uint64_t parent, size;
        int fits;
        if (!read_hashes(r, b, &f.first, &f.count))
            return 0;
        f.parent_present = !is_nil(r);
        if (f.parent_present && !read_int(r, &parent, &fits))
            return 0;
        if (!skip(r, 0)) /* token_ids: kept raw */
            return 0;
        if (!read_int(r, &size, &fits) || !fits)
            return 0;
        f.block_size = (int64_t)size;
        uint32_t i = 5;
        if (i++ < n && !opt_int(r, &present, &ignored))
            return 0;
        if (i++ < n && !opt_str(r, &f.medium_present, &f.medium, &f.medium_len))
            return 0;
        if (i++ < n && !opt_str(r, &present, &s, &len))
            return 0;
        if (i++ < n && !opt_array(r))
            return 0;
        if (i++ < n && !opt_int(r, &f.group_present, &f.group))
            return 0;
        if (i++ < n && !opt_str(r, &present, &s, &len))
            return 0;
        if (i++ < n && !opt_int(r, &present, &ignored))
            return 0;
    } else if (f.kind == 2) {
        if (n < 2 || n > 4)
            return 0;
        if (!read_hashes(r, b, &f.first, &f.count))
            return 0;
        if (n > 2 && !opt_str(r, &f.medium_present, &f.medium, &f.medium_len))
            return 0;
        if (n > 3 && !opt_int(r, &f.group_present, &f.group))
            return 0;
    } else {
        return 0;
    }
    return event_op(&f, k, b);
}

/* A map key against a literal: the lengths first (most keys differ in length). */
#define key_is(s, n, name) ((n) == sizeof(name) - 1 && memcmp((s), (name), sizeof(name) - 1) == 0)

static int
map_event(Reader *r, uint32_t n, const Known *k, Batch *b)
{
    /* Fields by name, any order, unknown ones skipped (as msgspec does); a key seen twice or
     * a required field missing goes to the Python path. */
    Fields f = {0};
    int kind = 0, seen_type = 0;
    int have_lora_id = 0, have_medium = 0, have_lora_name = 0, have_extra = 0, have_group = 0,
        have_kind = 0, have_window = 0;
    Py_ssize_t mark = b->nhashes;
    for (uint32_t i = 0; i < n; i++) {
        const char *key, *s;
        uint32_t klen, len;
        int present;
        int64_t ignored;
        uint64_t raw;
        int fits;
        if (!read_str(r, &key, &klen))
            return 0;
#define ONCE(flag)                                                                             \
    do {                                                                                       \
        if (flag)                                                                              \
            return 0;                                                                          \
        flag = 1;                                                                              \
    } while (0)
        if (key_is(key, klen, "type")) {
            ONCE(seen_type);
            if (!read_str(r, &s, &len))
                return 0;
            kind = tag_of(s, len);
            if (!kind)
                return 0;
        } else if (key_is(key, klen, "block_hashes")) {
            ONCE(f.have_hashes);
            if (!read_hashes(r, b, &f.first, &f.count))
                return 0;
        } else if (key_is(key, klen, "medium")) {
            ONCE(have_medium);
            if (!opt_str(r, &f.medium_present, &f.medium, &f.medium_len))
                return 0;
        } else if (key_is(key, klen, "group_idx")) {
            ONCE(have_group);
            if (!opt_int(r, &f.group_present, &f.group))
                return 0;
        } else if (key_is(key, klen, "parent_block_hash")) {
            ONCE(f.have_parent);
            f.parent_present = !is_nil(r);
            if (f.parent_present && !read_int(r, &raw, &fits))
                return 0;
        } else if (key_is(key, klen, "token_ids")) {
            ONCE(f.have_tokens);
            if (!skip(r, 0))
                return 0;
        } else if (key_is(key, klen, "block_size")) {
            ONCE(f.have_size);
            if (!read_int(r, &raw, &fits) || !fits)
                return 0;
            f.block_size = (int64_t)raw;
        } else if (key_is(key, klen, "lora_id")) {
            ONCE(have_lora_id);
            if (!opt_int(r, &present, &ignored))
                return 0;
        } else if (key_is(key, klen, "lora_name")) {
            ONCE(have_lora_name);
            if (!opt_str(r, &present, &s, &len))
                return 0;
        } else if (key_is(key, klen, "extra_keys")) {
            ONCE(have_extra);
            if (!opt_array(r))
                return 0;
        } else if (key_is(key, klen, "kv_cache_spec_kind")) {
            ONCE(have_kind);
            if (!opt_str(r, &present, &s, &len))
                return 0;
        } else if (key_is(key, klen, "kv_cache_spec_sliding_window")) {
            ONCE(have_window);
            if (!opt_int(r, &present, &ignored))
                return 0;
        } else if (!skip(r, 0)) {
            return 0;
        }
#undef ONCE
    }
    (void)mark;
    f.kind = kind;
    if (!f.have_hashes)
        return 0;
    if (kind == 1) {
        if (!f.have_parent || !f.have_tokens || !f.have_size)
            return 0;
    } else if (kind == 2) {
        /* a BlockRemoved's fields are block_hashes, medium, group_idx: others mean another
         * type's fields were sent under its tag — let msgspec judge */
        if (f.have_parent || f.have_tokens || f.have_size || have_lora_id || have_lora_name ||
            have_extra || have_kind || have_window)
            return 0;
    } else {
        return 0;
    }
    return event_op(&f, k, b);
}

/* Decodes `payload` into `b`; 1 when every event is one the lane takes. */
static int
decode_batch(const uint8_t *data, size_t size, const Known *k, Batch *b)
{
    Reader r = {data, data + size};
    uint32_t n, events;
    b->nops = b->nhashes = 0;
    /* [ts, events, data_parallel_rank?] (a batch that is a map: the Python path) */
    if (!read_array(&r, &n) || n < 2 || n > 3)
        return 0;
    if (!read_number(&r) || !read_array(&r, &events))
        return 0;
    b->events = events;
    for (uint32_t i = 0; i < events; i++) {
        uint32_t m;
        if (!need(&r, 1))
            return 0;
        uint8_t head = *r.p;
        if ((head & 0xF0) == 0x90 || head == 0xDC || head == 0xDD) {
            if (!read_array(&r, &m) || !array_event(&r, m, k, b))
                return 0;
        } else if (read_map(&r, &m)) {
            if (!map_event(&r, m, k, b))
                return 0;
        } else {
            return 0;
        }
    }
    if (n == 3) {
        int present;
        int64_t rank;
        if (!opt_int(&r, &present, &rank))
            return 0;
    }
    return r.p == r.end;
}


/* ---- KeyTable: the precise index's key -> holders map ------------------------------------- */

/* A hash table of uint64 keys to int objects with the dict operations PreciseIndex uses (get,
 * pop, setdefault, [], del, len, keys, items): keys kept inline (no int object per key, one
 * cache miss a lookup instead of a dict's three), open addressing with linear probing and
 * backward-shift deletion (no tombstones), at most 70 % full. Values are the index's ints (the
 * slots' shared "holds" objects, or packed bits), never containers: no cycles, no GC. */

typedef struct {
    uint64_t key;
    PyObject *value; /* NULL: empty */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries;
    size_t mask; /* capacity - 1 */
    Py_ssize_t used;
} KeyTable;

static PyTypeObject KeyTableType;

static inline size_t
bucket(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 29) & mask;
}

static int
kt_alloc(KeyTable *t, size_t capacity)
{
    Entry *entries = PyMem_Calloc(capacity, sizeof(Entry));
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->entries = entries;
    t->mask = capacity - 1;
    return 0;
}

static inline Py_ssize_t
kt_find(const KeyTable *t, uint64_t key)
{
    size_t mask = t->mask, i = bucket(key, mask);
    for (;;) {
        const Entry *e = &t->entries[i];
        if (e->value == NULL)
            return -1;
        if (e->key == key)
            return (Py_ssize_t)i;
        i = (i + 1) & mask;
    }
}

static int
kt_grow(KeyTable *t)
{
    Entry *old = t->entries;
    size_t capacity = t->mask + 1;
    if (kt_alloc(t, capacity * 2) < 0)
        return -1;
    for (size_t j = 0; j < capacity; j++) {
        if (old[j].value == NULL)
            continue;
        size_t i = bucket(old[j].key, t->mask);
        while (t->entries[i].value != NULL)
            i = (i + 1) & t->mask;
        t->entries[i] = old[j];
    }
    PyMem_Free(old);
    return 0;
}

/* The entry for `key`, made (value NULL) if absent; NULL on no memory. */
static Entry *
kt_slot(KeyTable *t, uint64_t key, int *fresh)
{
    if ((size_t)(t->used + 1) * 10 > (t->mask + 1) * 7 && kt_grow(t) < 0)
        return NULL;
    size_t mask = t->mask, i = bucket(key, mask);
    for (;;) {
        Entry *e = &t->entries[i];
        if (e->value == NULL) {
            e->key = key;
            *fresh = 1;
            return e;
        }
        if (e->key == key) {
            *fresh = 0;
            return e;
        }
        i = (i + 1) & mask;
    }
}

/* Removes entry `i` (its value's reference goes to the caller), shifting back the run after it. */
static PyObject *
kt_take(KeyTable *t, size_t i)
{
    size_t mask = t->mask;
    PyObject *value = t->entries[i].value;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        Entry *e = &t->entries[j];
        if (e->value == NULL)
            break;
        size_t home = bucket(e->key, mask);
        /* e may move to the hole at i when its home is not in (i, j] (cyclically) */
        if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
            t->entries[i] = *e;
            i = j;
        }
    }
    t->entries[i].value = NULL;
    t->used--;
    return value;
}

static int
kt_set(KeyTable *t, uint64_t key, PyObject *value)
{
    int fresh;
    Entry *e = kt_slot(t, key, &fresh);
    if (e == NULL)
        return -1;
    Py_INCREF(value);
    if (fresh) {
        e->value = value;
        t->used++;
    } else {
        Py_SETREF(e->value, value);
    }
    return 0;
}

/* A key as the table keeps it; 0 (no error set) when it is not an int in [0, 2**64): such a
 * key is in no table. */
static int
kt_key(PyObject *obj, uint64_t *key)
{
    if (!PyLong_Check(obj))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    *key = v;
    return 1;
}

static PyObject *
KeyTable_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "KeyTable() takes no arguments");
        return NULL;
    }
    KeyTable *t = (KeyTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    if (kt_alloc(t, 64) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void
KeyTable_dealloc(KeyTable *t)
{
    if (t->entries != NULL) {
        for (size_t i = 0; i <= t->mask; i++)
            Py_XDECREF(t->entries[i].value);
        PyMem_Free(t->entries);
    }
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static Py_ssize_t
KeyTable_len(KeyTable *t)
{
    return t->used;
}

static PyObject *
KeyTable_subscript(KeyTable *t, PyObject *obj)
{
    uint64_t key;
    int ok = kt_key(obj, &key);
    if (ok < 0)
        return NULL;
    Py_ssize_t i = ok ? kt_find(t, key) : -1;
    if (i < 0) {
        PyErr_SetObject(PyExc_KeyError, obj);
        return NULL;
    }
    PyObject *value = t->entries[i].value;
    Py_INCREF(value);
    return value;
}

static int
KeyTable_ass_subscript(KeyTable *t, PyObject *obj, PyObject *value)
{
    uint64_t key;
    int ok = kt_key(obj, &key);
    if (ok < 0)
        return -1;
    if (value == NULL) {
        Py_ssize_t i = ok ? kt_find(t, key) : -1;
        if (i < 0) {
            PyErr_SetObject(PyExc_KeyError, obj);
            return -1;
        }
        Py_DECREF(kt_take(t, (size_t)i));
        return 0;
    }
    if (!ok) {
        PyErr_SetString(PyExc_OverflowError, "a KeyTable key is an int in [0, 2**64)");
        return -1;
    }
    return kt_set(t, key, value);
}

static int
KeyTable_contains(KeyTable *t, PyObject *obj)
{
    uint64_t key;
    int ok = kt_key(obj, &key);
    if (ok <= 0)
        return ok;
    return kt_find(t, key) >= 0;
}

/* The key of a get/pop/setdefault call: 1 (in `key`), 0 for a key no table holds, -1 on an
 * error (a wrong number of arguments: `usage`). */
static int
kt_call_key(PyObject *const *args, Py_ssize_t nargs, const char *usage, uint64_t *key)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    return kt_key(args[0], key);
}

static PyObject *
KeyTable_get(KeyTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t key;
    int ok = kt_call_key(args, nargs, "get(key, default=None)", &key);
    if (ok < 0)
        return NULL;
    Py_ssize_t i = ok ? kt_find(t, key) : -1;
    PyObject *value = i >= 0 ? t->entries[i].value : (nargs == 2 ? args[1] : Py_None);
    Py_INCREF(value);
    return value;
}

static PyObject *
KeyTable_pop(KeyTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t key;
    int ok = kt_call_key(args, nargs, "pop(key[, default])", &key);
    if (ok < 0)
        return NULL;
    Py_ssize_t i = ok ? kt_find(t, key) : -1;
    if (i >= 0)
        return kt_take(t, (size_t)i);
    if (nargs == 2) {
        Py_INCREF(args[1]);
        return args[1];
    }
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

static PyObject *
KeyTable_setdefault(KeyTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t key;
    int ok = kt_call_key(args, nargs, "setdefault(key, default=None)", &key);
    if (ok < 0)
        return NULL;
    if (!ok) {
        PyErr_SetString(PyExc_OverflowError, "a KeyTable key is an int in [0, 2**64)");
        return NULL;
    }
    PyObject *deflt = nargs == 2 ? args[1] : Py_None;
    int fresh;
    Entry *e = kt_slot(t, key, &fresh);
    if (e == NULL)
        return NULL;
    if (fresh) {
        Py_INCREF(deflt);
        e->value = deflt;
        t->used++;
    }
    Py_INCREF(e->value);
    return e->value;
}

static PyObject *
KeyTable_keys(KeyTable *t, PyObject *unused)
{
    PyObject *out = PyList_New(t->used);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = 0;
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->entries[i].value == NULL)
            continue;
        PyObject *key = PyLong_FromUnsignedLongLong(t->entries[i].key);
        if (key == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, n++, key);
    }
    return out;
}

static PyObject *
KeyTable_items(KeyTable *t, PyObject *unused)
{
    PyObject *out = PyList_New(t->used);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = 0;
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->entries[i].value == NULL)
            continue;
        PyObject *pair = Py_BuildValue("(KO)", (unsigned long long)t->entries[i].key,
                                       t->entries[i].value);
        if (pair == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, n++, pair);
    }
    return out;
}

static PyObject *
KeyTable_iter(KeyTable *t)
{
    PyObject *keys = KeyTable_keys(t, NULL); /* a snapshot, as list(dict) */
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
KeyTable_sizeof(KeyTable *t, PyObject *unused)
{
    return PyLong_FromSize_t(sizeof(KeyTable) + (t->mask + 1) * sizeof(Entry));
}

static PyMethodDef KeyTable_methods[] = {
    {"get", (PyCFunction)(void (*)(void))KeyTable_get, METH_FASTCALL, NULL},
    {"pop", (PyCFunction)(void (*)(void))KeyTable_pop, METH_FASTCALL, NULL},
    {"setdefault", (PyCFunction)(void (*)(void))KeyTable_setdefault, METH_FASTCALL, NULL},
    {"keys", (PyCFunction)KeyTable_keys, METH_NOARGS, "A list of the keys (a snapshot)."},
    {"items", (PyCFunction)KeyTable_items, METH_NOARGS, "A list of (key, value) (a snapshot)."},
    {"__sizeof__", (PyCFunction)KeyTable_sizeof, METH_NOARGS, NULL},
    {NULL},
};

static PyMappingMethods KeyTable_mapping = {
    .mp_length = (lenfunc)KeyTable_len,
    .mp_subscript = (binaryfunc)KeyTable_subscript,
    .mp_ass_subscript = (objobjargproc)KeyTable_ass_subscript,
};

static PySequenceMethods KeyTable_sequence = {
    .sq_contains = (objobjproc)KeyTable_contains,
};

static PyTypeObject KeyTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sluice.datalayer.kvevents._lane.KeyTable",
    .tp_basicsize = sizeof(KeyTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = KeyTable_new,
    .tp_dealloc = (destructor)KeyTable_dealloc,
    .tp_as_mapping = &KeyTable_mapping,
    .tp_as_sequence = &KeyTable_sequence,
    .tp_iter = (getiterfunc)KeyTable_iter,
    .tp_methods = KeyTable_methods,
    .tp_doc = "uint64 key -> int, with the dict operations the precise index uses.",
};

/* ---- the lane ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int fd;                  /* the TCP connection to the engine's PUB socket (-1: none) */
    char open;               /* batches in order may be applied here */
    long long expect;        /* the next sequence number, when open */
    char broken;             /* the connection ended or broke the protocol (see `why`) */
    PyObject *why;           /* str: what broke it */
    PyObject *handed;        /* list of (seq, payload) for the Python path, in order */
    long long max_frame;     /* the largest frame accepted (bytes) */
    uint8_t *buf;            /* bytes received and not yet a whole message */
    size_t len, cap;
    const uint8_t *last_applied; /* in buf: the payload applied last while parsing it */
    size_t last_applied_size;
    /* the endpoint's entry in the precise index (engine key space) */
    PyObject *owners;  /* dict: key -> holders' bits */
    PyObject *held;    /* the slot's shared "holds" bit object */
    PyObject *held_by_slot; /* list: every slot's, for a value left with one holder */
    PyObject *counts;  /* list: blocks held, by slot */
    Py_ssize_t slot;
    PyObject *group;   /* the KV-cache group indexed, None while not learned */
    long long block_size;
    char verified;     /* the engine's first-block hash was checked */
    unsigned long long key_mask;
    /* what it did since the stream last took it in (EndpointStream._take_in) */
    long long batches, events, malformed, other_tiers, other_groups;
    double last_heard;
    PyObject *last_payload;  /* bytes of the batch applied last */
} Lane;

static PyTypeObject LaneType;

static int
Lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owners);
    Py_VISIT(self->held);
    Py_VISIT(self->held_by_slot);
    Py_VISIT(self->counts);
    Py_VISIT(self->group);
    Py_VISIT(self->handed);
    return 0;
}

static int
Lane_clear(Lane *self)
{
    Py_CLEAR(self->owners);
    Py_CLEAR(self->held);
    Py_CLEAR(self->held_by_slot);
    Py_CLEAR(self->counts);
    Py_CLEAR(self->group);
    Py_CLEAR(self->last_payload);
    Py_CLEAR(self->why);
    Py_CLEAR(self->handed);
    return 0;
}

static void
Lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Lane_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Lane *self = (Lane *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(Py_None);
    self->group = Py_None;
    Py_INCREF(Py_None);
    self->last_payload = Py_None;
    self->fd = -1;
    self->max_frame = 64 << 20;
    self->handed = PyList_New(0);
    self->why = PyUnicode_FromString("");
    if (self->handed == NULL || self->why == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyMemberDef Lane_members[] = {
    {"fd", T_INT, offsetof(Lane, fd), 0, NULL},
    {"open", T_BOOL, offsetof(Lane, open), 0, NULL},
    {"broken", T_BOOL, offsetof(Lane, broken), 0, NULL},
    {"why", T_OBJECT, offsetof(Lane, why), READONLY, NULL},
    {"handed", T_OBJECT, offsetof(Lane, handed), READONLY, NULL},
    {"max_frame", T_LONGLONG, offsetof(Lane, max_frame), 0, NULL},
    {"expect", T_LONGLONG, offsetof(Lane, expect), 0, NULL},
    {"owners", T_OBJECT, offsetof(Lane, owners), 0, NULL},
    {"held", T_OBJECT, offsetof(Lane, held), 0, NULL},
    {"held_by_slot", T_OBJECT, offsetof(Lane, held_by_slot), 0, NULL},
    {"counts", T_OBJECT, offsetof(Lane, counts), 0, NULL},
    {"slot", T_PYSSIZET, offsetof(Lane, slot), 0, NULL},
    {"group", T_OBJECT, offsetof(Lane, group), 0, NULL},
    {"block_size", T_LONGLONG, offsetof(Lane, block_size), 0, NULL},
    {"verified", T_BOOL, offsetof(Lane, verified), 0, NULL},
    {"key_mask", T_ULONGLONG, offsetof(Lane, key_mask), 0, NULL},
    {"batches", T_LONGLONG, offsetof(Lane, batches), 0, NULL},
    {"events", T_LONGLONG, offsetof(Lane, events), 0, NULL},
    {"malformed", T_LONGLONG, offsetof(Lane, malformed), 0, NULL},
    {"other_tiers", T_LONGLONG, offsetof(Lane, other_tiers), 0, NULL},
    {"other_groups", T_LONGLONG, offsetof(Lane, other_groups), 0, NULL},
    {"last_heard", T_DOUBLE, offsetof(Lane, last_heard), 0, NULL},
    {"last_payload", T_OBJECT, offsetof(Lane, last_payload), 0, NULL},
    {NULL},
};

/* `bits` as the slot's shared object when one slot alone is in it (PreciseIndex._canonical). */
static PyObject *
canonical(Lane *self, PyObject *bits)
{
    PyObject *minus = PyNumber_Subtract(bits, one);
    if (minus == NULL)
        return NULL;
    PyObject *both = PyNumber_And(bits, minus);
    Py_DECREF(minus);
    if (both == NULL)
        return NULL;
    int several = PyObject_IsTrue(both);
    Py_DECREF(both);
    if (several < 0)
        return NULL;
    if (several) {
        Py_INCREF(bits);
        return bits;
    }
    PyObject *bit_length = PyObject_CallMethod(bits, "bit_length", NULL);
    if (bit_length == NULL)
        return NULL;
    Py_ssize_t length = PyLong_AsSsize_t(bit_length);
    Py_DECREF(bit_length);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    if (length <= 0 || length > PyList_GET_SIZE(self->held_by_slot)) {
        PyErr_SetString(PyExc_RuntimeError, "a holders' value with no slot");
        return NULL;
    }
    PyObject *shared = PyList_GET_ITEM(self->held_by_slot, length - 1);
    Py_INCREF(shared);
    return shared;
}


/* What a removal leaves of `bits` once `held` is taken out (PreciseIndex.apply's engine key
 * space): a new reference to the value to put back, NULL with no error to leave the key out,
 * NULL with an error set on failure; `ours` tells whether `held` was in it. */
static PyObject *
after_removal(Lane *self, PyObject *bits, int *ours)
{
    PyObject *held = self->held;
    *ours = 0;
    if (bits == held) { /* the common case: this endpoint alone held it */
        *ours = 1;
        return NULL;
    }
    int truth = PyObject_IsTrue(bits);
    if (truth <= 0)
        return NULL; /* (an error, or 0: nothing to put back) */
    PyObject *both = PyNumber_And(bits, held);
    if (both == NULL)
        return NULL;
    int mine = PyObject_IsTrue(both);
    Py_DECREF(both);
    if (mine < 0)
        return NULL;
    if (!mine) {
        Py_INCREF(bits); /* not ours: put it back */
        return bits;
    }
    *ours = 1;
    PyObject *inverted = PyNumber_Invert(held);
    if (inverted == NULL)
        return NULL;
    PyObject *rest = PyNumber_And(bits, inverted);
    Py_DECREF(inverted);
    if (rest == NULL)
        return NULL;
    PyObject *value = canonical(self, rest); /* others hold it too */
    Py_DECREF(rest);
    return value;
}

/* For a stored key already held by `holders` (not this slot's shared object): the merged value
 * to keep (new reference), NULL with no error when this endpoint already holds it. */
static PyObject *
after_store(PyObject *holders, PyObject *held)
{
    PyObject *both = PyNumber_And(holders, held);
    if (both == NULL)
        return NULL;
    int mine = PyObject_IsTrue(both);
    Py_DECREF(both);
    if (mine != 0)
        return NULL;
    return PyNumber_Or(holders, held);
}

/* Applies the decoded batch to a KeyTable (the index's table where the extension is built). */
static int
apply_to_table(Lane *self, KeyTable *t, const Batch *b, int64_t *count)
{
    PyObject *held = self->held;
    uint64_t mask = self->key_mask;
    for (Py_ssize_t i = 0; i < b->nops; i++) {
        const Op *op = &b->ops[i];
        if (op->op == OP_SKIP_TIER || op->op == OP_SKIP_GROUP) {
            if (op->op == OP_SKIP_TIER)
                self->other_tiers++;
            else
                self->other_groups++;
            continue;
        }
        if (op->op == OP_REMOVE) {
            for (Py_ssize_t j = op->first; j < op->first + op->count; j++) {
                uint64_t key = b->hashes[j] & mask;
                Py_ssize_t at = kt_find(t, key);
                if (at < 0)
                    continue;
                PyObject *bits = kt_take(t, (size_t)at);
                int ours;
                PyObject *value = after_removal(self, bits, &ours);
                Py_DECREF(bits);
                if (value == NULL && PyErr_Occurred())
                    return -1;
                if (ours)
                    (*count)--;
                if (value != NULL) {
                    int failed = kt_set(t, key, value);
                    Py_DECREF(value);
                    if (failed < 0)
                        return -1;
                }
            }
            continue;
        }
        Py_ssize_t before = t->used; /* OP_STORE */
        for (Py_ssize_t j = op->first; j < op->first + op->count; j++) {
            int fresh;
            Entry *e = kt_slot(t, b->hashes[j] & mask, &fresh);
            if (e == NULL)
                return -1;
            if (fresh) {
                Py_INCREF(held);
                e->value = held;
                t->used++;
                continue;
            }
            if (e->value == held)
                continue;
            PyObject *merged = after_store(e->value, held);
            if (merged == NULL) {
                if (PyErr_Occurred())
                    return -1;
                continue;
            }
            Py_SETREF(e->value, merged);
            (*count)++;
        }
        *count += t->used - before; /* the keys nobody held */
    }
    return 0;
}

/* Applies the decoded batch (PreciseIndex.apply's engine key space); -1 on an error. */
static int
apply_batch(Lane *self, const Batch *b, int64_t *count)
{
    return apply_to_table(self, (KeyTable *)self->owners, b, count);
}

static int
known_of(Lane *self, Known *k)
{
    k->block_size = self->block_size;
    k->verified = self->verified;
    k->group_known = self->group != Py_None;
    k->group = 0;
    if (k->group_known) {
        int overflow;
        k->group = PyLong_AsLongLongAndOverflow(self->group, &overflow);
        if (k->group == -1 && PyErr_Occurred())
            return -1;
        if (overflow)
            k->group_known = 0, k->group = 0; /* no event's group can match it */
    }
    return 0;
}

/* ---- ZMTP 3.0 frames off the TCP connection ------------------------------------------- */

#define FRAME_MORE 0x01
#define FRAME_LONG 0x02
#define FRAME_COMMAND 0x04
#define READ_CHUNK 65536

static void
set_broken(Lane *self, const char *why)
{
    PyObject *text = PyUnicode_FromString(why);
    if (text != NULL)
        Py_SETREF(self->why, text);
    else
        PyErr_Clear();
    self->broken = 1;
}

/* A message the lane does not apply: to the Python path, in order. */
static int
hand_back(Lane *self, uint64_t seq, const uint8_t *payload, size_t size)
{
    self->open = 0; /* everything after it goes the same way: its order matters */
    PyObject *item = Py_BuildValue("(Ky#)", (unsigned long long)seq, (const char *)payload,
                                   (Py_ssize_t)size);
    if (item == NULL)
        return -1;
    int failed = PyList_Append(self->handed, item);
    Py_DECREF(item);
    return failed;
}

/* One whole message (vLLM's: topic, 8-byte sequence number, payload). */
static int
on_message(Lane *self, int frames, const uint8_t *seq, size_t seq_size, const uint8_t *payload,
           size_t size, const Known *known, int64_t *count, double now)
{
    if (frames != 3 || seq_size != 8) {
        self->malformed++;
        return 0;
    }
    uint64_t number = be(seq, 8);
    if (!self->open || self->expect < 0 || number != (uint64_t)self->expect ||
        !decode_batch(payload, size, known, &scratch))
        return hand_back(self, number, payload, size);
    if (apply_batch(self, &scratch, count) < 0)
        return -1;
    /* its bytes are kept once the buffer's messages are all taken (parse_buffer) */
    self->last_applied = payload;
    self->last_applied_size = size;
    self->batches++;
    self->events += scratch.events;
    self->expect++;
    self->last_heard = now;
    return 0;
}

/* A command: a PING is answered (ZMTP 3.1 heartbeats, if the publisher asks for them), an
 * ERROR ends the connection, the rest are ignored. */
static void
on_command(Lane *self, const uint8_t *body, size_t size)
{
    if (size < 1 || (size_t)body[0] + 1 > size)
        return;
    const uint8_t *name = body + 1;
    size_t name_len = body[0];
    if (name_len == 4 && memcmp(name, "PING", 4) == 0 && size >= 7) {
        size_t context = size - 7; /* after the name and a 2-byte TTL */
        if (context > 16)
            context = 16;
        uint8_t pong[2 + 5 + 16];
        pong[0] = FRAME_COMMAND;
        pong[1] = (uint8_t)(5 + context);
        pong[2] = 4;
        memcpy(pong + 3, "PONG", 4);
        memcpy(pong + 7, body + 7, context);
        (void)send(self->fd, pong, 7 + context, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else if (name_len == 5 && memcmp(name, "ERROR", 5) == 0) {
        set_broken(self, "the publisher sent ZMTP ERROR");
    }
}

/* Takes every whole message and command out of the buffer; -1 on a Python error. */
static int
parse_buffer(Lane *self, const Known *known, int64_t *count, double now)
{
    size_t pos = 0, len = self->len;
    uint8_t *buf = self->buf;
    while (!self->broken) {
        size_t at = pos;
        int frames = 0, whole = 0, command = 0;
        const uint8_t *seq = NULL, *payload = NULL, *command_body = NULL;
        size_t seq_size = 0, size = 0, command_size = 0;
        for (;;) {
            if (len - at < 2)
                break;
            uint8_t flags = buf[at];
            size_t head = (flags & FRAME_LONG) ? 9 : 2;
            if (len - at < head)
                break;
            uint64_t body = (flags & FRAME_LONG) ? be(buf + at + 1, 8) : buf[at + 1];
            if ((flags & ~(FRAME_MORE | FRAME_LONG | FRAME_COMMAND)) ||
                body > (uint64_t)self->max_frame) {
                set_broken(self, body > (uint64_t)self->max_frame
                                     ? "a frame larger than the limit"
                                     : "a frame with unknown flags");
                break;
            }
            if ((uint64_t)(len - at - head) < body)
                break; /* not all here yet */
            const uint8_t *data = buf + at + head;
            at += head + (size_t)body;
            if (flags & FRAME_COMMAND) {
                if (frames) {
                    set_broken(self, "a command inside a message");
                    break;
                }
                command = whole = 1;
                command_body = data;
                command_size = (size_t)body;
                break;
            }
            if (frames == 1)
                seq = data, seq_size = (size_t)body;
            else if (frames == 2)
                payload = data, size = (size_t)body;
            frames++;
            if (!(flags & FRAME_MORE)) {
                whole = 1;
                break;
            }
        }
        if (self->broken || !whole) {
            /* a message this long while not whole: a publisher that never ends it */
            if (!self->broken && len - pos > 4 * (size_t)self->max_frame + 64)
                set_broken(self, "a message larger than the limit");
            break;
        }
        pos = at;
        if (command) {
            on_command(self, command_body, command_size);
            continue;
        }
        if (on_message(self, frames, seq, seq_size, payload, size, known, count, now) < 0) {
            self->last_applied = NULL; /* (an error: the lane's subscriber is restarted) */
            return -1;
        }
    }
    if (self->last_applied != NULL) { /* before the buffer moves */
        PyObject *kept =
            PyBytes_FromStringAndSize((const char *)self->last_applied, self->last_applied_size);
        self->last_applied = NULL;
        if (kept == NULL)
            return -1;
        Py_SETREF(self->last_payload, kept);
    }
    if (pos > 0) {
        memmove(buf, buf + pos, len - pos);
        self->len = len - pos;
    }
    return 0;
}

static int
reserve(Lane *self, size_t room)
{
    if (self->cap - self->len >= room)
        return 0;
    size_t cap = self->cap ? self->cap : READ_CHUNK;
    while (cap - self->len < room)
        cap *= 2;
    uint8_t *buf = PyMem_Realloc(self->buf, cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = buf;
    self->cap = cap;
    return 0;
}

/* Reads everything the connection has and takes the messages in it; -1 on a Python error. */
static int
drain_lane(Lane *self, double now)
{
    Known known = {0};
    int64_t count = 0, start = 0;
    int indexed = self->open;
    if (indexed) {
        if (self->owners == NULL || self->held == NULL || self->counts == NULL ||
            self->held_by_slot == NULL || !PyList_Check(self->counts) ||
            !PyList_Check(self->held_by_slot) ||
            Py_TYPE(self->owners) != &KeyTableType ||
            self->slot < 0 || self->slot >= PyList_GET_SIZE(self->counts)) {
            PyErr_SetString(PyExc_ValueError, "an open lane needs its index entry (a KeyTable)");
            return -1;
        }
        if (known_of(self, &known) < 0)
            return -1;
        start = count = PyLong_AsLongLong(PyList_GET_ITEM(self->counts, self->slot));
        if (count == -1 && PyErr_Occurred())
            return -1;
    }
    int status = 0;
    while (!self->broken) {
        if (reserve(self, READ_CHUNK) < 0) {
            status = -1;
            break;
        }
        ssize_t n = recv(self->fd, self->buf + self->len, self->cap - self->len, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                set_broken(self, strerror(errno));
            break;
        }
        if (n == 0) {
            set_broken(self, "the publisher closed the connection");
            break;
        }
        self->len += (size_t)n;
        if (parse_buffer(self, &known, &count, now) < 0) {
            status = -1;
            break;
        }
        if ((size_t)n < READ_CHUNK)
            break; /* what the kernel had; the next drain reads what comes */
    }
    if (indexed && count != start) {
        PyObject *value = PyLong_FromLongLong(count);
        if (value == NULL)
            return -1;
        PyList_SetItem(self->counts, self->slot, value); /* steals */
    }
    return status;
}

static PyObject *
Lane_feed(Lane *self, PyObject *arg)
{
    /* Bytes the handshake read past the publisher's READY: the start of the stream. */
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int failed = reserve(self, (size_t)view.len);
    if (!failed) {
        memcpy(self->buf + self->len, view.buf, (size_t)view.len);
        self->len += (size_t)view.len;
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Lane_reset(Lane *self, PyObject *unused)
{
    /* A new connection: no bytes of the old one, not broken. */
    self->len = 0;
    self->broken = 0;
    self->fd = -1;
    Py_RETURN_NONE;
}

static PyMethodDef Lane_methods[] = {
    {"feed", (PyCFunction)Lane_feed, METH_O, "Bytes read past the handshake."},
    {"reset", (PyCFunction)Lane_reset, METH_NOARGS, "Forget the connection's bytes."},
    {NULL},
};

static PyObject *
lane_drain(PyObject *module, PyObject *args)
{
    PyObject *lanes;
    double now;
    if (!PyArg_ParseTuple(args, "O!d", &PyList_Type, &lanes, &now))
        return NULL;
    PyObject *attention = PyList_New(0);
    if (attention == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lanes); i++) {
        PyObject *item = PyList_GET_ITEM(lanes, i);
        if (Py_TYPE(item) != &LaneType) {
            PyErr_SetString(PyExc_TypeError, "drain() takes a list of Lane");
            Py_DECREF(attention);
            return NULL;
        }
        Lane *lane = (Lane *)item;
        if (lane->fd < 0 || lane->broken)
            continue;
        Py_INCREF(item);
        int status = drain_lane(lane, now);
        if (status == 0 && (lane->broken || PyList_GET_SIZE(lane->handed)) &&
            PyList_Append(attention, item) < 0)
            status = -1;
        Py_DECREF(item);
        if (status < 0) {
            Py_DECREF(attention);
            return NULL;
        }
    }
    return attention;
}

static PyObject *
lane_decodable(PyObject *module, PyObject *args)
{
    /* (payload, group or None, block_size, verified) -> the ops it would apply, or None:
     * for the tests that compare the lane's decoder with the Python path's. */
    Py_buffer view;
    PyObject *group;
    long long block_size;
    int verified;
    if (!PyArg_ParseTuple(args, "y*OLp", &view, &group, &block_size, &verified))
        return NULL;
    Known k = {group != Py_None, 0, block_size, verified};
    if (k.group_known) {
        k.group = PyLong_AsLongLong(group);
        if (k.group == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int ok = decode_batch(view.buf, (size_t)view.len, &k, &scratch);
    PyBuffer_Release(&view);
    if (!ok)
        Py_RETURN_NONE;
    static const char *names[] = {"other tier", "other group", "store", "remove"};
    PyObject *out = PyList_New(scratch.nops);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < scratch.nops; i++) {
        const Op *op = &scratch.ops[i];
        PyObject *hashes = PyList_New(op->count);
        if (hashes == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < op->count; j++)
            PyList_SET_ITEM(hashes, j, PyLong_FromUnsignedLongLong(scratch.hashes[op->first + j]));
        PyList_SET_ITEM(out, i, Py_BuildValue("(sN)", names[op->op], hashes));
    }
    return out;
}

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sluice.datalayer.kvevents._lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Lane_new,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_members = Lane_members,
    .tp_methods = Lane_methods,
    .tp_doc = "One endpoint's fast lane: its socket, where it is in the stream, its index entry.",
};

static PyMethodDef methods[] = {
    {"drain", lane_drain, METH_VARARGS,
     "Read every lane's connection; returns the lanes with messages handed back or broken."},
    {"decodable", lane_decodable, METH_VARARGS, "The ops a payload decodes to (tests)."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_lane",
    .m_doc = "The KV-event subscribers' native fast lane.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    if (PyType_Ready(&LaneType) < 0 || PyType_Ready(&KeyTableType) < 0)
        return NULL;
    if (one == NULL && (one = PyLong_FromLong(1)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&KeyTableType);
    if (PyModule_AddObject(m, "KeyTable", (PyObject *)&KeyTableType) < 0) {
        Py_DECREF(&KeyTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
