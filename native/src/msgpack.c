/* A msgpack reader for descriptors (FORMAT.md §4.2): objects and nesting counted from the
 * headers first, then a parse that enforces the msgpack rules (valid UTF-8, str keys, no key
 * twice, no ext type or 0xC1), and the canonical encoding of §5.3.1. */
#include <stdlib.h>

#include "internal.h"

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* What follows each first byte: 0 skip arg bytes; 1 container of arg children; 2 container
 * whose count is in the next (arg & 7) bytes, times (arg >> 3); 3 str/bin with an (arg)-byte
 * length; 4 ext likewise plus a type byte. */
static void header_kind(uint8_t b, int *what, uint64_t *arg)
{
    *what = 0; *arg = 0;
    if (b <= 0x7F || b >= 0xE0) return;
    if (b <= 0x8F) { *what = 1; *arg = 2u * (b & 0x0F); return; }
    if (b <= 0x9F) { *what = 1; *arg = b & 0x0F; return; }
    if (b <= 0xBF) { *arg = b & 0x1F; return; }
    switch (b) {
    case 0xCA: *arg = 4; return; case 0xCB: *arg = 8; return;
    case 0xCC: *arg = 1; return; case 0xCD: *arg = 2; return; case 0xCE: *arg = 4; return; case 0xCF: *arg = 8; return;
    case 0xD0: *arg = 1; return; case 0xD1: *arg = 2; return; case 0xD2: *arg = 4; return; case 0xD3: *arg = 8; return;
    case 0xD4: *arg = 2; return; case 0xD5: *arg = 3; return; case 0xD6: *arg = 5; return;
    case 0xD7: *arg = 9; return; case 0xD8: *arg = 17; return;
    case 0xC4: case 0xD9: *what = 3; *arg = 1; return;
    case 0xC5: case 0xDA: *what = 3; *arg = 2; return;
    case 0xC6: case 0xDB: *what = 3; *arg = 4; return;
    case 0xC7: *what = 4; *arg = 1; return; case 0xC8: *what = 4; *arg = 2; return; case 0xC9: *what = 4; *arg = 4; return;
    case 0xDC: *what = 2; *arg = 8 + 2; return; case 0xDD: *what = 2; *arg = 8 + 4; return;
    case 0xDE: *what = 2; *arg = 16 + 2; return; case 0xDF: *what = 2; *arg = 16 + 4; return;
    default: return; /* nil, false, true, 0xC1: one byte */
    }
}

/* Count objects and check depth from the headers alone, until the top-level value ends or the
 * bytes do. The pending counts live in a fixed stack: deeper than max_depth is an error. */
static nnar_status count_objects(nnar_ctx *ctx, const uint8_t *d, size_t n, uint64_t *out)
{
    uint64_t pending[66];
    uint64_t max_depth = ctx->limits.max_descriptor_depth, max_objects = ctx->limits.max_descriptor_objects;
    size_t top = 0, pos = 0;
    uint64_t objects = 0;
    if (max_depth > 64) max_depth = 64;   /* our fixed stack; the spec's default is 32 */
    pending[0] = 1;
    while (pos < n) {
        int what;
        uint64_t arg;
        uint8_t b;
        while (!pending[top]) {
            if (top == 0) goto done;
            top--;
        }
        pending[top]--;
        objects++;
        b = d[pos];
        header_kind(b, &what, &arg);
        pos++;
        if (what == 0) {
            pos = arg > n - pos ? n : pos + (size_t)arg;
        } else if (what == 1 || what == 2) {
            uint64_t children = arg;
            if (what == 2) {
                int width = (int)(arg & 7);
                if (n - pos < (size_t)width) { pos = n; children = 0; }
                else { children = be(d + pos, width) * (arg >> 3); pos += (size_t)width; }
            }
            if (top + 1 > max_depth)
                return nnar_fail(ctx, NNAR_LIMIT_EXCEEDED, "descriptor: expected msgpack nested at most %llu deep "
                                 "(max_descriptor_depth), found deeper", (unsigned long long)ctx->limits.max_descriptor_depth);
            if (objects > max_objects) break;
            if (children) pending[++top] = children;
        } else {
            int width = (int)arg;
            uint64_t len;
            if (n - pos < (size_t)width) { pos = n; continue; }
            len = be(d + pos, width);
            pos += (size_t)width + (what == 4);
            if (pos > n || len > n - pos) pos = n;
            else pos += (size_t)len;
        }
    }
done:
    if (objects > max_objects)
        return nnar_fail(ctx, NNAR_LIMIT_EXCEEDED, "descriptor: expected at most %llu msgpack objects "
                         "(max_descriptor_objects), found more", (unsigned long long)max_objects);
    *out = objects;
    return NNAR_OK;
}

typedef struct parser {
    nnar_ctx *ctx;
    const uint8_t *d;
    size_t n, pos;
    mp_doc *doc;
    uint32_t cap;
} parser;

static nnar_status bad(parser *p, const char *what)
{
    return nnar_fail(p->ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected one msgpack map, found %s at byte %zu", what, p->pos);
}

typedef struct keyref { const uint8_t *p; uint32_t len; } keyref;

static int key_cmp(const void *a, const void *b)
{
    const keyref *x = (const keyref *)a, *y = (const keyref *)b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->p, y->p, x->len);
}

static nnar_status check_unique_keys(parser *p, uint32_t map)
{
    mp_doc *doc = p->doc;
    uint32_t n = doc->nodes[map].len, i, j, k = map + 1;
    if (n < 2) return NNAR_OK;
    if (n <= 8) {
        uint32_t idx[8];
        for (i = 0; i < n; i++) { idx[i] = k; k = doc->nodes[doc->nodes[k].end].end; }
        for (i = 0; i < n; i++)
            for (j = i + 1; j < n; j++) {
                const mp_node *a = &doc->nodes[idx[i]], *b = &doc->nodes[idx[j]];
                if (a->len == b->len && memcmp(a->v.p, b->v.p, a->len) == 0)
                    return nnar_fail(p->ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected each map key once, found %.*s twice",
                                     (int)(a->len > 80 ? 80 : a->len), (const char *)a->v.p);
            }
        return NNAR_OK;
    } else {
        keyref *keys = (keyref *)nnar_alloc(p->ctx, (size_t)n * sizeof *keys);
        nnar_status s = NNAR_OK;
        if (!keys) return NNAR_OUT_OF_MEMORY;
        for (i = 0; i < n; i++) {
            keys[i].p = doc->nodes[k].v.p; keys[i].len = doc->nodes[k].len;
            k = doc->nodes[doc->nodes[k].end].end;
        }
        qsort(keys, n, sizeof *keys, key_cmp);
        for (i = 1; i < n; i++)
            if (key_cmp(&keys[i - 1], &keys[i]) == 0) {
                s = nnar_fail(p->ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected each map key once, found %.*s twice",
                              (int)(keys[i].len > 80 ? 80 : keys[i].len), (const char *)keys[i].p);
                break;
            }
        nnar_free(p->ctx, keys);
        return s;
    }
}

static nnar_status parse_value(parser *p, unsigned depth)
{
    uint32_t me;
    mp_node *nd;
    uint8_t b;
    uint64_t count = 0, len = 0;
    int kind = -1;   /* 0 array, 1 map, 2 str, 3 bin */
    if (p->pos >= p->n) return bad(p, "the bytes ending inside a value");
    if (p->doc->count >= p->cap) return bad(p, "more objects than counted");
    if (depth > 64) return bad(p, "nesting too deep");
    me = p->doc->count++;
    nd = &p->doc->nodes[me];
    memset(nd, 0, sizeof *nd);
    b = p->d[p->pos++];
#define NEED(k) do { if (p->n - p->pos < (size_t)(k)) return bad(p, "the bytes ending inside a value"); } while (0)
    if (b <= 0x7F) { nd->type = MP_INT; nd->v.u = b; }
    else if (b >= 0xE0) { nd->type = MP_INT; nd->neg = 1; nd->v.i = (int8_t)b; }
    else if (b <= 0x8F) { kind = 1; count = b & 0x0F; }
    else if (b <= 0x9F) { kind = 0; count = b & 0x0F; }
    else if (b <= 0xBF) { kind = 2; len = b & 0x1F; }
    else switch (b) {
    case 0xC0: nd->type = MP_NIL; break;
    case 0xC2: case 0xC3: nd->type = MP_BOOL; nd->v.b = b == 0xC3; break;
    case 0xC4: NEED(1); kind = 3; len = be(p->d + p->pos, 1); p->pos += 1; break;
    case 0xC5: NEED(2); kind = 3; len = be(p->d + p->pos, 2); p->pos += 2; break;
    case 0xC6: NEED(4); kind = 3; len = be(p->d + p->pos, 4); p->pos += 4; break;
    case 0xD9: NEED(1); kind = 2; len = be(p->d + p->pos, 1); p->pos += 1; break;
    case 0xDA: NEED(2); kind = 2; len = be(p->d + p->pos, 2); p->pos += 2; break;
    case 0xDB: NEED(4); kind = 2; len = be(p->d + p->pos, 4); p->pos += 4; break;
    case 0xDC: NEED(2); kind = 0; count = be(p->d + p->pos, 2); p->pos += 2; break;
    case 0xDD: NEED(4); kind = 0; count = be(p->d + p->pos, 4); p->pos += 4; break;
    case 0xDE: NEED(2); kind = 1; count = be(p->d + p->pos, 2); p->pos += 2; break;
    case 0xDF: NEED(4); kind = 1; count = be(p->d + p->pos, 4); p->pos += 4; break;
    case 0xCA: {
        uint32_t u; float f;
        NEED(4); u = (uint32_t)be(p->d + p->pos, 4); p->pos += 4;
        memcpy(&f, &u, 4);
        nd->type = MP_FLOAT; nd->v.f = (double)f;
        break;
    }
    case 0xCB: {
        uint64_t u;
        NEED(8); u = be(p->d + p->pos, 8); p->pos += 8;
        nd->type = MP_FLOAT; memcpy(&nd->v.f, &u, 8);
        break;
    }
    case 0xCC: NEED(1); nd->type = MP_INT; nd->v.u = be(p->d + p->pos, 1); p->pos += 1; break;
    case 0xCD: NEED(2); nd->type = MP_INT; nd->v.u = be(p->d + p->pos, 2); p->pos += 2; break;
    case 0xCE: NEED(4); nd->type = MP_INT; nd->v.u = be(p->d + p->pos, 4); p->pos += 4; break;
    case 0xCF: NEED(8); nd->type = MP_INT; nd->v.u = be(p->d + p->pos, 8); p->pos += 8; break;
    case 0xD0: case 0xD1: case 0xD2: case 0xD3: {
        int w = 1 << (b - 0xD0);
        uint64_t u;
        int64_t v;
        NEED(w); u = be(p->d + p->pos, w); p->pos += (size_t)w;
        /* sign-extend from w bytes */
        if (w < 8 && (u >> (8 * w - 1)) & 1) u |= ~0ull << (8 * w);
        memcpy(&v, &u, 8);
        nd->type = MP_INT;
        if (v < 0) { nd->neg = 1; nd->v.i = v; } else nd->v.u = (uint64_t)v;
        break;
    }
    case 0xC1: p->pos--; return bad(p, "the never-used byte 0xC1");
    default: p->pos--; return bad(p, "an extension type (not allowed)");
    }
#undef NEED
    if (kind == 2 || kind == 3) {
        if (len > p->n - p->pos) return bad(p, "the bytes ending inside a str or bin");
        nd->type = kind == 2 ? MP_STR : MP_BIN;
        nd->len = (uint32_t)len;
        nd->v.p = p->d + p->pos;
        p->pos += (size_t)len;
        if (kind == 2 && !nnar_utf8_valid(nd->v.p, nd->len))
            return nnar_fail(p->ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected valid UTF-8 in every str, found invalid "
                             "bytes before byte %zu", p->pos);
    } else if (kind == 0 || kind == 1) {
        uint64_t i, items = kind == 1 ? 2 * count : count;
        nd->type = kind == 0 ? MP_ARRAY : MP_MAP;
        nd->len = (uint32_t)count;
        /* every object takes at least one byte */
        if (items > p->n - p->pos) return bad(p, "the bytes ending inside an array or map");
        for (i = 0; i < items; i++) {
            uint32_t child = p->doc->count;
            NNAR_TRY(parse_value(p, depth + 1));
            if (kind == 1 && i % 2 == 0 && p->doc->nodes[child].type != MP_STR)
                return nnar_fail(p->ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected str map keys, found another type "
                                 "before byte %zu", p->pos);
        }
        if (kind == 1) NNAR_TRY(check_unique_keys(p, me));
    }
    p->doc->nodes[me].end = p->doc->count;
    return NNAR_OK;
}

nnar_status mp_parse(nnar_ctx *ctx, const uint8_t *data, size_t size, mp_doc *doc)
{
    uint64_t objects = 0;
    parser p;
    nnar_status s;
    doc->nodes = NULL;
    doc->count = 0;
    NNAR_TRY(count_objects(ctx, data, size, &objects));
    if (objects == 0)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected one msgpack map, found no bytes");
    doc->nodes = (mp_node *)nnar_alloc(ctx, (size_t)objects * sizeof(mp_node));
    if (!doc->nodes) return NNAR_OUT_OF_MEMORY;
    p.ctx = ctx; p.d = data; p.n = size; p.pos = 0; p.doc = doc; p.cap = (uint32_t)objects;
    s = parse_value(&p, 1);
    if (s == NNAR_OK && doc->nodes[0].type != MP_MAP)
        s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected a msgpack map, found another type");
    if (s == NNAR_OK && p.pos != size)
        s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "descriptor: expected one msgpack map of %zu bytes, found %zu bytes after it",
                      size, size - p.pos);
    if (s != NNAR_OK) mp_free(ctx, doc);
    return s;
}

void mp_free(nnar_ctx *ctx, mp_doc *doc)
{
    nnar_free(ctx, doc->nodes);
    doc->nodes = NULL;
    doc->count = 0;
}

int mp_str_eq(const mp_node *n, const char *s)
{
    size_t k = strlen(s);
    return n->type == MP_STR && n->len == k && memcmp(n->v.p, s, k) == 0;
}

uint32_t mp_get(const mp_doc *doc, uint32_t map, const char *key)
{
    uint32_t i, k;
    if (map == MP_NONE || doc->nodes[map].type != MP_MAP) return MP_NONE;
    k = map + 1;
    for (i = 0; i < doc->nodes[map].len; i++) {
        uint32_t v = doc->nodes[k].end;
        if (mp_str_eq(&doc->nodes[k], key)) return v;
        k = doc->nodes[v].end;
    }
    return MP_NONE;
}

static int in_list(const mp_node *n, const char *const *list)
{
    for (; list && *list; list++)
        if (mp_str_eq(n, *list)) return 1;
    return 0;
}

nnar_status mp_check_keys(nnar_ctx *ctx, const mp_doc *doc, uint32_t map, const char *const *required,
                          const char *const *optional, int strict, const char *what)
{
    const char *const *r;
    uint32_t i, k;
    for (r = required; *r; r++)
        if (mp_get(doc, map, *r) == MP_NONE)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: expected key '%s', found it missing", what, *r);
    if (!strict) return NNAR_OK;
    k = map + 1;
    for (i = 0; i < doc->nodes[map].len; i++) {
        const mp_node *key = &doc->nodes[k];
        if (!in_list(key, required) && !in_list(key, optional))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: expected only known keys, found '%.*s'", what,
                             (int)(key->len > 60 ? 60 : key->len), (const char *)key->v.p);
        k = doc->nodes[key->end].end;
    }
    return NNAR_OK;
}

int mp_u63(const mp_node *n, uint64_t *out)
{
    if (n->type != MP_INT || n->neg || n->v.u > NNAR_MAX_U63) return 0;
    *out = n->v.u;
    return 1;
}

/* ---- canonical encoding (§5.3.1) ---------------------------------------------------------- */

/* An emitter writes to a SHA-256, to a buffer, or only counts. lengths (when given) replace
 * the segments' `length` values (a map without one gets it appended), else they are 0. */
typedef struct emitter {
    nnar_sha256 *sha;
    uint8_t *out;
    uint64_t length;
    const uint64_t *lengths;
    uint32_t seg;
} emitter;

static void emit(emitter *e, const void *p, size_t n)
{
    if (e->sha) nnar_sha256_update(e->sha, p, n);
    if (e->out && n) memcpy(e->out + e->length, p, n);
    e->length += n;
}

static void emit_be(emitter *e, uint8_t tag, uint64_t v, int width)
{
    uint8_t b[9];
    int i;
    b[0] = tag;
    for (i = 0; i < width; i++) b[1 + i] = (uint8_t)(v >> (8 * (width - 1 - i)));
    emit(e, b, (size_t)width + 1);
}

static void emit_uint(emitter *e, uint64_t v)
{
    uint8_t b = (uint8_t)v;
    if (v <= 0x7F) emit(e, &b, 1);
    else if (v <= 0xFF) emit_be(e, 0xCC, v, 1);
    else if (v <= 0xFFFF) emit_be(e, 0xCD, v, 2);
    else if (v <= 0xFFFFFFFFu) emit_be(e, 0xCE, v, 4);
    else emit_be(e, 0xCF, v, 8);
}

static void emit_len(emitter *e, uint32_t n, uint8_t fix, uint32_t fixmax, uint8_t t8, uint8_t t16, uint8_t t32)
{
    uint8_t b = (uint8_t)(fix | n);
    if (fix && n <= fixmax) emit(e, &b, 1);
    else if (t8 && n <= 0xFF) emit_be(e, t8, n, 1);
    else if (n <= 0xFFFF) emit_be(e, t16, n, 2);
    else emit_be(e, t32, n, 4);
}

/* mode: 0 plain; 1 the descriptor map (look for segments); 2 the segments array; 3 a segment */
static void canon(const mp_doc *doc, uint32_t i, int mode, emitter *e)
{
    const mp_node *n = &doc->nodes[i];
    uint32_t k, c;
    switch (n->type) {
    case MP_NIL: { uint8_t b = 0xC0; emit(e, &b, 1); break; }
    case MP_BOOL: { uint8_t b = n->v.b ? 0xC3 : 0xC2; emit(e, &b, 1); break; }
    case MP_INT:
        if (!n->neg) emit_uint(e, n->v.u);
        else {
            int64_t v = n->v.i;
            uint8_t b = (uint8_t)v;
            if (v >= -32) emit(e, &b, 1);
            else if (v >= -128) emit_be(e, 0xD0, (uint64_t)v, 1);
            else if (v >= -32768) emit_be(e, 0xD1, (uint64_t)v, 2);
            else if (v >= -2147483647ll - 1) emit_be(e, 0xD2, (uint64_t)v, 4);
            else emit_be(e, 0xD3, (uint64_t)v, 8);
        }
        break;
    case MP_FLOAT: { uint64_t u; memcpy(&u, &n->v.f, 8); emit_be(e, 0xCB, u, 8); break; }
    case MP_STR: emit_len(e, n->len, 0xA0, 31, 0xD9, 0xDA, 0xDB); emit(e, n->v.p, n->len); break;
    case MP_BIN: emit_len(e, n->len, 0, 0, 0xC4, 0xC5, 0xC6); emit(e, n->v.p, n->len); break;
    case MP_ARRAY:
        emit_len(e, n->len, 0x90, 15, 0, 0xDC, 0xDD);
        for (k = i + 1, c = 0; c < n->len; c++) {
            if (mode == 2) e->seg = c;
            canon(doc, k, mode == 2 ? 3 : 0, e);
            k = doc->nodes[k].end;
        }
        break;
    case MP_MAP: {
        int add = mode == 3 && e->lengths && mp_get(doc, i, "length") == MP_NONE;
        emit_len(e, n->len + (add ? 1u : 0u), 0x80, 15, 0, 0xDE, 0xDF);
        for (k = i + 1, c = 0; c < n->len; c++) {
            uint32_t v = doc->nodes[k].end;
            canon(doc, k, 0, e);
            if (mode == 3 && mp_str_eq(&doc->nodes[k], "length")) emit_uint(e, e->lengths ? e->lengths[e->seg] : 0);
            else canon(doc, v, mode == 1 && mp_str_eq(&doc->nodes[k], "segments") && doc->nodes[v].type == MP_ARRAY ? 2 : 0, e);
            k = doc->nodes[v].end;
        }
        if (add) {
            static const uint8_t key[7] = {0xA6, 'l', 'e', 'n', 'g', 't', 'h'};
            emit(e, key, 7);
            emit_uint(e, e->lengths[e->seg]);
        }
        break;
    }
    }
}

uint64_t mp_canonical(const mp_doc *doc, uint32_t i, int zero_segment_lengths, nnar_sha256 *sha)
{
    emitter e;
    memset(&e, 0, sizeof e);
    e.sha = sha;
    canon(doc, i, zero_segment_lengths ? 1 : 0, &e);
    return e.length;
}

uint64_t mp_encode(const mp_doc *doc, int segment_mode, const uint64_t *lengths, uint8_t *out)
{
    emitter e;
    memset(&e, 0, sizeof e);
    e.out = out;
    e.lengths = lengths;
    canon(doc, 0, segment_mode ? 1 : 0, &e);
    return e.length;
}
