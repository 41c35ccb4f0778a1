/* In order, from a stream (FORMAT.md §8.1): one record in memory at a time (the last TENS
 * record's array stays until the next record, for the aliases that follow it). */
#include "internal.h"

typedef struct seen_entry {
    uint8_t type[4];
    uint64_t offset, length;
    uint32_t first_name, name_count;
} seen_entry;

typedef struct stream_state {
    nnar_ctx ctx;
    nnar_source src;
    nnar_sha256 content;
    seen_entry *seen;
    size_t seen_count, seen_cap;
    nnar_alias *names;              /* every tensor name so far (.name; descriptors are kept for them) */
    size_t name_count, name_cap;
    nnar_nameset nameset;
    nnar_head *kept;                /* heads whose names are referenced */
    size_t kept_count, kept_cap;
    uint64_t total_bytes;
    nnar_nameset paths;             /* FILE paths so far */
    nnar_record last;               /* the last TENS record (for ALIS) */
    uint8_t *last_array;
    int have_last;
} stream_state;

static int grow(nnar_ctx *ctx, void **p, size_t *cap, size_t need, size_t item)
{
    void *np;
    size_t ncap;
    if (need <= *cap) return 1;
    ncap = *cap ? *cap * 2 : 16;
    while (ncap < need) ncap *= 2;
    np = nnar_alloc(ctx, ncap * item);
    if (!np) return 0;
    if (*p) memcpy(np, *p, *cap * item);
    nnar_free(ctx, *p);
    *p = np;
    *cap = ncap;
    return 1;
}

static nnar_status add_seen(stream_state *st, const nnar_head *h, uint32_t first, uint32_t count)
{
    seen_entry *e;
    if (!grow(&st->ctx, (void **)&st->seen, &st->seen_cap, st->seen_count + 1, sizeof *st->seen)) return NNAR_OUT_OF_MEMORY;
    e = &st->seen[st->seen_count++];
    memcpy(e->type, h->type, 4);
    e->offset = h->offset;
    e->length = NNAR_HEAD_END(h) - h->offset;
    e->first_name = first;
    e->name_count = count;
    return NNAR_OK;
}

static nnar_status add_name(stream_state *st, const uint8_t *p, uint32_t n)
{
    int added;
    if (!grow(&st->ctx, (void **)&st->names, &st->name_cap, st->name_count + 1, sizeof *st->names)) return NNAR_OUT_OF_MEMORY;
    added = nnar_nameset_add(&st->ctx, &st->nameset, p, n);
    if (added < 0) return NNAR_OUT_OF_MEMORY;
    if (!added) return nnar_fail(&st->ctx, NNAR_BAD_LAYOUT, "duplicate tensor name '%.*s'", (int)n, (const char *)p);
    st->names[st->name_count].name = p;
    st->names[st->name_count].name_len = n;
    st->name_count++;
    return NNAR_OK;
}

/* keep a head alive (its names are referenced by the name set) */
static nnar_status keep(stream_state *st, nnar_head *h)
{
    if (!grow(&st->ctx, (void **)&st->kept, &st->kept_cap, st->kept_count + 1, sizeof *st->kept)) return NNAR_OUT_OF_MEMORY;
    st->kept[st->kept_count++] = *h;
    memset(h, 0, sizeof *h);
    return NNAR_OK;
}

static nnar_status body_of(stream_state *st, const nnar_head *h, const uint8_t **body, uint8_t **owned)
{
    uint32_t crc;
    NNAR_TRY(nnar_read_bytes(&st->ctx, &st->src, NNAR_BODY_OFFSET(h), h->body_length, body, owned, "record body"));
    crc = nnar_crc32_cpu(st->ctx.cpu, 0, *body, (size_t)h->body_length);
    if (NNAR_CRC_DIFFERS(crc, h->body_crc)) {
        nnar_free(&st->ctx, *owned);
        *owned = NULL;
        return nnar_fail(&st->ctx, NNAR_CHECKSUM, "record body: expected CRC-32 0x%08x, computed 0x%08x", h->body_crc, crc);
    }
    return NNAR_OK;
}

static void member_info(const nnar_record *rec, uint32_t k, nnar_tensor_info *info)
{
    const nnar_member *m = &rec->members[k];
    uint64_t stored = 0;
    uint32_t j;
    memset(info, 0, sizeof *info);
    info->name.data = (const char *)m->name;
    info->name.size = m->name_len;
    info->dtype_name.data = (const char *)rec->dtype_name;
    info->dtype_name.size = rec->dtype_len;
    info->dtype = rec->dtype;
    info->rank = m->rank;
    info->shape = m->shape;
    info->nbytes = m->size * nnar_dtype_size(rec->dtype);
    for (j = 0; j < rec->segment_count; j++) stored += rec->segments[j].length;
    info->stored_bytes = rec->member_count == 1 ? stored : 0;
    info->group = rec->member_count;
    info->fidelity_count = rec->fidelity == MP_NONE ? 0 : rec->head.doc.nodes[rec->fidelity].len;
    info->digest = rec->digest;
}

static void drop_last(stream_state *st)
{
    if (st->have_last) {
        /* the record's head is kept (its names are in the name set); free the rest */
        nnar_free(&st->ctx, st->last.members);
        nnar_free(&st->ctx, st->last.shapes);
        nnar_free(&st->ctx, st->last.segments);
        memset(&st->last, 0, sizeof st->last);
        nnar_free(&st->ctx, st->last_array);
        st->last_array = NULL;
        st->have_last = 0;
    }
}

static nnar_status tensor_record(stream_state *st, nnar_head *h, const nnar_stream_visitor *v, int decode)
{
    nnar_ctx *ctx = &st->ctx;
    nnar_record *rec = &st->last;
    const uint8_t *body;
    uint8_t *owned = NULL, d[32];
    uint32_t k, first = (uint32_t)st->name_count;
    uint64_t itemsize, nbytes;
    nnar_status s;
    drop_last(st);
    memset(rec, 0, sizeof *rec);
    /* the kept head owns the descriptor (the name set points into it); rec->head is a view */
    NNAR_TRY(keep(st, h));
    rec->head = st->kept[st->kept_count - 1];
    st->have_last = 1;
    NNAR_TRY(nnar_parse_tensor(ctx, rec));
    NNAR_TRY(nnar_check_limit(ctx, "tensors", (uint64_t)st->name_count + rec->member_count, ctx->limits.max_tensors, "max_tensors"));
    if (rec->dtype == NNAR_DTYPE_UNKNOWN)
        return nnar_fail(ctx, NNAR_UNSUPPORTED_DTYPE, "unsupported dtype: expected a dtype of FORMAT.md 5.2.2, found '%.*s' "
                         "(a newer nnar wrote it)", (int)rec->dtype_len, (const char *)rec->dtype_name);
    itemsize = nnar_dtype_size(rec->dtype);
    nbytes = rec->array_size * itemsize;
    st->total_bytes += nbytes;
    NNAR_TRY(nnar_check_limit(ctx, "decoded bytes of the archive", st->total_bytes, ctx->limits.max_total_bytes, "max_total_bytes"));
    for (k = 0; k < rec->member_count; k++) NNAR_TRY(add_name(st, rec->members[k].name, rec->members[k].name_len));
    NNAR_TRY(body_of(st, &rec->head, &body, &owned));
    s = nnar_check_padding(ctx, rec, body);
    if (!decode) {
        nnar_free(ctx, owned);
        return s;
    }
    if (s == NNAR_OK) {
        st->last_array = (uint8_t *)nnar_alloc(ctx, (size_t)nbytes);
        if (!st->last_array) s = NNAR_OUT_OF_MEMORY;
    }
    if (s == NNAR_OK) s = nnar_decode_record(ctx, rec, body, st->last_array);
    nnar_free(ctx, owned);
    NNAR_TRY(s);
    if (v && v->check_digests) {
        nnar_sha256 sha;
        nnar_sha256_init(&sha, ctx->cpu);
        nnar_sha256_update(&sha, st->last_array, (size_t)nbytes);
        nnar_sha256_final(&sha, d);
        if (memcmp(d, rec->digest, 32) != 0)
            return nnar_fail(ctx, NNAR_DIGEST, "decoded array: expected the SHA-256 of its descriptor's digest, computed another");
    }
    NNAR_TRY(add_seen(st, &rec->head, first, rec->member_count));
    nnar_record_digest(&rec->head, NULL, d);
    nnar_sha256_update(&st->content, d, 32);
    if (v && v->tensor)
        for (k = 0; k < rec->member_count; k++) {
            nnar_tensor_info info;
            member_info(rec, k, &info);
            if (v->tensor(v->user, &info, st->last_array + rec->members[k].start * itemsize))
                return nnar_fail(ctx, NNAR_STOPPED, "stopped by the tensor callback");
        }
    return NNAR_OK;
}

static nnar_status alias_record(stream_state *st, nnar_head *h, const nnar_stream_visitor *v)
{
    nnar_ctx *ctx = &st->ctx;
    nnar_alias *pairs;
    uint32_t n, j, k;
    nnar_status s;
    uint8_t d[32];
    const seen_entry *prev = st->seen_count ? &st->seen[st->seen_count - 1] : NULL;
    int prev_tens = prev && memcmp(prev->type, "TENS", 4) == 0 && st->have_last;
    NNAR_TRY(nnar_parse_aliases(ctx, h, &pairs, &n));
    s = nnar_check_limit(ctx, "tensors", (uint64_t)st->name_count + n, ctx->limits.max_tensors, "max_tensors");
    for (j = 0; j < n && s == NNAR_OK; j++) {
        int member = -1;
        if (prev_tens)
            for (k = 0; k < st->last.member_count && member < 0; k++)
                if (st->last.members[k].name_len == pairs[j].target_len &&
                    memcmp(st->last.members[k].name, pairs[j].target, pairs[j].target_len) == 0)
                    member = (int)k;
        if (member < 0) {
            s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "alias '%.*s': its target '%.*s' is not a tensor of the TENS record just before",
                          (int)pairs[j].name_len, (const char *)pairs[j].name, (int)pairs[j].target_len, (const char *)pairs[j].target);
            break;
        }
        s = add_name(st, pairs[j].name, pairs[j].name_len);
        if (s == NNAR_OK && v && v->tensor) {
            nnar_tensor_info info;
            member_info(&st->last, (uint32_t)member, &info);
            info.alias_of = info.name;
            info.name.data = (const char *)pairs[j].name;
            info.name.size = pairs[j].name_len;
            info.stored_bytes = 0;
            if (v->tensor(v->user, &info, st->last_array + st->last.members[member].start * nnar_dtype_size(st->last.dtype)))
                s = nnar_fail(ctx, NNAR_STOPPED, "stopped by the tensor callback");
        }
    }
    nnar_free(ctx, pairs);
    NNAR_TRY(s);
    NNAR_TRY(add_seen(st, h, 0, 0));
    nnar_record_digest(h, NULL, d);
    nnar_sha256_update(&st->content, d, 32);
    return keep(st, h);
}

static nnar_status model_record(stream_state *st, nnar_head *h, const nnar_stream_visitor *v)
{
    nnar_ctx *ctx = &st->ctx;
    nnar_record rec;
    const uint8_t *body;
    uint8_t *owned = NULL, *buf = NULL, structure[32], d[32];
    nnar_status s;
    nnar_sha256 sha;
    if (st->seen_count) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "a MODL record must come first after META");
    memset(&rec, 0, sizeof rec);
    rec.head = *h;
    memset(h, 0, sizeof *h);
    s = nnar_parse_model(ctx, &rec);
    if (s == NNAR_OK) s = body_of(st, &rec.head, &body, &owned);
    if (s == NNAR_OK) s = nnar_check_padding(ctx, &rec, body);
    if (s == NNAR_OK) {
        buf = (uint8_t *)nnar_alloc(ctx, (size_t)rec.length);
        if (!buf) s = NNAR_OUT_OF_MEMORY;
    }
    if (s == NNAR_OK) s = nnar_decode_record(ctx, &rec, body, buf);
    nnar_free(ctx, owned);
    if (s == NNAR_OK) {
        nnar_sha256_init(&sha, ctx->cpu);
        nnar_sha256_update(&sha, buf, (size_t)rec.length);
        nnar_sha256_final(&sha, structure);
        s = add_seen(st, &rec.head, 0, 0);
    }
    if (s == NNAR_OK) {
        nnar_record_digest(&rec.head, structure, d);
        nnar_sha256_update(&st->content, d, 32);
        if (v && v->model) {
            nnar_text f;
            f.data = (const char *)rec.format;
            f.size = rec.format_len;
            if (v->model(v->user, f, buf, (size_t)rec.length)) s = nnar_fail(ctx, NNAR_STOPPED, "stopped by the model callback");
        }
    }
    nnar_free(ctx, buf);
    nnar_record_free(ctx, &rec);
    return s;
}

static nnar_status file_record(stream_state *st, nnar_head *h, const nnar_stream_visitor *v)
{
    nnar_ctx *ctx = &st->ctx;
    nnar_record rec;
    const uint8_t *body;
    uint8_t *owned = NULL, *buf = NULL, d[32];
    nnar_status s;
    int added;
    if (st->seen_count && memcmp(st->seen[st->seen_count - 1].type, "MODL", 4) != 0 &&
        memcmp(st->seen[st->seen_count - 1].type, "FILE", 4) != 0)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "a FILE record must follow META, MODL or another FILE record, found it after "
                         "%.4s", (const char *)st->seen[st->seen_count - 1].type);
    memset(&rec, 0, sizeof rec);
    NNAR_TRY(keep(st, h));   /* the path set points into its descriptor */
    rec.head = st->kept[st->kept_count - 1];
    s = nnar_parse_file(ctx, &rec);
    if (s != NNAR_OK) {   /* the head belongs to kept; its segments, parsed in part, do not */
        nnar_free(ctx, rec.segments);
        return s;
    }
    added = nnar_nameset_add(ctx, &st->paths, rec.path, rec.path_len);
    if (added < 0) s = NNAR_OUT_OF_MEMORY;
    else if (!added) s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "duplicate file path '%.*s'", (int)rec.path_len, (const char *)rec.path);
    else s = nnar_check_limit(ctx, "files", st->paths.count, ctx->limits.max_tensors, "max_tensors");
    if (s == NNAR_OK) s = body_of(st, &rec.head, &body, &owned);
    if (s == NNAR_OK) s = nnar_check_padding(ctx, &rec, body);
    if (s == NNAR_OK) s = add_seen(st, &rec.head, 0, 0);
    if (s == NNAR_OK) {
        nnar_record_digest(&rec.head, NULL, d);
        nnar_sha256_update(&st->content, d, 32);
    }
    if (s == NNAR_OK && v && v->check_digests) {
        nnar_sha256 sha;
        buf = (uint8_t *)nnar_alloc(ctx, (size_t)rec.length);
        if (!buf) s = NNAR_OUT_OF_MEMORY;
        if (s == NNAR_OK) s = nnar_decode_record(ctx, &rec, body, buf);
        if (s == NNAR_OK) {
            nnar_sha256_init(&sha, ctx->cpu);
            nnar_sha256_update(&sha, buf, (size_t)rec.length);
            nnar_sha256_final(&sha, d);
            if (memcmp(d, rec.digest, 32) != 0)
                s = nnar_fail(ctx, NNAR_DIGEST, "decoded file: expected the SHA-256 of its descriptor's digest, computed another");
        }
        if (s == NNAR_OK && v->file) {
            nnar_text p;
            p.data = (const char *)rec.path;
            p.size = rec.path_len;
            if (v->file(v->user, p, buf, (size_t)rec.length)) s = nnar_fail(ctx, NNAR_STOPPED, "stopped by the file callback");
        }
    }
    nnar_free(ctx, buf);
    nnar_free(ctx, owned);
    /* the head belongs to kept; free only what parse_file allocated */
    nnar_free(ctx, rec.segments);
    return s;
}

static nnar_status other_record(stream_state *st, nnar_head *h)
{
    nnar_ctx *ctx = &st->ctx;
    const uint8_t *body;
    uint8_t *owned = NULL, x[32], d[32];
    nnar_sha256 sha;
    if (!memcmp(h->type, "META", 4) || !memcmp(h->type, "INDX", 4) || !memcmp(h->type, "TENS", 4) ||
        !memcmp(h->type, "MODL", 4) || !memcmp(h->type, "ALIS", 4) || !memcmp(h->type, "PTCH", 4) ||
        !memcmp(h->type, "FILE", 4))
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "record '%.4s' is not allowed here", (const char *)h->type);
    if (h->flags & NNAR_FLAG_MUST_UNDERSTAND)
        return nnar_fail(ctx, NNAR_UNSUPPORTED_RECORD, "record type '%.4s' is marked must-understand and this reader does not "
                         "know it (a newer nnar wrote it)", (const char *)h->type);
    NNAR_TRY(body_of(st, h, &body, &owned));
    nnar_sha256_init(&sha, ctx->cpu);
    nnar_sha256_update(&sha, body, (size_t)h->body_length);
    nnar_sha256_final(&sha, x);
    nnar_free(ctx, owned);
    NNAR_TRY(add_seen(st, h, 0, 0));
    nnar_record_digest(h, x, d);
    nnar_sha256_update(&st->content, d, 32);
    return NNAR_OK;
}

static nnar_status finish(stream_state *st, nnar_head *h, uint64_t first_offset, uint8_t content[32])
{
    nnar_ctx *ctx = &st->ctx;
    nnar_index ix;
    nnar_status s;
    uint8_t computed[32];
    const uint8_t *t;
    uint8_t *owned = NULL;
    uint64_t trailer = NNAR_HEAD_END(h), index_offset;
    size_t i;
    int at_end;
    nnar_set_where(ctx, "INDX record at offset %llu", (unsigned long long)h->offset);
    if (h->body_length)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "INDX record: expected an empty body, found %llu bytes",
                         (unsigned long long)h->body_length);
    s = nnar_parse_index(ctx, h, first_offset, &ix);
    if (s == NNAR_OK) {
        int same = ix.count == st->seen_count;
        for (i = 0; same && i < ix.count; i++) {
            const nnar_entry *e = &ix.entries[i];
            const seen_entry *w = &st->seen[i];
            uint32_t k;
            same = !memcmp(e->type, w->type, 4) && e->offset == w->offset && e->length == w->length &&
                   e->name_count == w->name_count;
            for (k = 0; same && k < e->name_count; k++)
                same = ix.name_lens[e->first_name + k] == st->names[w->first_name + k].name_len &&
                       memcmp(ix.names[e->first_name + k], st->names[w->first_name + k].name, ix.name_lens[e->first_name + k]) == 0;
        }
        if (!same) s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "index: it disagrees with the records read before it");
    }
    if (s == NNAR_OK) s = nnar_index_content(ctx, h, &ix);
    nnar_sha256_final(&st->content, computed);
    if (content) memcpy(content, computed, 32);
    if (s == NNAR_OK && ix.content && memcmp(ix.content, computed, 32) != 0)
        s = nnar_fail(ctx, NNAR_DIGEST, "archive content: the index records one content digest, the records give another "
                      "(records of another archive, or a damaged one)");
    nnar_index_free(ctx, &ix);
    NNAR_TRY(s);
    NNAR_TRY(nnar_read_bytes(ctx, &st->src, trailer, NNAR_TRAILER_SIZE, &t, &owned, "trailer"));
    s = nnar_parse_trailer(ctx, t, trailer, &index_offset);
    nnar_free(ctx, owned);
    NNAR_TRY(s);
    if (index_offset != h->offset)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index_offset: expected %llu, found %llu", (unsigned long long)h->offset,
                         (unsigned long long)index_offset);
    NNAR_TRY(nnar_source_at_end(ctx, &st->src, trailer + NNAR_TRAILER_SIZE, &at_end));
    if (!at_end) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "expected the end of the archive after the trailer, found more bytes");
    return NNAR_OK;
}

static nnar_status run(stream_state *st, const nnar_stream_visitor *v, uint8_t content[32])
{
    nnar_ctx *ctx = &st->ctx;
    uint8_t preamble[16], d[32];
    uint16_t minor;
    nnar_head meta, h;
    uint64_t pos;
    nnar_status s;
    NNAR_TRY(nnar_read_preamble(ctx, &st->src, preamble, &minor));
    NNAR_TRY(nnar_read_head(ctx, &st->src, NNAR_PREAMBLE_SIZE, preamble, &meta));
    s = nnar_parse_meta(ctx, &meta);
    if (s == NNAR_OK) {
        nnar_record_digest(&meta, NULL, d);
        nnar_sha256_update(&st->content, d, 32);
    }
    if (s == NNAR_OK && v && v->metadata) {
        const mp_doc *doc = &meta.doc;
        uint32_t md = mp_get(doc, 0, "metadata"), k = md + 1, i;
        for (i = 0; i < doc->nodes[md].len && s == NNAR_OK; i++, k = doc->nodes[doc->nodes[k].end].end) {
            nnar_text key, value;
            key.data = (const char *)doc->nodes[k].v.p;
            key.size = doc->nodes[k].len;
            value.data = (const char *)doc->nodes[doc->nodes[k].end].v.p;
            value.size = doc->nodes[doc->nodes[k].end].len;
            if (v->metadata(v->user, key, value)) s = nnar_fail(ctx, NNAR_STOPPED, "stopped by the metadata callback");
        }
    }
    pos = NNAR_HEAD_END(&meta);
    nnar_head_free(ctx, &meta);
    NNAR_TRY(s);
    {
        uint64_t first = pos;
        for (;;) {
            NNAR_TRY(nnar_read_head(ctx, &st->src, pos, NULL, &h));
            pos = NNAR_HEAD_END(&h);
            if (!memcmp(h.type, "INDX", 4)) {
                s = finish(st, &h, first, content);
                nnar_head_free(ctx, &h);
                return s;
            }
            if (!memcmp(h.type, "TENS", 4)) s = tensor_record(st, &h, v, 1);
            else if (!memcmp(h.type, "ALIS", 4)) s = alias_record(st, &h, v);
            else if (!memcmp(h.type, "MODL", 4)) s = model_record(st, &h, v);
            else if (!memcmp(h.type, "FILE", 4)) s = file_record(st, &h, v);
            else if (!memcmp(h.type, "PTCH", 4))
                s = nnar_fail(ctx, NNAR_UNSUPPORTED_RECORD, "this file is an nnar patch, not a model archive: apply it to its base");
            else s = other_record(st, &h);
            nnar_head_free(ctx, &h);
            NNAR_TRY(s);
        }
    }
}

nnar_status nnar_read_stream(nnar_read_fn read, void *read_user, const nnar_options *options,
                             const nnar_stream_visitor *visitor, uint8_t content[32], nnar_error *err)
{
    stream_state st;
    nnar_status s;
    size_t i;
    memset(&st, 0, sizeof st);
    nnar_ctx_init(&st.ctx, options, err);
    nnar_source_stream(&st.src, read, read_user);
    nnar_sha256_init(&st.content, st.ctx.cpu);
    nnar_nameset_init(&st.nameset);
    nnar_nameset_init(&st.paths);
    s = run(&st, visitor, content);
    drop_last(&st);
    for (i = 0; i < st.kept_count; i++) nnar_head_free(&st.ctx, &st.kept[i]);
    nnar_free(&st.ctx, st.kept);
    nnar_free(&st.ctx, st.seen);
    nnar_free(&st.ctx, st.names);
    nnar_nameset_free(&st.ctx, &st.nameset);
    nnar_nameset_free(&st.ctx, &st.paths);
    nnar_ctx_free(&st.ctx);
    return s;
}

/* ---- a patch, read in order (patch.md §6 steps 1 and 8): its PTCH record, then its payload
 * tensors one at a time, as the applier needs them; then its index and trailer --------------- */

struct nnar_instream {
    stream_state st;
    nnar_head ptch;
    uint64_t pos, first;
    uint32_t member;         /* next member of st.last to hand out */
    int ended;
};

static nnar_status record_then_fail(stream_state *st, nnar_head *h, int *ptch)
{
    nnar_ctx *ctx = &st->ctx;
    nnar_status s;
    *ptch = 0;
    if (!memcmp(h->type, "PTCH", 4)) {
        uint8_t d[32];
        if (st->seen_count) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "a PTCH record must come first after META");
        if (h->body_length)
            return nnar_fail(ctx, NNAR_BAD_LAYOUT, "PTCH record: expected an empty body, found %llu bytes",
                             (unsigned long long)h->body_length);
        NNAR_TRY(add_seen(st, h, 0, 0));
        nnar_record_digest(h, NULL, d);
        nnar_sha256_update(&st->content, d, 32);
        *ptch = 1;
        return NNAR_OK;
    }
    if (!memcmp(h->type, "TENS", 4)) s = tensor_record(st, h, NULL, 0);
    else if (!memcmp(h->type, "ALIS", 4)) s = alias_record(st, h, NULL);
    else if (!memcmp(h->type, "MODL", 4)) s = model_record(st, h, NULL);
    else if (!memcmp(h->type, "FILE", 4)) s = file_record(st, h, NULL);
    else return other_record(st, h);   /* skipped when it may be */
    NNAR_TRY(s);
    return nnar_fail(ctx, NNAR_BAD_LAYOUT, "not a patch: expected a PTCH record first after META, found %.4s",
                     (const char *)h->type);
}

nnar_status nnar_instream_open(const nnar_options *options, nnar_error *err, nnar_read_fn read, void *user,
                               nnar_instream **out, const nnar_head **ptch, uint16_t *minor)
{
    nnar_ctx tmp;
    nnar_instream *in;
    stream_state *st;
    uint8_t preamble[16], d[32];
    nnar_head meta, h;
    nnar_status s;
    int found = 0;
    nnar_ctx_init(&tmp, options, err);
    in = (nnar_instream *)nnar_alloc_zero(&tmp, sizeof *in);
    *out = NULL;
    if (!in) return NNAR_OUT_OF_MEMORY;
    st = &in->st;
    nnar_ctx_init(&st->ctx, options, err);
    nnar_source_stream(&st->src, read, user);
    nnar_sha256_init(&st->content, st->ctx.cpu);
    nnar_nameset_init(&st->nameset);
    nnar_nameset_init(&st->paths);
    *out = in;
    NNAR_TRY(nnar_read_preamble(&st->ctx, &st->src, preamble, minor));
    NNAR_TRY(nnar_read_head(&st->ctx, &st->src, NNAR_PREAMBLE_SIZE, preamble, &meta));
    s = nnar_parse_meta(&st->ctx, &meta);
    if (s == NNAR_OK) {
        nnar_record_digest(&meta, NULL, d);
        nnar_sha256_update(&st->content, d, 32);
    }
    in->pos = in->first = NNAR_HEAD_END(&meta);
    nnar_head_free(&st->ctx, &meta);
    NNAR_TRY(s);
    while (!found) {
        NNAR_TRY(nnar_read_head(&st->ctx, &st->src, in->pos, NULL, &h));
        in->pos = NNAR_HEAD_END(&h);
        if (!memcmp(h.type, "INDX", 4)) {
            s = finish(st, &h, in->first, NULL);
            nnar_head_free(&st->ctx, &h);
            NNAR_TRY(s);
            return nnar_fail(&st->ctx, NNAR_BAD_LAYOUT, "not a patch: expected a PTCH record first after META, found none");
        }
        s = record_then_fail(st, &h, &found);
        if (found) in->ptch = h;
        else nnar_head_free(&st->ctx, &h);
        NNAR_TRY(s);
    }
    *ptch = &in->ptch;
    return NNAR_OK;
}

nnar_status nnar_instream_next(nnar_instream *in, nnar_payload *p, int *end)
{
    stream_state *st = &in->st;
    nnar_ctx *ctx = &st->ctx;
    nnar_stream_visitor v;
    nnar_head h;
    nnar_status s;
    *end = 0;
    memset(&v, 0, sizeof v);
    v.check_digests = 1;
    while (!st->have_last || in->member >= st->last.member_count) {
        if (in->ended) { *end = 1; return NNAR_OK; }
        NNAR_TRY(nnar_read_head(ctx, &st->src, in->pos, NULL, &h));
        in->pos = NNAR_HEAD_END(&h);
        if (!memcmp(h.type, "INDX", 4)) {
            drop_last(st);
            s = finish(st, &h, in->first, NULL);
            nnar_head_free(ctx, &h);
            NNAR_TRY(s);
            in->ended = 1;
            continue;
        }
        if (!memcmp(h.type, "TENS", 4)) {
            s = tensor_record(st, &h, &v, 1);
            nnar_head_free(ctx, &h);
            NNAR_TRY(s);
            in->member = 0;
            continue;
        }
        if (!memcmp(h.type, "PTCH", 4)) {
            int found;
            s = record_then_fail(st, &h, &found);   /* not first: bad-layout */
            nnar_head_free(ctx, &h);
            return s;
        }
        if (!memcmp(h.type, "ALIS", 4)) s = alias_record(st, &h, NULL);
        else if (!memcmp(h.type, "MODL", 4)) s = model_record(st, &h, NULL);
        else if (!memcmp(h.type, "FILE", 4)) s = file_record(st, &h, NULL);
        else { s = other_record(st, &h); nnar_head_free(ctx, &h); NNAR_TRY(s); continue; }
        nnar_head_free(ctx, &h);
        NNAR_TRY(s);
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "patch: expected only TENS records after PTCH, found %.4s", (const char *)h.type);
    }
    {
        const nnar_member *m = &st->last.members[in->member];
        p->dtype = st->last.dtype;
        p->rank = m->rank;
        p->size = m->size;
        p->data = st->last_array + m->start * nnar_dtype_size(st->last.dtype);
        p->nbytes = m->size * nnar_dtype_size(st->last.dtype);
        in->member++;
    }
    return NNAR_OK;
}

nnar_ctx *nnar_instream_ctx(nnar_instream *in) { return &in->st.ctx; }

void nnar_instream_close(nnar_instream *in)
{
    stream_state *st;
    nnar_ctx tmp;
    size_t i;
    if (!in) return;
    st = &in->st;
    drop_last(st);
    nnar_head_free(&st->ctx, &in->ptch);
    for (i = 0; i < st->kept_count; i++) nnar_head_free(&st->ctx, &st->kept[i]);
    nnar_free(&st->ctx, st->kept);
    nnar_free(&st->ctx, st->seen);
    nnar_free(&st->ctx, st->names);
    nnar_nameset_free(&st->ctx, &st->nameset);
    nnar_nameset_free(&st->ctx, &st->paths);
    nnar_ctx_free(&st->ctx);
    tmp = st->ctx;
    tmp.zstd = NULL;
    tmp.zstd_c = NULL;
    nnar_free(&tmp, in);
}
