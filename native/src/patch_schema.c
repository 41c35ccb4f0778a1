/* The PTCH descriptor (spec/patch.md §3, §4; §9.1, §9.2 for byte patches), every field type-
 * and range-checked before the applier acts on it, in the order nnar's reader checks them. */
#include <stdio.h>

#include "patch.h"

#define NODE(i) (&doc->nodes[i])

static const char *const CONTENT_KEYS[] = {"base_content", "result_content", "result_minor", "records", NULL};
static const char *const CONTENT_OPTIONAL[] = {"encoder", NULL};
static const char *const BYTE_KEYS[] = {"base_length", "base_digest", "result_length", "result_digest", "result_minor",
                                        "records", "index", "encoder", NULL};
static const char *const CONTENT_RECORD_KEYS[] = {"base", "type", "descriptor", "segments", NULL};
static const char *const BYTE_RECORD_KEYS[] = {"base", "type", "flags", "descriptor", "segments", "body_crc", NULL};
static const char *const NONE[] = {NULL};

static int is_int(const mp_node *n, uint64_t hi, uint64_t *out)
{
    if (n->type != MP_INT || n->neg || n->v.u > hi) return 0;
    *out = n->v.u;
    return 1;
}

/* a value Python compares equal to the small int k (1 == 1.0; a bool is not taken) */
static int equals_int(const mp_node *n, uint64_t k)
{
    return (n->type == MP_INT && !n->neg && n->v.u == k) || (n->type == MP_FLOAT && n->v.f == (double)k);
}

static nnar_status digest_of(nnar_ctx *ctx, const mp_doc *doc, uint32_t i, const char *what, const uint8_t **out)
{
    if (NODE(i)->type != MP_BIN || NODE(i)->len != NNAR_DIGEST_SIZE)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: expected 32 bytes", what);
    *out = NODE(i)->v.p;
    return NNAR_OK;
}

static nnar_status segment_op(nnar_ctx *ctx, const mp_doc *doc, uint32_t s, const char *what, seg_op *out)
{
    static const char *const from_only[] = {"from", NULL};
    static const char *const delta_keys[] = {"from", "op", "width", NULL};
    static const char *const delta_optional[] = {"ranges", NULL};
    uint32_t f, k, i, r;
    memset(out, 0, sizeof *out);
    out->ranges = MP_NONE;
    if (NODE(s)->type != MP_MAP || (f = mp_get(doc, s, "from")) == MP_NONE)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: expected a map with key 'from'", what);
    if (mp_str_eq(NODE(f), "base")) out->source = SRC_BASE;
    else if (mp_str_eq(NODE(f), "patch")) out->source = SRC_PATCH;
    else if (mp_str_eq(NODE(f), "delta")) out->source = SRC_DELTA;
    else return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: from: expected one of base, patch, delta", what);
    if (out->source != SRC_DELTA) return mp_check_keys(ctx, doc, s, from_only, NULL, ctx->strict, what);
    NNAR_TRY(mp_check_keys(ctx, doc, s, delta_keys, delta_optional, ctx->strict, what));
    k = mp_get(doc, s, "op");
    if (mp_str_eq(NODE(k), "add")) out->add = 1;
    else if (!mp_str_eq(NODE(k), "xor")) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: op: expected one of xor, add", what);
    k = mp_get(doc, s, "width");
    for (i = 1; i <= 8; i *= 2)
        if (equals_int(NODE(k), i)) out->width = (uint8_t)i;
    if (!out->width) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: width: expected one of 1, 2, 4, 8", what);
    r = mp_get(doc, s, "ranges");
    if (r != MP_NONE) {
        uint64_t v;
        if (NODE(r)->type != MP_ARRAY || NODE(r)->len > ctx->limits.max_tensors)
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: ranges: expected a list of at most %llu ranges", what,
                             (unsigned long long)ctx->limits.max_tensors);
        for (i = 0, k = r + 1; i < NODE(r)->len; i++, k = NODE(k)->end) {
            if (NODE(k)->type != MP_ARRAY || NODE(k)->len != 2)
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: ranges[%u]: expected [start or nil, length]", what, (unsigned)i);
            if (NODE(k + 1)->type != MP_NIL && !is_int(NODE(k + 1), NNAR_MAX_U63, &v))
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s ranges[%u] start: expected an integer in [0, 2^63-1]", what,
                                 (unsigned)i);
            if (!is_int(NODE(NODE(k + 1)->end), NNAR_MAX_U63, &v))
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s ranges[%u] length: expected an integer in [0, 2^63-1]", what,
                                 (unsigned)i);
        }
        out->ranges = r;
    }
    return NNAR_OK;
}

static int known_type(const mp_node *n, int content)
{
    return mp_str_eq(n, "META") || mp_str_eq(n, "MODL") || mp_str_eq(n, "TENS") || mp_str_eq(n, "ALIS") ||
           (content && mp_str_eq(n, "FILE"));
}

static nnar_status record_op(nnar_ctx *ctx, const mp_doc *doc, uint32_t r, uint32_t i, patch_header *h, uint32_t *seg_next)
{
    rec_op *op = &h->ops[i];
    char what[48];
    uint32_t k;
    uint64_t v;
    sprintf(what, "records[%u]", (unsigned)i);
    memset(op, 0, sizeof *op);
    op->type = op->desc = MP_NONE;
    if (NODE(r)->type != MP_MAP) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: expected a map", what);
    NNAR_TRY(mp_check_keys(ctx, doc, r, NONE, h->content ? CONTENT_RECORD_KEYS : BYTE_RECORD_KEYS, ctx->strict, what));
    if ((k = mp_get(doc, r, "base")) != MP_NONE) {
        if (!is_int(NODE(k), NNAR_MAX_U63, &op->base))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s base: expected an integer in [0, 2^63-1]", what);
        op->has_base = 1;
    }
    if ((k = mp_get(doc, r, "type")) != MP_NONE) {
        if (NODE(k)->type != MP_STR) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s type: expected a string", what);
        if (!known_type(NODE(k), h->content))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s type: expected one of META, MODL, TENS, ALIS%s, found '%.*s'", what,
                             h->content ? ", FILE" : "", (int)(NODE(k)->len > 20 ? 20 : NODE(k)->len), (const char *)NODE(k)->v.p);
        op->type = k;
    }
    if ((k = mp_get(doc, r, "flags")) != MP_NONE) {
        if (!is_int(NODE(k), 3, &v)) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s flags: expected an integer in [0, 3]", what);
        op->has_flags = 1;
        op->flags = (uint32_t)v;
    }
    if ((k = mp_get(doc, r, "descriptor")) != MP_NONE) {
        if (NODE(k)->type != MP_BIN) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s descriptor: expected bytes", what);
        NNAR_TRY(nnar_check_limit(ctx, "descriptor", NODE(k)->len, ctx->limits.max_descriptor_bytes, "max_descriptor_bytes"));
        op->desc = k;
    }
    if (!op->has_base && (op->type == MP_NONE || op->desc == MP_NONE || (!op->has_flags && !h->content)))
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s: expected 'base', or %s", what,
                         h->content ? "'type' and 'descriptor'" : "all of 'type', 'flags' and 'descriptor'");
    if ((k = mp_get(doc, r, "segments")) != MP_NONE) {
        uint32_t j, s;
        if (NODE(k)->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s segments: expected a list", what);
        NNAR_TRY(nnar_check_limit(ctx, "segments", NODE(k)->len, ctx->limits.max_segments, "max_segments"));
        op->has_segs = 1;
        op->first_seg = *seg_next;
        op->nseg = NODE(k)->len;
        for (j = 0, s = k + 1; j < NODE(k)->len; j++, s = NODE(s)->end) {
            char sw[64];
            sprintf(sw, "records[%u] segments[%u]", (unsigned)i, (unsigned)j);
            NNAR_TRY(segment_op(ctx, doc, s, sw, &h->segs[(*seg_next)++]));
        }
    }
    if ((k = mp_get(doc, r, "body_crc")) != MP_NONE) {
        if (!is_int(NODE(k), 0xFFFFFFFFu, &v))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "%s body_crc: expected an integer in [0, 2^32-1]", what);
        op->has_crc = 1;
        op->body_crc = (uint32_t)v;
    }
    return NNAR_OK;
}

nnar_status nnar_patch_header(nnar_ctx *ctx, const mp_doc *doc, uint16_t minor, patch_header *h)
{
    uint32_t records, enc, k, i, r, nsegs = 0, seg_next = 0;
    uint64_t v;
    memset(h, 0, sizeof *h);
    h->doc = doc;
    nnar_set_where(ctx, "PTCH record");
    h->content = mp_get(doc, 0, "base_content") != MP_NONE;
    if (h->content == (mp_get(doc, 0, "base_digest") != MP_NONE))
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "PTCH descriptor: expected either 'base_content' (a content patch, 1.4) or "
                         "'base_digest' (a byte patch, 1.3), found %s", h->content ? "both" : "neither");
    if (h->content && minor < 4)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "PTCH descriptor: a content patch needs format 1.4 or later, found 1.%u",
                         (unsigned)minor);
    NNAR_TRY(mp_check_keys(ctx, doc, 0, h->content ? CONTENT_KEYS : BYTE_KEYS, h->content ? CONTENT_OPTIONAL : NULL,
                           ctx->strict, "PTCH descriptor"));
    records = mp_get(doc, 0, "records");
    if (NODE(records)->type != MP_ARRAY || NODE(records)->len == 0)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "records: expected a non-empty list");
    NNAR_TRY(nnar_check_limit(ctx, "records of the result (less META)", NODE(records)->len - 1, ctx->limits.max_tensors,
                              "max_tensors"));
    enc = mp_get(doc, 0, "encoder");
    if (enc != MP_NONE) {
        int ok = NODE(enc)->type == MP_MAP && NODE(enc)->len <= 16;
        for (i = 0, k = enc + 1; ok && i < NODE(enc)->len; i++, k = NODE(NODE(k)->end)->end)
            ok = NODE(k)->type == MP_STR && NODE(NODE(k)->end)->type == MP_STR;
        if (!ok) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "encoder: expected a map of at most 16 strings to strings");
    }
    if (!h->content) {
        static const char *const index_keys[] = {"flags", "descriptor", NULL};
        uint32_t ix = mp_get(doc, 0, "index");
        if (NODE(ix)->type != MP_MAP) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index: expected a map");
        NNAR_TRY(mp_check_keys(ctx, doc, ix, index_keys, NULL, ctx->strict, "index"));
    }
    if (!is_int(NODE(mp_get(doc, 0, "result_minor")), 0xFFFF, &v))
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "result_minor: expected an integer in [0, 65535]");
    h->result_minor = (uint16_t)v;
    /* every segment op, counted first to allocate once */
    for (i = 0, r = records + 1; i < NODE(records)->len; i++, r = NODE(r)->end) {
        uint32_t s = NODE(r)->type == MP_MAP ? mp_get(doc, r, "segments") : MP_NONE;
        if (s != MP_NONE && NODE(s)->type == MP_ARRAY) nsegs += NODE(s)->len;
    }
    h->nops = NODE(records)->len;
    h->ops = (rec_op *)nnar_alloc(ctx, (size_t)h->nops * sizeof *h->ops);
    h->segs = (seg_op *)nnar_alloc(ctx, ((size_t)nsegs + 1) * sizeof *h->segs);
    if (!h->ops || !h->segs) return NNAR_OUT_OF_MEMORY;
    for (i = 0, r = records + 1; i < h->nops; i++, r = NODE(r)->end) NNAR_TRY(record_op(ctx, doc, r, i, h, &seg_next));
    if (h->content) {
        NNAR_TRY(digest_of(ctx, doc, mp_get(doc, 0, "base_content"), "base_content", &h->base_content));
        return digest_of(ctx, doc, mp_get(doc, 0, "result_content"), "result_content", &h->result_content);
    }
    {
        uint32_t ix = mp_get(doc, 0, "index"), f, d;
        if (!is_int(NODE(mp_get(doc, 0, "base_length")), NNAR_MAX_U63, &h->base_length))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "base_length: expected an integer in [0, 2^63-1]");
        NNAR_TRY(digest_of(ctx, doc, mp_get(doc, 0, "base_digest"), "base_digest", &h->base_digest));
        if (!is_int(NODE(mp_get(doc, 0, "result_length")), NNAR_MAX_U63, &h->result_length))
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "result_length: expected an integer in [0, 2^63-1]");
        NNAR_TRY(digest_of(ctx, doc, mp_get(doc, 0, "result_digest"), "result_digest", &h->result_digest));
        f = mp_get(doc, ix, "flags");
        if (!is_int(NODE(f), 3, &v)) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index flags: expected an integer in [0, 3]");
        h->index_flags = (uint32_t)v;
        d = mp_get(doc, ix, "descriptor");
        if (NODE(d)->type != MP_BIN) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "index descriptor: expected bytes");
        NNAR_TRY(nnar_check_limit(ctx, "index descriptor", NODE(d)->len, ctx->limits.max_descriptor_bytes,
                                  "max_descriptor_bytes"));
        h->index_desc = d;
    }
    return NNAR_OK;
}

void nnar_patch_header_free(nnar_ctx *ctx, patch_header *h)
{
    nnar_free(ctx, h->ops);
    nnar_free(ctx, h->segs);
    h->ops = NULL;
    h->segs = NULL;
}
