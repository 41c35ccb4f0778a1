/* Record descriptors (FORMAT.md §5): META, TENS, MODL, ALIS and INDX, each checked in the
 * order of its list in §11.1. Pipelines stay opaque here (pipeline.c checks them). */
#include <stdio.h>

#include "internal.h"

static uint64_t sat_mul(uint64_t a, uint64_t b) { return a && b > UINT64_MAX / a ? UINT64_MAX : a * b; }
static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
static uint64_t align_up(uint64_t n) { return (n + NNAR_ALIGN - 1) / NNAR_ALIGN * NNAR_ALIGN; }

#define NODE(h, i) (&(h)->doc.nodes[i])

nnar_status nnar_parse_meta(nnar_ctx *ctx, nnar_head *h)
{
    static const char *const keys[] = {"nnar_version", "source_format", "metadata", NULL};
    uint32_t md, k, i;
    if (memcmp(h->type, "META", 4) != 0) {
        char tt[17];
        nnar_type_text(h->type, tt);
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "first record: expected META, found '%s'", tt);
    }
    if (h->body_length)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "META record: expected an empty body, found %llu bytes",
                         (unsigned long long)h->body_length);
    NNAR_TRY(mp_check_keys(ctx, &h->doc, 0, keys, NULL, ctx->strict, "META descriptor"));
    md = mp_get(&h->doc, 0, "metadata");
    if (NODE(h, md)->type != MP_MAP) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "metadata: expected a map of strings to strings");
    for (k = md + 1, i = 0; i < NODE(h, md)->len; i++) {
        uint32_t v = NODE(h, k)->end;
        if (NODE(h, v)->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "metadata: expected a map of strings to strings");
        k = NODE(h, v)->end;
    }
    if (NODE(h, mp_get(&h->doc, 0, "nnar_version"))->type != MP_STR)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "nnar_version: expected a string");
    if (NODE(h, mp_get(&h->doc, 0, "source_format"))->type != MP_STR)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "source_format: expected a string");
    return NNAR_OK;
}

static nnar_status check_fidelity(nnar_ctx *ctx, const nnar_head *h, uint32_t f)
{
    uint32_t k, i;
    const mp_node *n = NODE(h, f);
    if (n->type != MP_MAP || n->len > 64)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "fidelity: expected a map of at most 64 entries");
    for (k = f + 1, i = 0; i < n->len; i++) {
        const mp_node *key = NODE(h, k), *v = NODE(h, key->end);
        int ok = v->type == MP_INT || v->type == MP_FLOAT || (v->type == MP_STR && v->len <= 1024);
        if (key->len > 1024 || !ok)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "fidelity: expected string keys of at most 1024 bytes and string "
                             "or number values, found entry %u", (unsigned)i);
        k = v->end;
    }
    return NNAR_OK;
}

static int falsy(const mp_node *n)
{
    return (n->type == MP_ARRAY || n->type == MP_MAP || n->type == MP_STR || n->type == MP_BIN) ? n->len == 0
         : n->type == MP_NIL || (n->type == MP_BOOL && !n->v.b) || (n->type == MP_INT && n->v.u == 0) ||
           (n->type == MP_FLOAT && n->v.f == 0.0);
}

nnar_status nnar_segment_entries(nnar_ctx *ctx, const mp_doc *doc, uint32_t segs, int probe, nnar_segment **out,
                                 uint32_t *count)
{
    static const char *const keys[] = {"name", "length", "raw_length", "codecs", NULL};
    static const char *const probe_keys[] = {"name", "raw_length", "codecs", NULL};
    static const char *const probe_optional[] = {"length", NULL};
    const mp_node *n = &doc->nodes[segs];
    nnar_segment *list;
    uint32_t k, i, j;
    *out = NULL;
    *count = 0;
    if (n->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segments: expected a list");
    NNAR_TRY(nnar_check_limit(ctx, "segments", n->len, ctx->limits.max_segments, "max_segments"));
    list = (nnar_segment *)nnar_alloc_zero(ctx, (size_t)n->len * sizeof *list);
    if (!list) return NNAR_OUT_OF_MEMORY;
    *out = list;
    *count = n->len;
    for (k = segs + 1, i = 0; i < n->len; i++, k = doc->nodes[k].end) {
        nnar_segment *s = &list[i];
        uint32_t name, codecs;
        char what[32];
        if (doc->nodes[k].type != MP_MAP)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment %u: expected a map", (unsigned)i);
        sprintf(what, "segment %u", (unsigned)i);
        NNAR_TRY(mp_check_keys(ctx, doc, k, probe ? probe_keys : keys, probe ? probe_optional : NULL, ctx->strict, what));
        name = mp_get(doc, k, "name");
        if (doc->nodes[name].type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment %u name: expected a string", (unsigned)i);
        s->name = doc->nodes[name].v.p;
        s->name_len = doc->nodes[name].len;
        for (j = 0; j < i; j++)
            if (list[j].name_len == s->name_len && memcmp(list[j].name, s->name, s->name_len) == 0)
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment %u: duplicate segment name '%.*s'", (unsigned)i,
                                 (int)s->name_len, (const char *)s->name);
        codecs = mp_get(doc, k, "codecs");
        if (!probe && !mp_u63(&doc->nodes[mp_get(doc, k, "length")], &s->length))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment '%.*s' length: expected an integer in [0, 2^63-1]",
                             (int)s->name_len, (const char *)s->name);
        if (!mp_u63(&doc->nodes[mp_get(doc, k, "raw_length")], &s->raw_length))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment '%.*s' raw_length: expected an integer in [0, 2^63-1]",
                             (int)s->name_len, (const char *)s->name);
        if (probe) s->length = falsy(&doc->nodes[codecs]) ? s->raw_length : 0;
        NNAR_TRY(nnar_check_limit(ctx, "segment raw_length", s->raw_length, ctx->limits.max_tensor_bytes, "max_tensor_bytes"));
        if (doc->nodes[codecs].type != MP_ARRAY)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment '%.*s' codecs: expected a list", (int)s->name_len,
                             (const char *)s->name);
        s->codecs = codecs;
        if (doc->nodes[codecs].len == 0 && s->length != s->raw_length)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment '%.*s': stored verbatim, so expected length == raw_length, "
                             "found %llu != %llu", (int)s->name_len, (const char *)s->name,
                             (unsigned long long)s->length, (unsigned long long)s->raw_length);
    }
    return NNAR_OK;
}

/* TENS step 9 and 10, MODL step 2: the segment maps, laid out by §5.2.3. */
static nnar_status parse_segments(nnar_ctx *ctx, nnar_record *rec, uint32_t segs)
{
    nnar_head *h = &rec->head;
    uint32_t i;
    uint64_t pos, body = NNAR_BODY_OFFSET(h);
    NNAR_TRY(nnar_segment_entries(ctx, &h->doc, segs, 0, &rec->segments, &rec->segment_count));
    pos = body;
    for (i = 0; i < rec->segment_count; i++) {
        nnar_segment *s = &rec->segments[i];
        int align = rec->segment_count == 1 && NODE(h, s->codecs)->len == 0;
        s->offset = align ? align_up(pos) : pos;
        pos = sat_add(s->offset, s->length);
    }
    if (pos - body != h->body_length)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "body: segments end %llu bytes into the body, expected body_length %llu",
                         (unsigned long long)(pos - body), (unsigned long long)h->body_length);
    return NNAR_OK;
}

nnar_status nnar_parse_tensor(nnar_ctx *ctx, nnar_record *rec)
{
    static const char *const keys[] = {"tensors", "dtype", "digest", "pipeline", "segments", NULL};
    static const char *const optional[] = {"fidelity", NULL};
    nnar_head *h = &rec->head;
    uint32_t t, k, i, j, dn, dig, total_rank = 0;
    const mp_node *tn;
    uint64_t itemsize, total = 0, *sp;
    nnar_nameset names;
    nnar_status s = NNAR_OK;
    rec->fidelity = MP_NONE;
    NNAR_TRY(mp_check_keys(ctx, &h->doc, 0, keys, optional, ctx->strict, "TENS descriptor"));
    rec->fidelity = mp_get(&h->doc, 0, "fidelity");
    if (rec->fidelity != MP_NONE) NNAR_TRY(check_fidelity(ctx, h, rec->fidelity));
    dn = mp_get(&h->doc, 0, "dtype");
    if (NODE(h, dn)->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "dtype: expected a string");
    rec->dtype_name = NODE(h, dn)->v.p;
    rec->dtype_len = NODE(h, dn)->len;
    rec->dtype = nnar_dtype_from(rec->dtype_name, rec->dtype_len);
    itemsize = nnar_dtype_size(rec->dtype);
    t = mp_get(&h->doc, 0, "tensors");
    tn = NODE(h, t);
    if (tn->type != MP_ARRAY || tn->len == 0) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensors: expected a non-empty list");
    NNAR_TRY(nnar_check_limit(ctx, "tensors in one record", tn->len, ctx->limits.max_tensors, "max_tensors"));
    /* shapes: at most max_rank each; count them first to allocate once */
    for (k = t + 1, i = 0; i < tn->len; i++, k = NODE(h, k)->end) {
        const mp_node *e = NODE(h, k);
        if (e->type == MP_ARRAY && e->len == 2) {
            const mp_node *shape = NODE(h, NODE(h, k + 1)->end);
            if (shape->type == MP_ARRAY) total_rank += shape->len;
        }
    }
    rec->members = (nnar_member *)nnar_alloc_zero(ctx, (size_t)tn->len * sizeof *rec->members);
    rec->shapes = (uint64_t *)nnar_alloc(ctx, ((size_t)total_rank + 1) * sizeof *rec->shapes);
    if (!rec->members || !rec->shapes) return NNAR_OUT_OF_MEMORY;
    rec->member_count = tn->len;
    sp = rec->shapes;
    nnar_nameset_init(&names);
    for (k = t + 1, i = 0; i < tn->len && s == NNAR_OK; i++, k = NODE(h, k)->end) {
        const mp_node *e = NODE(h, k), *nm, *shape;
        nnar_member *m = &rec->members[i];
        uint32_t d;
        uint64_t size = 1;
        int added;
        if (e->type != MP_ARRAY || e->len != 2) { s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensors[%u]: expected [name, shape]", (unsigned)i); break; }
        nm = NODE(h, k + 1);
        if ((s = nnar_check_name(ctx, nm)) != NNAR_OK) break;
        m->name = nm->v.p;
        m->name_len = nm->len;
        added = nnar_nameset_add(ctx, &names, nm->v.p, nm->len);
        if (added < 0) { s = NNAR_OUT_OF_MEMORY; break; }
        if (!added) { s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "duplicate tensor name '%.*s'", (int)nm->len, (const char *)nm->v.p); break; }
        shape = NODE(h, nm->end);
        if (shape->type != MP_ARRAY) { s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensor '%.*s' shape: expected a list", (int)nm->len, (const char *)nm->v.p); break; }
        if ((s = nnar_check_limit(ctx, "tensor rank", shape->len, ctx->limits.max_rank, "max_rank")) != NNAR_OK) break;
        m->rank = shape->len;
        m->shape = sp;
        for (d = 0, j = nm->end + 1; d < shape->len; d++, j = NODE(h, j)->end) {
            if (!mp_u63(NODE(h, j), &sp[d])) {
                s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "tensor '%.*s' shape dimension: expected an integer in [0, 2^63-1]",
                              (int)nm->len, (const char *)nm->v.p);
                break;
            }
        }
        if (s != NNAR_OK) break;
        for (d = 0; d < shape->len; d++) size = sat_mul(size, sp[d]);
        sp += shape->len;
        m->size = size;
        m->start = total;
        total = sat_add(total, size);
        if (itemsize && sat_mul(size, itemsize) > ctx->limits.max_tensor_bytes)
            s = nnar_check_limit(ctx, "tensor bytes", sat_mul(size, itemsize), ctx->limits.max_tensor_bytes, "max_tensor_bytes");
    }
    nnar_nameset_free(ctx, &names);
    NNAR_TRY(s);
    rec->array_size = total;
    rec->array_rank = rec->member_count == 1 ? rec->members[0].rank : 1;
    rec->array_shape1 = total;
    if (itemsize)
        NNAR_TRY(nnar_check_limit(ctx, "record array bytes", sat_mul(total, itemsize), ctx->limits.max_tensor_bytes,
                                  "max_tensor_bytes"));
    dig = mp_get(&h->doc, 0, "digest");
    if (NODE(h, dig)->type != MP_BIN || NODE(h, dig)->len != NNAR_DIGEST_SIZE)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "digest: expected 32 bytes (bin)");
    rec->digest = NODE(h, dig)->v.p;
    rec->pipeline = mp_get(&h->doc, 0, "pipeline");
    if (NODE(h, rec->pipeline)->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "pipeline: expected a list");
    return parse_segments(ctx, rec, mp_get(&h->doc, 0, "segments"));
}

/* MODL and FILE (§5.4, §5.7): `pipeline` and `segments` of bytes decoded as a uint8 array of
 * `length` elements, as a TENS record's array is. */
static nnar_status bytes_record(nnar_ctx *ctx, nnar_record *rec)
{
    nnar_head *h = &rec->head;
    rec->pipeline = mp_get(&h->doc, 0, "pipeline");
    if (NODE(h, rec->pipeline)->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "pipeline: expected a list");
    rec->dtype = NNAR_UINT8;
    rec->dtype_name = (const uint8_t *)"uint8";
    rec->dtype_len = 5;
    rec->array_size = rec->length;
    rec->array_rank = 1;
    rec->array_shape1 = rec->length;
    return parse_segments(ctx, rec, mp_get(&h->doc, 0, "segments"));
}

nnar_status nnar_parse_model(nnar_ctx *ctx, nnar_record *rec)
{
    static const char *const keys[] = {"format", "length", "pipeline", "segments", NULL};
    nnar_head *h = &rec->head;
    uint32_t f;
    rec->fidelity = MP_NONE;
    NNAR_TRY(mp_check_keys(ctx, &h->doc, 0, keys, NULL, ctx->strict, "MODL descriptor"));
    f = mp_get(&h->doc, 0, "format");
    if (NODE(h, f)->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "format: expected a string");
    if (NODE(h, f)->len < 1 || NODE(h, f)->len > 64)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "format: expected 1 to 64 bytes of UTF-8, found %u", (unsigned)NODE(h, f)->len);
    rec->format = NODE(h, f)->v.p;
    rec->format_len = NODE(h, f)->len;
    if (!mp_u63(NODE(h, mp_get(&h->doc, 0, "length")), &rec->length))
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "length: expected an integer in [0, 2^63-1]");
    NNAR_TRY(nnar_check_limit(ctx, "model structure bytes", rec->length, ctx->limits.max_tensor_bytes, "max_tensor_bytes"));
    return bytes_record(ctx, rec);
}

nnar_status nnar_check_path(nnar_ctx *ctx, const mp_node *n)
{
    uint32_t i, start = 0;
    if (n->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "path: expected a string");
    if (n->len < 1 || n->len > 4096)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "path: expected 1 to 4096 bytes of UTF-8, found %u", (unsigned)n->len);
    for (i = 0; i <= n->len; i++) {
        uint8_t c = i < n->len ? n->v.p[i] : '/';
        if (c == '/') {
            uint32_t len = i - start;
            const uint8_t *part = n->v.p + start;
            if (len == 0 || (len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.'))
                goto bad;
            start = i + 1;
        } else if (c == '\\' || c == ':' || c < 0x20 || c == 0x7F) {
            goto bad;
        }
    }
    return NNAR_OK;
bad:
    return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "path '%.*s': expected a relative path of plain names separated by '/' (no "
                     "empty, '.' or '..' component, no backslash, colon or control character)",
                     (int)(n->len > 200 ? 200 : n->len), (const char *)n->v.p);
}

nnar_status nnar_parse_file(nnar_ctx *ctx, nnar_record *rec)
{
    static const char *const keys[] = {"path", "length", "digest", "pipeline", "segments", NULL};
    nnar_head *h = &rec->head;
    uint32_t p, dig;
    rec->fidelity = MP_NONE;
    NNAR_TRY(mp_check_keys(ctx, &h->doc, 0, keys, NULL, ctx->strict, "FILE descriptor"));
    p = mp_get(&h->doc, 0, "path");
    NNAR_TRY(nnar_check_path(ctx, NODE(h, p)));
    rec->path = NODE(h, p)->v.p;
    rec->path_len = NODE(h, p)->len;
    if (!mp_u63(NODE(h, mp_get(&h->doc, 0, "length")), &rec->length))
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "length: expected an integer in [0, 2^63-1]");
    NNAR_TRY(nnar_check_limit(ctx, "file bytes", rec->length, ctx->limits.max_tensor_bytes, "max_tensor_bytes"));
    dig = mp_get(&h->doc, 0, "digest");
    if (NODE(h, dig)->type != MP_BIN || NODE(h, dig)->len != NNAR_DIGEST_SIZE)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "digest: expected 32 bytes (bin)");
    rec->digest = NODE(h, dig)->v.p;
    return bytes_record(ctx, rec);
}

void nnar_record_free(nnar_ctx *ctx, nnar_record *rec)
{
    nnar_head_free(ctx, &rec->head);
    nnar_free(ctx, rec->members);
    nnar_free(ctx, rec->shapes);
    nnar_free(ctx, rec->segments);
    memset(rec, 0, sizeof *rec);
}

nnar_status nnar_check_padding(nnar_ctx *ctx, const nnar_record *rec, const uint8_t *body)
{
    uint64_t base = NNAR_BODY_OFFSET(&rec->head), pos = 0, i;
    uint32_t k;
    for (k = 0; k < rec->segment_count; k++) {
        uint64_t a = rec->segments[k].offset - base;
        for (i = pos; i < a; i++)
            if (body[i])
                return nnar_fail(ctx, NNAR_RESERVED_NONZERO, "padding before segment '%.*s': expected zero bytes, found 0x%02x "
                                 "at offset %llu", (int)rec->segments[k].name_len, (const char *)rec->segments[k].name,
                                 body[i], (unsigned long long)(base + i));
        pos = a + rec->segments[k].length;
    }
    return NNAR_OK;
}

nnar_status nnar_parse_aliases(nnar_ctx *ctx, const nnar_head *h, nnar_alias **pairs, uint32_t *count)
{
    static const char *const keys[] = {"aliases", NULL};
    uint32_t a, k, i;
    const mp_node *an;
    nnar_nameset seen;
    nnar_status s = NNAR_OK;
    nnar_alias *out;
    *pairs = NULL;
    *count = 0;
    if (h->body_length)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "ALIS record: expected an empty body, found %llu bytes",
                         (unsigned long long)h->body_length);
    NNAR_TRY(mp_check_keys(ctx, &h->doc, 0, keys, NULL, ctx->strict, "ALIS descriptor"));
    a = mp_get(&h->doc, 0, "aliases");
    an = NODE(h, a);
    if (an->type != MP_ARRAY || an->len == 0) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "aliases: expected a non-empty list");
    NNAR_TRY(nnar_check_limit(ctx, "aliases in one record", an->len, ctx->limits.max_tensors, "max_tensors"));
    out = (nnar_alias *)nnar_alloc(ctx, (size_t)an->len * sizeof *out);
    if (!out) return NNAR_OUT_OF_MEMORY;
    nnar_nameset_init(&seen);
    for (k = a + 1, i = 0; i < an->len; i++, k = NODE(h, k)->end) {
        const mp_node *p = NODE(h, k), *name, *target;
        int added;
        if (p->type != MP_ARRAY || p->len != 2 || NODE(h, k + 1)->type != MP_STR || NODE(h, NODE(h, k + 1)->end)->type != MP_STR) {
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "aliases[%u]: expected [name, target]", (unsigned)i);
            break;
        }
        name = NODE(h, k + 1);
        target = NODE(h, name->end);
        if ((s = nnar_check_name(ctx, name)) != NNAR_OK || (s = nnar_check_name(ctx, target)) != NNAR_OK) break;
        added = nnar_nameset_add(ctx, &seen, name->v.p, name->len);
        if (added < 0) { s = NNAR_OUT_OF_MEMORY; break; }
        if (!added) { s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "duplicate tensor name '%.*s'", (int)name->len, (const char *)name->v.p); break; }
        out[i].name = name->v.p; out[i].name_len = name->len;
        out[i].target = target->v.p; out[i].target_len = target->len;
    }
    nnar_nameset_free(ctx, &seen);
    if (s != NNAR_OK) { nnar_free(ctx, out); return s; }
    *pairs = out;
    *count = an->len;
    return NNAR_OK;
}

void nnar_index_free(nnar_ctx *ctx, nnar_index *ix)
{
    nnar_free(ctx, ix->entries);
    nnar_free(ctx, ix->names);
    nnar_free(ctx, ix->name_lens);
    nnar_nameset_free(ctx, &ix->seen);
    memset(ix, 0, sizeof *ix);
}

nnar_status nnar_parse_index(nnar_ctx *ctx, const nnar_head *h, uint64_t first_offset, nnar_index *ix)
{
    static const char *const keys[] = {"records", NULL};
    static const char *const optional[] = {"content", NULL};
    uint32_t r, k, i, total_names = 0, c;
    const mp_node *rn;
    uint64_t pos = first_offset;
    memset(ix, 0, sizeof *ix);
    nnar_nameset_init(&ix->seen);
    NNAR_TRY(mp_check_keys(ctx, &h->doc, 0, keys, optional, ctx->strict, "INDX descriptor"));
    r = mp_get(&h->doc, 0, "records");
    rn = NODE(h, r);
    if (rn->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "records: expected a list");
    NNAR_TRY(nnar_check_limit(ctx, "records in the index", rn->len, ctx->limits.max_tensors, "max_tensors"));
    for (k = r + 1, i = 0; i < rn->len; i++, k = NODE(h, k)->end) {
        const mp_node *e = NODE(h, k);
        if (e->type == MP_ARRAY && e->len == 4) {
            uint32_t x = NODE(h, NODE(h, NODE(h, k + 1)->end)->end)->end;
            if (NODE(h, x)->type == MP_ARRAY) total_names += NODE(h, x)->len;
        }
    }
    ix->entries = (nnar_entry *)nnar_alloc_zero(ctx, ((size_t)rn->len + 1) * sizeof *ix->entries);
    ix->names = (const uint8_t **)nnar_alloc(ctx, ((size_t)total_names + 1) * sizeof *ix->names);
    ix->name_lens = (uint32_t *)nnar_alloc(ctx, ((size_t)total_names + 1) * sizeof *ix->name_lens);
    if (!ix->entries || !ix->names || !ix->name_lens) return NNAR_OUT_OF_MEMORY;
    for (k = r + 1, i = 0; i < rn->len; i++, k = NODE(h, k)->end) {
        const mp_node *e = NODE(h, k), *t, *off, *len, *names;
        nnar_entry *en = &ix->entries[i];
        uint32_t j, q;
        if (e->type != MP_ARRAY || e->len != 4)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index entry %u: expected [record_type, offset, length, names]", (unsigned)i);
        t = NODE(h, k + 1);
        off = NODE(h, t->end);
        len = NODE(h, off->end);
        names = NODE(h, len->end);
        if (t->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index entry %u record_type: expected a string", (unsigned)i);
        if (t->len != 4 || (t->v.p[0] | t->v.p[1] | t->v.p[2] | t->v.p[3]) & 0x80)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index entry %u: record_type: expected 4 ASCII characters", (unsigned)i);
        memcpy(en->type, t->v.p, 4);
        if (!mp_u63(off, &en->offset))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index entry %u offset: expected an integer in [0, 2^63-1]", (unsigned)i);
        if (!mp_u63(len, &en->length) || en->length < NNAR_FRAME_SIZE)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index entry %u length: expected an integer in [32, 2^63-1]", (unsigned)i);
        if (names->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index entry %u names: expected a list", (unsigned)i);
        if (en->offset != pos)
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry %u: expected offset %llu (records are contiguous), found %llu",
                             (unsigned)i, (unsigned long long)pos, (unsigned long long)en->offset);
        pos = en->offset + en->length;
        if ((memcmp(en->type, "TENS", 4) == 0) != (names->len > 0))
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry %u: expected names for a TENS record and none for others, "
                             "found %u", (unsigned)i, (unsigned)names->len);
        NNAR_TRY(nnar_check_limit(ctx, "tensors in the index", (uint64_t)ix->name_count + names->len, ctx->limits.max_tensors,
                                  "max_tensors"));
        en->first_name = ix->name_count;
        en->name_count = names->len;
        for (j = 0, q = len->end + 1; j < names->len; j++, q = NODE(h, q)->end) {
            const mp_node *nm = NODE(h, q);
            int added;
            NNAR_TRY(nnar_check_name(ctx, nm));
            added = nnar_nameset_add(ctx, &ix->seen, nm->v.p, nm->len);
            if (added < 0) return NNAR_OUT_OF_MEMORY;
            if (!added) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index: duplicate tensor name '%.*s'", (int)nm->len, (const char *)nm->v.p);
            ix->names[ix->name_count] = nm->v.p;
            ix->name_lens[ix->name_count] = nm->len;
            ix->name_count++;
        }
        ix->count++;
    }
    for (i = 0; i < ix->count; i++) {
        const uint8_t *ty = ix->entries[i].type;
        if (memcmp(ty, "FILE", 4) == 0 && i && memcmp(ix->entries[i - 1].type, "MODL", 4) != 0 &&
            memcmp(ix->entries[i - 1].type, "FILE", 4) != 0)
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry %u: a FILE record must follow META, MODL or another FILE "
                             "record", (unsigned)i);
        if (memcmp(ty, "PTCH", 4) == 0 && i != 0)
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry %u: a PTCH record must come first after META", (unsigned)i);
        if (memcmp(ty, "MODL", 4) == 0 && i != 0)
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry %u: a MODL record must come first after META", (unsigned)i);
        if (memcmp(ty, "ALIS", 4) == 0 && (i == 0 || memcmp(ix->entries[i - 1].type, "TENS", 4) != 0))
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry %u: an ALIS record must follow a TENS record", (unsigned)i);
    }
    if (pos != h->offset)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index: records end at offset %llu, expected the INDX record at %llu",
                         (unsigned long long)pos, (unsigned long long)h->offset);
    (void)c;
    return NNAR_OK;
}

nnar_status nnar_index_content(nnar_ctx *ctx, const nnar_head *h, nnar_index *ix)
{
    uint32_t c = mp_get(&h->doc, 0, "content");
    if (c != MP_NONE) {
        if (NODE(h, c)->type != MP_BIN || NODE(h, c)->len != NNAR_DIGEST_SIZE)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "INDX content: expected 32 bytes (bin)");
        ix->content = NODE(h, c)->v.p;
    }
    return NNAR_OK;
}
