/* Applying a patch (spec/patch.md): a content patch here (§4-§6), a byte patch in
 * patch_bytes.c (§9); the PTCH descriptor in patch_schema.c. The base is read at random, the
 * patch in order (it may be downloading), the result written front to back; memory is one
 * record of each at a time, plus the result's names (its index). Nothing trusts the patch:
 * every reference is range-checked, every payload tensor's digest checked before use, every
 * record rebuilt from the payload decoded and checked against its digest, and the result's
 * content digest compared with the patch's before the caller may keep anything. */
#include "patch.h"

#define CHUNK_MIN (64u << 10)   /* the arena of the result's names grows by this */

/* ---- shared with patch_bytes.c -------------------------------------------------------------- */

nnar_status nnar_patch_base_failed(patcher *p, nnar_status s)
{
    if (s != NNAR_OK && p->err && p->base) *p->err = *nnar_archive_error(p->base);
    return s;
}

int nnar_type_eq(const mp_node *n, const char *s) { return mp_str_eq(n, s); }

nnar_status nnar_patch_partner(patcher *p, uint32_t i, const rec_op *op, nnar_stored *src, uint8_t type[4])
{
    memset(src, 0, sizeof *src);
    if (op->has_base) {
        if (op->base >= p->n_base)
            return nnar_fail(&p->ctx, NNAR_BAD_DESCRIPTOR, "records[%u] base: expected a record number below %u, found %llu",
                             (unsigned)i, (unsigned)p->n_base, (unsigned long long)op->base);
        NNAR_TRY(nnar_patch_base_failed(p, nnar_archive_stored(p->base, (uint32_t)op->base, src)));
    }
    nnar_set_where(&p->ctx, "patch record %u", (unsigned)i);
    if (op->type != MP_NONE) memcpy(type, p->h.doc->nodes[op->type].v.p, 4);
    else memcpy(type, src->head->type, 4);
    if (!memcmp(type, "META", 4) != (i == 0)) {  /* META first, and only first (§4.1) */
        nnar_stored_free(p->base, src);
        return nnar_fail(&p->ctx, NNAR_BAD_LAYOUT, "records[%u]: expected %s here, found %.4s", (unsigned)i,
                         i == 0 ? "META" : "no META", (const char *)type);
    }
    return NNAR_OK;
}

nnar_status nnar_patch_payload(patcher *p, nnar_dtype dtype, uint64_t size, nnar_payload *out)
{
    int end;
    NNAR_TRY(nnar_instream_next(p->in, out, &end));
    if (end) return nnar_fail(&p->ctx, NNAR_BAD_LAYOUT, "patch: expected one more tensor, found the end of the patch");
    if (out->rank != 1 || out->dtype != dtype || (size != UINT64_MAX && out->size != size))
        return nnar_fail(&p->ctx, NNAR_CODEC_DATA, "patch tensor: expected %s[%llu], found %s of rank %u and %llu elements",
                         nnar_dtype_name(dtype), (unsigned long long)(size == UINT64_MAX ? 0 : size),
                         nnar_dtype_name(out->dtype), (unsigned)out->rank, (unsigned long long)out->size);
    return NNAR_OK;
}

static int little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* R = B op D, element by element on little-endian unsigned integers of width bytes (§5) */
static void apply_delta(uint8_t *b, const uint8_t *d, size_t n, int add, int width)
{
    size_t i;
    int k;
    if (!add || width == 1) {
        if (add) for (i = 0; i < n; i++) b[i] = (uint8_t)(b[i] + d[i]);
        else for (i = 0; i < n; i++) b[i] ^= d[i];
        return;
    }
    if (little_endian() && width == 4) {
        for (i = 0; i + 4 <= n; i += 4) {
            uint32_t x, y;
            memcpy(&x, b + i, 4); memcpy(&y, d + i, 4);
            x += y;
            memcpy(b + i, &x, 4);
        }
        return;
    }
    if (little_endian() && width == 8) {
        for (i = 0; i + 8 <= n; i += 8) {
            uint64_t x, y;
            memcpy(&x, b + i, 8); memcpy(&y, d + i, 8);
            x += y;
            memcpy(b + i, &x, 8);
        }
        return;
    }
    for (i = 0; i + (size_t)width <= n; i += (size_t)width) {
        unsigned carry = 0;
        for (k = 0; k < width; k++) {
            unsigned s = (unsigned)b[i + (size_t)k] + d[i + (size_t)k] + carry;
            b[i + (size_t)k] = (uint8_t)s;
            carry = s >> 8;
        }
    }
}

static void chain_digest(const mp_doc *doc, uint32_t node, uint8_t out[32], uint64_t *length)
{
    nnar_sha256 s;
    nnar_sha256_init(&s, 0);   /* a descriptor: small */
    *length = mp_canonical(doc, node, 0, &s);
    nnar_sha256_final(&s, out);
}

/* The result stream of a "delta" segment op (§5), in a buffer allocated here. */
static nnar_status delta_stream(patcher *p, const seg_op *sop, const nnar_segment *ref, const nnar_stored *src,
                                const nnar_segment *bref, const uint8_t *bdata, uint8_t **out)
{
    nnar_ctx *ctx = &p->ctx;
    const mp_doc *pd = p->h.doc;
    uint64_t base_length = 0, i, k;
    uint8_t *stream = NULL, *b;
    nnar_payload d;
    static const nnar_dtype uint_of[9] = {NNAR_DTYPE_UNKNOWN, NNAR_UINT8, NNAR_UINT16, NNAR_DTYPE_UNKNOWN, NNAR_UINT32,
                                          NNAR_DTYPE_UNKNOWN, NNAR_DTYPE_UNKNOWN, NNAR_DTYPE_UNKNOWN, NNAR_UINT64};
    nnar_status s;
    *out = NULL;
    if (sop->ranges == MP_NONE) base_length = bref->raw_length;
    else
        for (i = 0, k = sop->ranges + 1; i < pd->nodes[sop->ranges].len; i++, k = pd->nodes[k].end) {
            uint64_t n = pd->nodes[pd->nodes[k + 1].end].v.u;
            base_length = base_length > UINT64_MAX - n ? UINT64_MAX : base_length + n;
        }
    if (base_length != ref->raw_length || ref->raw_length % sop->width)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "delta: base stream of %llu bytes, result stream of %llu: expected equal "
                         "lengths, a multiple of %u", (unsigned long long)base_length, (unsigned long long)ref->raw_length,
                         (unsigned)sop->width);
    NNAR_TRY(nnar_decode_chain(ctx, &src->rec.head.doc, bref->codecs, bref->raw_length, bdata, (size_t)bref->length, &stream));
    b = stream;
    if (sop->ranges != MP_NONE) {
        uint64_t pos = 0;
        b = (uint8_t *)nnar_alloc(ctx, (size_t)ref->raw_length);
        if (!b) { nnar_free(ctx, stream); return NNAR_OUT_OF_MEMORY; }
        for (i = 0, k = sop->ranges + 1; i < pd->nodes[sop->ranges].len; i++, k = pd->nodes[k].end) {
            const mp_node *start = &pd->nodes[k + 1];
            uint64_t n = pd->nodes[start->end].v.u;
            if (start->type == MP_NIL) memset(b + pos, 0, (size_t)n);
            else if (start->v.u > bref->raw_length || n > bref->raw_length - start->v.u) {
                nnar_free(ctx, b);
                nnar_free(ctx, stream);
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "delta range [%llu, +%llu) lies past the partner's stream of %llu "
                                 "bytes", (unsigned long long)start->v.u, (unsigned long long)n,
                                 (unsigned long long)bref->raw_length);
            } else memcpy(b + pos, stream + start->v.u, (size_t)n);
            pos += n;
        }
        nnar_free(ctx, stream);
    }
    s = nnar_patch_payload(p, uint_of[sop->width], ref->raw_length / sop->width, &d);
    if (s != NNAR_OK) { nnar_free(ctx, b); return s; }
    apply_delta(b, d.data, (size_t)ref->raw_length, sop->add, sop->width);
    *out = b;
    return NNAR_OK;
}

nnar_status nnar_patch_segment(patcher *p, const seg_op *sop, const nnar_segment *ref, const mp_doc *doc,
                               const nnar_stored *src, int content, uint8_t **out, size_t *out_size)
{
    nnar_ctx *ctx = &p->ctx;
    const nnar_segment *bref = NULL;
    const uint8_t *bdata;
    uint32_t j;
    *out = NULL;
    *out_size = 0;
    if (sop->source == SRC_PATCH) {
        nnar_payload d;
        NNAR_TRY(nnar_patch_payload(p, NNAR_UINT8, content ? UINT64_MAX : ref->length, &d));
        *out = (uint8_t *)nnar_alloc(ctx, (size_t)d.nbytes);
        if (!*out) return NNAR_OUT_OF_MEMORY;
        if (d.nbytes) memcpy(*out, d.data, (size_t)d.nbytes);
        *out_size = (size_t)d.nbytes;
        return NNAR_OK;
    }
    for (j = 0; j < src->rec.segment_count && !bref; j++)
        if (src->rec.segments[j].name_len == ref->name_len && !memcmp(src->rec.segments[j].name, ref->name, ref->name_len))
            bref = &src->rec.segments[j];
    if (!bref) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment '%.*s': expected a base record with a segment of this name, "
                                "found none", (int)ref->name_len, (const char *)ref->name);
    bdata = src->body + (bref->offset - NNAR_BODY_OFFSET(src->head));
    if (sop->source == SRC_BASE) {
        if (content) {
            uint8_t a[32], b[32];
            uint64_t la, lb;
            chain_digest(doc, ref->codecs, a, &la);
            chain_digest(&src->rec.head.doc, bref->codecs, b, &lb);
            if (bref->raw_length != ref->raw_length || la != lb || memcmp(a, b, 32) != 0)
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "base segment '%.*s': expected raw_length %llu and the same codecs, "
                                 "found raw_length %llu and %s codecs", (int)ref->name_len, (const char *)ref->name,
                                 (unsigned long long)ref->raw_length, (unsigned long long)bref->raw_length,
                                 la == lb && !memcmp(a, b, 32) ? "the same" : "other");
        } else if (bref->length != ref->length) {
            return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "base segment '%.*s': expected %llu stored bytes, found %llu",
                             (int)ref->name_len, (const char *)ref->name, (unsigned long long)ref->length,
                             (unsigned long long)bref->length);
        }
        *out = (uint8_t *)nnar_alloc(ctx, (size_t)bref->length);
        if (!*out) return NNAR_OUT_OF_MEMORY;
        if (bref->length) memcpy(*out, bdata, (size_t)bref->length);
        *out_size = (size_t)bref->length;
        return NNAR_OK;
    }
    {
        uint8_t *stream;
        nnar_status s;
        NNAR_TRY(delta_stream(p, sop, ref, src, bref, bdata, &stream));
        s = nnar_encode_chain(ctx, doc, ref->codecs, stream, (size_t)ref->raw_length, out, out_size);
        nnar_free(ctx, stream);
        NNAR_TRY(s);
        if (!content && *out_size != ref->length) {
            nnar_free(ctx, *out);
            *out = NULL;
            return nnar_fail(ctx, NNAR_DIGEST, "segment '%.*s': encoding the rebuilt stream again gave %zu bytes, expected %llu "
                             "(the patch's maker used other encoders)", (int)ref->name_len, (const char *)ref->name,
                             *out_size, (unsigned long long)ref->length);
        }
    }
    return NNAR_OK;
}

/* ---- a content patch (§6) --------------------------------------------------------------------- */

typedef struct chunk { struct chunk *next; size_t used, cap; } chunk;

typedef struct name_ref { const uint8_t *p; uint32_t n; } name_ref;

typedef struct result_state {
    nnar_sha256 content;
    nnar_buf index;
    nnar_nameset names, paths;
    chunk *arena;
    name_ref *last_tens;          /* names of the last TENS record written, for an ALIS record */
    uint32_t last_count, last_cap;
    uint8_t last_type[4];
    uint32_t entries;
} result_state;

static const uint8_t *keep_name(nnar_ctx *ctx, result_state *r, const uint8_t *p, uint32_t n)
{
    uint8_t *out;
    if (!r->arena || r->arena->cap - r->arena->used < n) {
        size_t cap = n > CHUNK_MIN ? n : CHUNK_MIN;
        chunk *c = (chunk *)nnar_alloc(ctx, sizeof *c + cap);
        if (!c) return NULL;
        c->next = r->arena;
        c->used = 0;
        c->cap = cap;
        r->arena = c;
    }
    out = (uint8_t *)(r->arena + 1) + r->arena->used;
    memcpy(out, p, n);
    r->arena->used += n;
    return out;
}

static nnar_status add_name(nnar_ctx *ctx, result_state *r, nnar_nameset *set, const uint8_t *p, uint32_t n,
                            const char *what, const uint8_t **kept)
{
    const uint8_t *k;
    int added;
    if (nnar_nameset_has(set, p, n))
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "duplicate %s '%.*s'", what, (int)(n > 200 ? 200 : n), (const char *)p);
    k = keep_name(ctx, r, p, n);
    if (!k) return NNAR_OUT_OF_MEMORY;
    added = nnar_nameset_add(ctx, set, k, n);
    if (added < 0) return NNAR_OUT_OF_MEMORY;
    if (kept) *kept = k;
    return NNAR_OK;
}

/* The SHA-256 of a record's decoded bytes against its digest (a TENS array, a FILE's bytes);
 * the structure's SHA-256 into sha_out for MODL. */
static nnar_status decode_check(nnar_ctx *ctx, const nnar_record *rec, const nnar_out_segment *segs, const uint8_t *digest,
                                uint8_t sha_out[32])
{
    const uint8_t **ptrs;
    uint64_t nbytes;
    uint8_t *buf, d[32];
    uint32_t j;
    nnar_status s;
    nnar_sha256 sha;
    if (rec->dtype == NNAR_DTYPE_UNKNOWN)
        return nnar_fail(ctx, NNAR_UNSUPPORTED_DTYPE, "unsupported dtype: expected a dtype of FORMAT.md 5.2.2, found '%.*s'",
                         (int)rec->dtype_len, (const char *)rec->dtype_name);
    nbytes = rec->array_size * nnar_dtype_size(rec->dtype);
    ptrs = (const uint8_t **)nnar_alloc(ctx, ((size_t)rec->segment_count + 1) * sizeof *ptrs);
    if (!ptrs) return NNAR_OUT_OF_MEMORY;
    buf = (uint8_t *)nnar_alloc(ctx, (size_t)nbytes);
    if (!buf) { nnar_free(ctx, (void *)ptrs); return NNAR_OUT_OF_MEMORY; }
    for (j = 0; j < rec->segment_count; j++) ptrs[j] = segs[j].data;
    s = nnar_decode_segments(ctx, rec, ptrs, buf);
    if (s == NNAR_OK) {
        nnar_sha256_init(&sha, ctx->cpu);
        nnar_sha256_update(&sha, buf, (size_t)nbytes);
        nnar_sha256_final(&sha, d);
        if (sha_out) memcpy(sha_out, d, 32);
        else if (memcmp(d, digest, 32) != 0)
            s = nnar_fail(ctx, NNAR_DIGEST, "rebuilt record: expected the SHA-256 of its descriptor's digest, decoded another");
    }
    nnar_free(ctx, buf);
    nnar_free(ctx, (void *)ptrs);
    return s;
}

/* Step 6: the rebuilt record checked as a reader checks it; *extra is what its record digest
 * adds (a MODL structure's SHA-256). The head's descriptor is parsed here. */
static nnar_status check_record(patcher *p, result_state *r, nnar_head *head, const nnar_out_segment *segs, int rebuilt,
                                uint8_t extra[32], int *has_extra)
{
    nnar_ctx *ctx = &p->ctx;
    nnar_record rec;
    nnar_status s = NNAR_OK;
    uint32_t k;
    *has_extra = 0;
    if (!memcmp(head->type, "META", 4)) return nnar_parse_meta(ctx, head);
    if (!memcmp(head->type, "ALIS", 4)) {
        nnar_alias *pairs;
        uint32_t n, j;
        int tens = r->entries && !memcmp(r->last_type, "TENS", 4);
        NNAR_TRY(nnar_parse_aliases(ctx, head, &pairs, &n));
        for (j = 0; j < n && s == NNAR_OK; j++) {
            int found = 0;
            for (k = 0; tens && k < r->last_count && !found; k++)
                found = r->last_tens[k].n == pairs[j].target_len && !memcmp(r->last_tens[k].p, pairs[j].target, pairs[j].target_len);
            if (!found || nnar_nameset_has(&r->names, pairs[j].name, pairs[j].name_len))
                s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "alias '%.*s': expected a new name for a tensor of the TENS record before",
                              (int)pairs[j].name_len, (const char *)pairs[j].name);
            else s = add_name(ctx, r, &r->names, pairs[j].name, pairs[j].name_len, "tensor name", NULL);
        }
        nnar_free(ctx, pairs);
        return s;
    }
    memset(&rec, 0, sizeof rec);
    rec.head = *head;   /* a view: the caller frees the head */
    if (!memcmp(head->type, "MODL", 4)) {
        if (r->entries) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "a MODL record must come first after META");
        s = nnar_parse_model(ctx, &rec);
        if (s == NNAR_OK) s = decode_check(ctx, &rec, segs, NULL, extra);
        *has_extra = 1;
    } else if (!memcmp(head->type, "FILE", 4)) {
        if (r->entries && memcmp(r->last_type, "MODL", 4) && memcmp(r->last_type, "FILE", 4))
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "a FILE record must follow META, MODL or another FILE record");
        s = nnar_parse_file(ctx, &rec);
        if (s == NNAR_OK) s = add_name(ctx, r, &r->paths, rec.path, rec.path_len, "file path", NULL);
        if (s == NNAR_OK && rebuilt) s = decode_check(ctx, &rec, segs, rec.digest, NULL);
    } else {
        s = nnar_parse_tensor(ctx, &rec);
        if (s == NNAR_OK && rec.member_count > r->last_cap) {
            name_ref *grown = (name_ref *)nnar_alloc(ctx, (size_t)rec.member_count * sizeof *grown);
            if (!grown) s = NNAR_OUT_OF_MEMORY;
            else { nnar_free(ctx, r->last_tens); r->last_tens = grown; r->last_cap = rec.member_count; }
        }
        for (k = 0; s == NNAR_OK && k < rec.member_count; k++) {
            s = add_name(ctx, r, &r->names, rec.members[k].name, rec.members[k].name_len, "tensor name", &r->last_tens[k].p);
            r->last_tens[k].n = rec.members[k].name_len;
        }
        r->last_count = s == NNAR_OK ? rec.member_count : 0;
        if (s == NNAR_OK && rebuilt) s = decode_check(ctx, &rec, segs, rec.digest, NULL);
    }
    nnar_free(ctx, rec.members);
    nnar_free(ctx, rec.shapes);
    nnar_free(ctx, rec.segments);
    return s;
}

/* The index entry of a record: [type, offset, length, names]. */
static nnar_status index_entry(nnar_ctx *ctx, result_state *r, const nnar_head *h)
{
    uint32_t k, n = !memcmp(h->type, "TENS", 4) ? r->last_count : 0;
    NNAR_TRY(nnar_mp_head(ctx, &r->index, MP_ARRAY, 4));
    NNAR_TRY(nnar_mp_bytes(ctx, &r->index, MP_STR, h->type, 4));
    NNAR_TRY(nnar_mp_uint(ctx, &r->index, h->offset));
    NNAR_TRY(nnar_mp_uint(ctx, &r->index, NNAR_HEAD_END(h) - h->offset));
    NNAR_TRY(nnar_mp_head(ctx, &r->index, MP_ARRAY, n));
    for (k = 0; k < n; k++) NNAR_TRY(nnar_mp_bytes(ctx, &r->index, MP_STR, r->last_tens[k].p, r->last_tens[k].n));
    return NNAR_OK;
}

static int with_segments(const uint8_t t[4]) { return !memcmp(t, "TENS", 4) || !memcmp(t, "MODL", 4) || !memcmp(t, "FILE", 4); }

/* One result record (steps 4-6): built, checked, added to the content digest and the index,
 * written. */
static nnar_status content_record(patcher *p, result_state *r, uint32_t i, const uint8_t *preamble)
{
    nnar_ctx *ctx = &p->ctx;
    const rec_op *op = &p->h.ops[i];
    const mp_doc *pd = p->h.doc;
    nnar_stored src;
    uint8_t type[4], *form = NULL, *plain = NULL, *stored = NULL, extra[32], d[32];
    const uint8_t *desc;
    size_t desc_size, stored_size = 0;
    mp_doc doc;
    nnar_segment *refs = NULL;
    uint32_t nref = 0, j, zflag = 0, flags, crc;
    nnar_out_segment *segs = NULL;
    uint64_t *lengths = NULL, body_length, plain_size;
    nnar_head head;
    int rebuilt = op->desc != MP_NONE, has_extra = 0;
    nnar_status s;
    memset(&doc, 0, sizeof doc);
    memset(&head, 0, sizeof head);
    NNAR_TRY(nnar_patch_partner(p, i, op, &src, type));
    if (op->desc != MP_NONE) {
        desc = pd->nodes[op->desc].v.p;
        desc_size = pd->nodes[op->desc].len;
    } else {   /* the partner's descriptor in content form */
        int zero = with_segments(src.head->type);
        desc_size = (size_t)mp_encode(&src.head->doc, zero, NULL, NULL);
        form = (uint8_t *)nnar_alloc(ctx, desc_size);
        if (!form) { nnar_stored_free(p->base, &src); return NNAR_OUT_OF_MEMORY; }
        mp_encode(&src.head->doc, zero, NULL, form);
        desc = form;
    }
    s = mp_parse(ctx, desc, desc_size, &doc);
    if (s == NNAR_OK && !with_segments(type)) {
        if (op->has_segs && op->nseg)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "a %.4s record has no segments, found %u", (const char *)type, (unsigned)op->nseg);
    } else if (s == NNAR_OK) {
        uint32_t sn = mp_get(&doc, 0, "segments");
        if (sn == MP_NONE || doc.nodes[sn].type != MP_ARRAY)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "rebuilt descriptor: expected a 'segments' list");
        if (s == NNAR_OK) s = nnar_segment_entries(ctx, &doc, sn, 1, &refs, &nref);
        if (s == NNAR_OK && op->has_segs && op->nseg != nref)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segments: expected one per segment of the descriptor (%u), found %u",
                          (unsigned)nref, (unsigned)op->nseg);
        if (s == NNAR_OK) {
            segs = (nnar_out_segment *)nnar_alloc_zero(ctx, ((size_t)nref + 1) * sizeof *segs);
            lengths = (uint64_t *)nnar_alloc(ctx, ((size_t)nref + 1) * sizeof *lengths);
            if (!segs || !lengths) s = NNAR_OUT_OF_MEMORY;
        }
        for (j = 0; s == NNAR_OK && j < nref; j++) {
            static const seg_op from_base = {SRC_BASE, 0, 0, MP_NONE};
            const seg_op *sop = op->has_segs ? &p->h.segs[op->first_seg + j] : &from_base;
            uint8_t *data = NULL;
            size_t size = 0;
            nnar_set_where(ctx, "patch record %u, segment '%.*s'", (unsigned)i, (int)(refs[j].name_len > 60 ? 60 : refs[j].name_len),
                           (const char *)refs[j].name);
            s = nnar_patch_segment(p, sop, &refs[j], &doc, &src, 1, &data, &size);
            segs[j].data = data;
            segs[j].size = size;
            segs[j].verbatim = doc.nodes[refs[j].codecs].len == 0;
            lengths[j] = size;
            rebuilt |= sop->source != SRC_BASE;
        }
        nnar_set_where(ctx, "patch record %u", (unsigned)i);
    }
    nnar_stored_free(p->base, &src);
    /* the base's record is no longer needed: its buffer is not kept through the check below,
     * nor the blocks the patch stream keeps */
    nnar_archive_trim(p->base);
    nnar_ctx_trim(nnar_instream_ctx(p->in));
    /* step 5: the descriptor with this machine's stored lengths, the frame, the body */
    if (s == NNAR_OK) {
        plain_size = mp_encode(&doc, with_segments(type) && nref, lengths, NULL);
        plain = (uint8_t *)nnar_alloc(ctx, (size_t)plain_size);
        if (!plain) s = NNAR_OUT_OF_MEMORY;
        else mp_encode(&doc, with_segments(type) && nref, lengths, plain);
    }
    if (s == NNAR_OK) s = nnar_store_descriptor(ctx, plain, (size_t)plain_size, &stored, &stored_size, &zflag);
    if (s == NNAR_OK) {
        memcpy(head.type, type, 4);
        flags = (!memcmp(type, "MODL", 4) || !memcmp(type, "FILE", 4) ? 0 : NNAR_FLAG_MUST_UNDERSTAND) | zflag;
        head.flags = flags;
        head.offset = p->sink.pos;
        head.descriptor_length = (uint32_t)stored_size;
        nnar_body_layout(ctx->cpu, NNAR_BODY_OFFSET(&head), segs, nref, &crc, &body_length);
        head.body_length = body_length;
        head.body_crc = crc;
        head.desc = plain;
        head.desc_size = (size_t)plain_size;
        head.stored = stored ? stored : plain;
        s = mp_parse(ctx, plain, (size_t)plain_size, &head.doc);
    }
    /* step 6 */
    if (s == NNAR_OK) s = check_record(p, r, &head, segs, rebuilt, extra, &has_extra);
    if (s == NNAR_OK) {
        nnar_record_digest(&head, has_extra ? extra : NULL, d);
        nnar_sha256_update(&r->content, d, 32);
        if (i) {
            s = index_entry(ctx, r, &head);
            memcpy(r->last_type, type, 4);
            r->entries++;
        }
    }
    if (s == NNAR_OK)
        s = nnar_write_record(&p->sink, type, head.flags, head.stored, head.descriptor_length, segs, nref, head.body_crc,
                              head.body_length, i == 0 ? preamble : NULL);
    for (j = 0; segs && j < nref; j++) nnar_free(ctx, (void *)segs[j].data);
    nnar_free(ctx, segs);
    nnar_free(ctx, lengths);
    nnar_free(ctx, refs);
    mp_free(ctx, &head.doc);
    mp_free(ctx, &doc);
    nnar_free(ctx, stored);
    nnar_free(ctx, plain);
    nnar_free(ctx, form);
    return s;
}

static void result_free(nnar_ctx *ctx, result_state *r)
{
    while (r->arena) {
        chunk *next = r->arena->next;
        nnar_free(ctx, r->arena);
        r->arena = next;
    }
    nnar_free(ctx, r->index.p);
    nnar_free(ctx, r->last_tens);
    nnar_nameset_free(ctx, &r->names);
    nnar_nameset_free(ctx, &r->paths);
}

static nnar_status apply_content(patcher *p, const char *base_path, const void *base_data, size_t base_size,
                                 const nnar_options *options, nnar_patch_info *info)
{
    nnar_ctx *ctx = &p->ctx;
    uint8_t found[32], preamble[16], content[32], trailer[32], *stored = NULL;
    /* the greater of result_minor and 4 (patch.md §6 step 3: the index carries a content digest),
     * not this reader's minor */
    uint16_t minor = p->h.result_minor > NNAR_CONTENT_PATCH_MINOR ? p->h.result_minor : NNAR_CONTENT_PATCH_MINOR;
    result_state r;
    uint32_t i, zflag = 0, crc;
    uint64_t index_offset, body_length;
    size_t stored_size = 0;
    nnar_status s;
    nnar_payload extra;
    int end;
    /* step 2 */
    s = base_path ? nnar_open_file(base_path, options, &p->base, p->err)
                  : nnar_open_memory(base_data, base_size, options, &p->base, p->err);
    NNAR_TRY(s);
    NNAR_TRY(nnar_patch_base_failed(p, nnar_archive_content(p->base, found)));
    if (memcmp(found, p->h.base_content, 32) != 0) {
        nnar_set_where(ctx, "patch");
        return nnar_fail(ctx, NNAR_WRONG_BASE, "this patch applies to the archive with content digest %02x%02x%02x%02x...; the "
                         "base given has %02x%02x%02x%02x... (check with `nnar verify --json`)", p->h.base_content[0],
                         p->h.base_content[1], p->h.base_content[2], p->h.base_content[3], found[0], found[1], found[2], found[3]);
    }
    p->n_base = nnar_archive_records(p->base) + 1;
    ctx->strict = p->h.result_minor <= NNAR_FORMAT_MINOR;   /* the result's descriptors, by its minor (§10) */
    /* step 3 */
    nnar_preamble(preamble, minor);
    NNAR_TRY(nnar_sink_put(&p->sink, preamble, 16));
    memset(&r, 0, sizeof r);
    nnar_sha256_init(&r.content, ctx->cpu);
    nnar_nameset_init(&r.names);
    nnar_nameset_init(&r.paths);
    s = nnar_mp_head(ctx, &r.index, MP_MAP, 2);
    if (s == NNAR_OK) s = nnar_mp_bytes(ctx, &r.index, MP_STR, "records", 7);
    if (s == NNAR_OK) s = nnar_mp_head(ctx, &r.index, MP_ARRAY, p->h.nops - 1);
    /* steps 4-6, record by record */
    for (i = 0; i < p->h.nops && s == NNAR_OK; i++) s = content_record(p, &r, i, preamble);
    /* step 7 */
    nnar_sha256_final(&r.content, content);
    nnar_set_where(ctx, "result index");
    if (s == NNAR_OK) s = nnar_mp_bytes(ctx, &r.index, MP_STR, "content", 7);
    if (s == NNAR_OK) s = nnar_mp_bytes(ctx, &r.index, MP_BIN, content, 32);
    if (s == NNAR_OK) s = nnar_store_descriptor(ctx, r.index.p, r.index.len, &stored, &stored_size, &zflag);
    if (s == NNAR_OK) {
        static const uint8_t indx[4] = {'I', 'N', 'D', 'X'};
        index_offset = p->sink.pos;
        nnar_body_layout(ctx->cpu, 0, NULL, 0, &crc, &body_length);
        s = nnar_write_record(&p->sink, indx, NNAR_FLAG_MUST_UNDERSTAND | zflag, stored ? stored : r.index.p,
                              (uint32_t)stored_size, NULL, 0, crc, body_length, NULL);
        nnar_trailer(trailer, index_offset, p->sink.pos + NNAR_TRAILER_SIZE);
        if (s == NNAR_OK) s = nnar_sink_put(&p->sink, trailer, 32);
    }
    nnar_free(ctx, stored);
    result_free(ctx, &r);
    NNAR_TRY(s);
    /* step 8 */
    NNAR_TRY(nnar_instream_next(p->in, &extra, &end));
    nnar_set_where(ctx, "patch");
    if (!end) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "patch: it holds more tensors than its records use");
    /* step 9 */
    if (memcmp(content, p->h.result_content, 32) != 0)
        return nnar_fail(ctx, NNAR_DIGEST, "result: expected content digest %02x%02x%02x%02x..., built %02x%02x%02x%02x...",
                         p->h.result_content[0], p->h.result_content[1], p->h.result_content[2], p->h.result_content[3],
                         content[0], content[1], content[2], content[3]);
    if (info) memcpy(info->result_content, content, 32);
    return NNAR_OK;
}

/* ---- the API ---------------------------------------------------------------------------------- */

nnar_status nnar_patch_stream(const char *base_path, const void *base_data, size_t base_size, nnar_read_fn read,
                              void *read_user, nnar_write_fn write, void *write_user, const nnar_options *options,
                              nnar_patch_info *info, nnar_error *err)
{
    patcher p;
    const nnar_head *ptch = NULL;
    uint16_t minor = 0;
    nnar_status s;
    memset(&p, 0, sizeof p);
    nnar_ctx_init(&p.ctx, options, err);
    p.err = err;
    p.sink.ctx = &p.ctx;
    p.sink.write = write;
    p.sink.user = write_user;
    nnar_sha256_init(&p.sink.sha, p.ctx.cpu);
    if (info) memset(info, 0, sizeof *info);
    s = nnar_instream_open(options, err, read, read_user, &p.in, &ptch, &minor);
    if (s == NNAR_OK) {
        p.ctx.strict = minor <= NNAR_FORMAT_MINOR;
        s = nnar_patch_header(&p.ctx, &ptch->doc, minor, &p.h);
    }
    if (s == NNAR_OK) s = p.h.content ? apply_content(&p, base_path, base_data, base_size, options, info)
                                      : nnar_patch_bytes(&p, base_path, base_data, base_size, options);
    if (s == NNAR_OK && info) {
        info->content = p.h.content;
        info->result_minor = p.h.result_minor;
        info->result_length = p.sink.pos;
        info->records = p.h.nops ? p.h.nops - 1 : 0;
    }
    nnar_patch_header_free(&p.ctx, &p.h);
    nnar_instream_close(p.in);
    nnar_close(p.base);
    nnar_ctx_free(&p.ctx);
    if (s == NNAR_OK && err) { err->status = NNAR_OK; err->message[0] = 0; }
    return s;
}

typedef struct file_out { nnar_ctx *ctx; void *file; } file_out;

static int write_file(void *user, const void *buf, size_t size)
{
    file_out *f = (file_out *)user;
    return nnar_io_write(f->ctx, f->file, buf, size) != NNAR_OK;
}

nnar_status nnar_patch_file(const char *base_path, nnar_read_fn read, void *read_user, const char *out_path, int force,
                            const nnar_options *options, nnar_patch_info *info, nnar_error *err)
{
    nnar_ctx ctx;
    char tmp[4096 + 64];
    file_out out;
    nnar_status s;
    nnar_ctx_init(&ctx, options, err);
    nnar_set_where(&ctx, "output '%.200s'", out_path);
    if (nnar_io_kind(out_path) && nnar_io_same_file(base_path, out_path))
        return nnar_fail(&ctx, NNAR_INVALID_ARGUMENT, "the output is the base: expected a different file, the base is never "
                         "overwritten");
    if (nnar_io_kind(out_path) == 2) return nnar_fail(&ctx, NNAR_INVALID_ARGUMENT, "expected a file name, found a directory");
    if (nnar_io_kind(out_path) && !force)
        return nnar_fail(&ctx, NNAR_OUTPUT_EXISTS, "it exists: expected a new file name, or force to replace it");
    NNAR_TRY(nnar_io_create_temp(&ctx, out_path, &out.file, tmp, sizeof tmp));
    out.ctx = &ctx;
    s = nnar_patch_stream(base_path, NULL, 0, read, read_user, write_file, &out, options, info, err);
    if (s != NNAR_OK) {
        nnar_error keep;
        if (err) keep = *err;
        nnar_io_discard(out.file, tmp);
        if (err) *err = keep;
        return s;
    }
    s = nnar_io_commit(&ctx, out.file, tmp, out_path, force);
    nnar_ctx_free(&ctx);
    return s;
}
