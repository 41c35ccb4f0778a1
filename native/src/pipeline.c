/* Decoding a record's array through its pipeline (FORMAT.md §6.1), checked in the order of
 * §11.1 "Pipeline" and "Segment chain": every stage resolved, kinds, specs, stream names and
 * lengths, every segment's chain and its step bounds, all before anything is decoded. */
#include <stdio.h>

#include "codecs/codecs.h"

static const char *const stage_keys[] = {"codec", "config", "params", NULL};

/* Pipeline step 2 (a)-(e) for one stage map. */
static nnar_status build_stage(nnar_ctx *ctx, const mp_doc *doc, uint32_t node, nnar_stage *st, nnar_stage *inner)
{
    const mp_node *n = &doc->nodes[node];
    uint32_t codec, params, k, i;
    memset(st, 0, sizeof *st);
    if (n->type != MP_MAP || mp_get(doc, node, "codec") == MP_NONE || mp_get(doc, node, "config") == MP_NONE ||
        mp_get(doc, node, "params") == MP_NONE)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "stage: expected a map with keys codec, config, params");
    if (ctx->strict)
        for (k = node + 1, i = 0; i < n->len; i++, k = doc->nodes[doc->nodes[k].end].end) {
            const mp_node *key = &doc->nodes[k];
            if (!mp_str_eq(key, stage_keys[0]) && !mp_str_eq(key, stage_keys[1]) && !mp_str_eq(key, stage_keys[2]))
                return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "stage: unexpected key '%.*s'", (int)(key->len > 40 ? 40 : key->len),
                                 (const char *)key->v.p);
        }
    params = mp_get(doc, node, "params");
    if (doc->nodes[params].type != MP_MAP) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "stage params: expected a map");
    codec = mp_get(doc, node, "codec");
    st->codec = nnar_codec_find(&doc->nodes[codec]);
    if (!st->codec) {
        const mp_node *c = &doc->nodes[codec];
        return nnar_fail(ctx, NNAR_UNSUPPORTED_CODEC, "unsupported codec: expected a registered id, found '%.*s' (a newer "
                         "nnar wrote it)", c->type == MP_STR ? (int)(c->len > 60 ? 60 : c->len) : 1,
                         c->type == MP_STR ? (const char *)c->v.p : "?");
    }
    st->doc = doc;
    st->config = mp_get(doc, node, "config");
    st->params = params;
    st->strict = ctx->strict;
    st->inner = inner;
    if (doc->nodes[st->config].type != MP_MAP)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: expected a config map, found another type", st->codec->id);
    NNAR_TRY(st->codec->config(ctx, st));
    if (st->codec != &nnar_codec_sparse && st->codec != &nnar_codec_chunked) st->inner = NULL;
    if (ctx->strict && nnar_unknown_params(st, params))
        return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: params it does not define", st->codec->id);
    return NNAR_OK;
}

static const char *kind_name(int k)
{
    return k == NNAR_ARRAY_ARRAY ? "array-array" : k == NNAR_ARRAY_BYTES ? "array-bytes" : "bytes-bytes";
}

typedef struct seg_state {
    nnar_stage *chain;      /* its codecs' stages */
    uint32_t chain_len;
    uint64_t bounds[16];
    const uint8_t *data;    /* the decoded stream */
    uint8_t *owned;
    int req;                /* index into the array->bytes stage's streams */
} seg_state;

int nnar_record_is_raw(const nnar_record *rec)
{
    const mp_doc *doc = &rec->head.doc;
    const mp_node *pn = &doc->nodes[rec->pipeline];
    uint32_t codec;
    if (rec->segment_count != 1 || doc->nodes[rec->segments[0].codecs].len != 0 || pn->type != MP_ARRAY || pn->len != 1 ||
        rec->dtype == NNAR_DTYPE_UNKNOWN || rec->segments[0].length != rec->array_size * nnar_dtype_size(rec->dtype))
        return 0;
    codec = mp_get(doc, rec->pipeline + 1, "codec");
    return codec != MP_NONE && mp_str_eq(&doc->nodes[codec], "nnar.raw");
}

nnar_status nnar_decode_record(nnar_ctx *ctx, const nnar_record *rec, const uint8_t *body, uint8_t *out)
{
    const uint8_t *one[1] = {NULL}, **segs = one;
    uint64_t base = NNAR_BODY_OFFSET(&rec->head);
    uint32_t j;
    nnar_status s;
    if (rec->segment_count > 1) {
        segs = (const uint8_t **)nnar_alloc(ctx, rec->segment_count * sizeof *segs);
        if (!segs) return NNAR_OUT_OF_MEMORY;
    }
    for (j = 0; j < rec->segment_count; j++) segs[j] = body + (rec->segments[j].offset - base);
    s = nnar_decode_segments(ctx, rec, segs, out);
    if (segs != one) nnar_free(ctx, (void *)segs);
    return s;
}

nnar_status nnar_decode_segments(nnar_ctx *ctx, const nnar_record *rec, const uint8_t *const *segments, uint8_t *out)
{
    const mp_doc *doc = &rec->head.doc;
    const mp_node *pn = &doc->nodes[rec->pipeline];
    uint32_t nstages, i, k, j, nreq = 0, nseg = rec->segment_count;
    nnar_stage *stages = NULL, *chains = NULL;
    nnar_spec specs[17];
    nnar_stream_req req[NNAR_MAX_STREAMS];
    nnar_stream streams[NNAR_MAX_STREAMS];
    seg_state *segs = NULL;
    uint8_t *tmp[2] = {NULL, NULL};
    nnar_status s = NNAR_OK;
    uint64_t limit = ctx->limits.max_tensor_bytes;

    if (pn->type != MP_ARRAY || pn->len == 0)
        return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "pipeline: expected a non-empty list of stages");
    NNAR_TRY(nnar_check_limit(ctx, "pipeline stages", pn->len, ctx->limits.max_stages, "max_stages"));
    nstages = pn->len;
    stages = (nnar_stage *)nnar_alloc_zero(ctx, 2 * (size_t)nstages * sizeof *stages);
    segs = (seg_state *)nnar_alloc_zero(ctx, ((size_t)nseg + 1) * sizeof *segs);
    if (!stages || !segs) { s = NNAR_OUT_OF_MEMORY; goto done; }
    for (i = 0, k = rec->pipeline + 1; i < nstages; i++, k = doc->nodes[k].end)
        if ((s = build_stage(ctx, doc, k, &stages[i], &stages[nstages + i])) != NNAR_OK) goto done;
    for (i = 0; i < nstages; i++) {
        int want = i + 1 < nstages ? NNAR_ARRAY_ARRAY : NNAR_ARRAY_BYTES;
        if (stages[i].codec->kind != want) {
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "pipeline: expected array-array stages then one array-bytes stage, "
                          "found %s (%s) as stage %u", stages[i].codec->id, kind_name(stages[i].codec->kind), (unsigned)i);
            goto done;
        }
    }
    specs[0].dtype = rec->dtype;
    specs[0].size = rec->array_size;
    for (i = 0; i + 1 < nstages; i++) {
        if ((s = stages[i].codec->out_spec(ctx, &stages[i], specs[i], &specs[i + 1])) != NNAR_OK) goto done;
        if ((s = nnar_check_limit(ctx, "intermediate array bytes", specs[i + 1].size * nnar_dtype_size(specs[i + 1].dtype),
                                  limit, "max_tensor_bytes")) != NNAR_OK)
            goto done;
    }
    {
        const nnar_stage *ab = &stages[nstages - 1];
        nnar_spec sp = specs[nstages - 1];
        if ((s = ab->codec->names(ctx, ab, sp, req, &nreq)) != NNAR_OK) goto done;
        if (nreq != nseg) goto names_differ;
        for (j = 0; j < nseg; j++) {
            const nnar_segment *g = &rec->segments[j];
            segs[j].req = -1;
            for (k = 0; k < nreq; k++)
                if (strlen(req[k].name) == g->name_len && memcmp(req[k].name, g->name, g->name_len) == 0) segs[j].req = (int)k;
            if (segs[j].req < 0) goto names_differ;
        }
        if ((s = ab->codec->lengths(ctx, ab, sp, req)) != NNAR_OK) goto done;
        for (k = 0; k < 2; k++)   /* exact lengths first, then bounds */
            for (j = 0; j < nseg; j++) {
                const nnar_stream_req *r = &req[segs[j].req];
                const nnar_segment *g = &rec->segments[j];
                if (r->exact != (int)(k == 0)) continue;
                if (r->exact ? g->raw_length != r->length : g->raw_length > r->length) {
                    s = nnar_fail(ctx, NNAR_CODEC_DATA, "segment '%s': raw_length %llu, expected %s%llu for %s of %s[%llu]",
                                  r->name, (unsigned long long)g->raw_length, r->exact ? "" : "at most ",
                                  (unsigned long long)r->length, ab->codec->id, nnar_dtype_name(sp.dtype),
                                  (unsigned long long)sp.size);
                    goto done;
                }
            }
    }
    /* Segment chain, for every segment before any is decoded */
    {
        size_t total = 0;
        for (j = 0; j < nseg; j++) total += doc->nodes[rec->segments[j].codecs].len;
        chains = (nnar_stage *)nnar_alloc_zero(ctx, (2 * total + 1) * sizeof *chains);
        if (!chains) { s = NNAR_OUT_OF_MEMORY; goto done; }
        total = 0;
        for (j = 0; j < nseg; j++) {
            const nnar_segment *g = &rec->segments[j];
            const mp_node *cn = &doc->nodes[g->codecs];
            seg_state *ss = &segs[j];
            if (cn->type != MP_ARRAY) { s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment codecs: expected a list"); goto done; }
            if ((s = nnar_check_limit(ctx, "codecs of a segment", cn->len, ctx->limits.max_stages, "max_stages")) != NNAR_OK) goto done;
            ss->chain = chains + 2 * total;
            ss->chain_len = cn->len;
            total += cn->len;
            for (i = 0, k = g->codecs + 1; i < cn->len; i++, k = doc->nodes[k].end)
                if ((s = build_stage(ctx, doc, k, &ss->chain[i], &ss->chain[cn->len + i])) != NNAR_OK) goto done;
            for (i = 0; i < cn->len; i++)
                if (ss->chain[i].codec->kind != NNAR_BYTES_BYTES) {
                    s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment '%.*s': expected bytes-bytes codecs, found %s (%s)",
                                  (int)g->name_len, (const char *)g->name, ss->chain[i].codec->id,
                                  kind_name(ss->chain[i].codec->kind));
                    goto done;
                }
            ss->bounds[0] = g->raw_length;
            for (i = 0; i + 1 < cn->len; i++) {
                uint64_t b = ss->chain[i].codec->bound(&ss->chain[i], ss->bounds[i]);
                ss->bounds[i + 1] = b < limit ? b : limit;
            }
        }
    }
    /* decode each segment through its chain, in the descriptor's order */
    for (j = 0; j < nseg; j++) {
        const nnar_segment *g = &rec->segments[j];
        seg_state *ss = &segs[j];
        const uint8_t *data = segments[j];
        size_t size = (size_t)g->length;
        uint8_t *owned = NULL;
        for (i = ss->chain_len; i-- > 0;) {
            uint8_t *o = NULL;
            size_t osz = 0;
            s = ss->chain[i].codec->bb_decode(ctx, &ss->chain[i], data, size, ss->bounds[i], &o, &osz);
            nnar_free(ctx, owned);
            if (s != NNAR_OK) goto done;
            owned = o;
            data = o;
            size = osz;
        }
        ss->owned = owned;
        ss->data = data;
        if (size != g->raw_length) {
            s = nnar_fail(ctx, NNAR_CODEC_DATA, "segment '%.*s': expected %llu decoded bytes, found %zu", (int)g->name_len,
                          (const char *)g->name, (unsigned long long)g->raw_length, size);
            goto done;
        }
        streams[ss->req].data = data;
        streams[ss->req].size = size;
    }
    /* the array->bytes stage, then the array->array stages backwards */
    {
        uint8_t *dst = out;
        if (nstages > 1) {
            tmp[0] = (uint8_t *)nnar_alloc(ctx, (size_t)(specs[nstages - 1].size * nnar_dtype_size(specs[nstages - 1].dtype)));
            if (!tmp[0]) { s = NNAR_OUT_OF_MEMORY; goto done; }
            dst = tmp[0];
        }
        if ((s = stages[nstages - 1].codec->ab_decode(ctx, &stages[nstages - 1], specs[nstages - 1], streams, dst)) != NNAR_OK)
            goto done;
        for (i = nstages - 1; i-- > 0;) {
            uint8_t *to = out;
            if (i > 0) {
                to = (uint8_t *)nnar_alloc(ctx, (size_t)(specs[i].size * nnar_dtype_size(specs[i].dtype)));
                if (!to) { s = NNAR_OUT_OF_MEMORY; goto done; }
            }
            s = stages[i].codec->aa_decode(ctx, &stages[i], specs[i], dst, to);
            nnar_free(ctx, tmp[0]);
            tmp[0] = i > 0 ? to : NULL;
            dst = to;
            if (s != NNAR_OK) goto done;
        }
    }
    goto done;
names_differ:
    {
        char found[200], needed[200];
        size_t a = 0, b = 0;
        found[0] = needed[0] = 0;
        for (k = 0; k < nreq && b + 44 < sizeof needed; k++) b += (size_t)sprintf(needed + b, "%s%s", k ? "," : "", req[k].name);
        for (j = 0; j < nseg && a + 44 < sizeof found; j++)
            a += (size_t)sprintf(found + a, "%s%.*s", j ? "," : "", (int)(rec->segments[j].name_len > 40 ? 40 : rec->segments[j].name_len), (const char *)rec->segments[j].name);
        s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segments: expected streams [%s] for %s, found [%s]", needed,
                      stages[nstages - 1].codec->id, found);
    }
done:
    nnar_free(ctx, tmp[0]);
    if (segs)
        for (j = 0; j < nseg; j++) nnar_free(ctx, segs[j].owned);
    nnar_free(ctx, segs);
    nnar_free(ctx, chains);
    nnar_free(ctx, stages);
    return s;
}

/* The end of a codec chain: its output in *out, a copy of the input if no stage ran (the caller
 * owns *out either way); on failure, whatever a stage produced is freed. */
static nnar_status chain_result(nnar_ctx *ctx, nnar_status s, uint8_t *owned, const uint8_t *data, size_t size,
                                uint8_t **out)
{
    if (s == NNAR_OK && !owned) {
        owned = (uint8_t *)nnar_alloc(ctx, size);
        if (!owned) s = NNAR_OUT_OF_MEMORY;
        else if (size) memcpy(owned, data, size);
    }
    if (s != NNAR_OK) { nnar_free(ctx, owned); return s; }
    *out = owned;
    return NNAR_OK;
}

/* One segment's stream (§6.1 step 4 for a single segment): its codecs checked and bounded,
 * then decoded to exactly raw_length bytes. *out is allocated here (a copy for a verbatim
 * segment). A patch's delta reads its partner's stream this way (patch.md §5). */
nnar_status nnar_decode_chain(nnar_ctx *ctx, const mp_doc *doc, uint32_t codecs, uint64_t raw_length, const uint8_t *in,
                              size_t in_size, uint8_t **out)
{
    const mp_node *cn = &doc->nodes[codecs];
    nnar_stage *chain;
    uint64_t bounds[16];
    const uint8_t *data = in;
    size_t size = in_size;
    uint8_t *owned = NULL;
    uint32_t i, k;
    nnar_status s = NNAR_OK;
    *out = NULL;
    if (cn->type != MP_ARRAY) return nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment codecs: expected a list");
    NNAR_TRY(nnar_check_limit(ctx, "codecs of a segment", cn->len, ctx->limits.max_stages, "max_stages"));
    chain = (nnar_stage *)nnar_alloc_zero(ctx, (2 * (size_t)cn->len + 1) * sizeof *chain);
    if (!chain) return NNAR_OUT_OF_MEMORY;
    for (i = 0, k = codecs + 1; i < cn->len && s == NNAR_OK; i++, k = doc->nodes[k].end)
        s = build_stage(ctx, doc, k, &chain[i], &chain[cn->len + i]);
    for (i = 0; i < cn->len && s == NNAR_OK; i++)
        if (chain[i].codec->kind != NNAR_BYTES_BYTES)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment: expected bytes-bytes codecs, found %s (%s)", chain[i].codec->id,
                          kind_name(chain[i].codec->kind));
    if (s == NNAR_OK) {
        bounds[0] = raw_length;
        for (i = 0; i + 1 < cn->len; i++) {
            uint64_t b = chain[i].codec->bound(&chain[i], bounds[i]);
            bounds[i + 1] = b < ctx->limits.max_tensor_bytes ? b : ctx->limits.max_tensor_bytes;
        }
    }
    for (i = cn->len; s == NNAR_OK && i-- > 0;) {
        uint8_t *o = NULL;
        size_t osz = 0;
        s = chain[i].codec->bb_decode(ctx, &chain[i], data, size, bounds[i], &o, &osz);
        nnar_free(ctx, owned);
        owned = o;
        data = o;
        size = osz;
    }
    nnar_free(ctx, chain);
    if (s == NNAR_OK && size != raw_length)
        s = nnar_fail(ctx, NNAR_CODEC_DATA, "segment: expected %llu decoded bytes, found %zu", (unsigned long long)raw_length, size);
    return chain_result(ctx, s, owned, data, size, out);
}

/* Encode a stream with a segment's codecs, in order, each with its config (patch.md §5): each
 * stage resolved as for decoding, then run. *out is allocated here (a copy for no codecs). */
nnar_status nnar_encode_chain(nnar_ctx *ctx, const mp_doc *doc, uint32_t codecs, const uint8_t *in, size_t in_size,
                              uint8_t **out, size_t *out_size)
{
    const mp_node *cn = &doc->nodes[codecs];
    nnar_stage stage, inner;
    const uint8_t *data = in;
    size_t size = in_size;
    uint8_t *owned = NULL;
    uint32_t i, k;
    nnar_status s = NNAR_OK;
    *out = NULL;
    *out_size = 0;
    for (i = 0, k = codecs + 1; i < cn->len && s == NNAR_OK; i++, k = doc->nodes[k].end) {
        uint8_t *o = NULL;
        size_t osz = 0;
        s = build_stage(ctx, doc, k, &stage, &inner);
        if (s == NNAR_OK && stage.codec->kind != NNAR_BYTES_BYTES)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segment: expected bytes-bytes codecs, found %s (%s)", stage.codec->id,
                          kind_name(stage.codec->kind));
        if (s == NNAR_OK) s = stage.codec->bb_encode(ctx, &stage, data, size, &o, &osz);
        nnar_free(ctx, owned);
        owned = o;
        if (s == NNAR_OK) { data = o; size = osz; }
    }
    s = chain_result(ctx, s, owned, data, size, out);
    if (s == NNAR_OK) *out_size = size;
    return s;
}
