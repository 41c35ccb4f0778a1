/* nnar.sparse (spec/codecs/sparse.md): the survivors (elements not all zero bits) through a
 * nested array->bytes stage, their positions as a bitmask or as gap symbols. */
#include <stdio.h>

#include "codecs.h"

static const char *const param_keys[] = {"count", "invert", "values", NULL};
static const char *const required[] = {"positions", "values", NULL};
static const char *const optional[] = {"gap_bits", NULL};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st)
{
    const mp_doc *doc = st->doc;
    uint32_t pos, gb, values, k, i, codec;
    const nnar_codec *inner;
    /* every codec-data fault of the outer config first; then the nested codec's id
     * (unsupported-codec), its kind, and its config (decoding step 1) */
    NNAR_TRY(nnar_config_keys(ctx, st, required, optional));
    pos = mp_get(doc, st->config, "positions");
    if (mp_str_eq(&doc->nodes[pos], "bitmask")) st->gaps = 0;
    else if (mp_str_eq(&doc->nodes[pos], "gaps")) st->gaps = 1;
    else return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: expected bitmask or gaps");
    gb = mp_get(doc, st->config, "gap_bits");
    if (st->gaps) {
        int64_t g;
        if (gb == MP_NONE) return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: gap_bits: expected an integer in [1, 8], found none");
        NNAR_TRY(nnar_config_int(ctx, st, st->config, "gap_bits", 1, 8, &g));
        st->gap_bits = (int)g;
    } else if (gb != MP_NONE) {
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: gap_bits: expected none with bitmask positions, found one");
    }
    values = mp_get(doc, st->config, "values");
    if (doc->nodes[values].type != MP_MAP || doc->nodes[values].len != 2 || mp_get(doc, values, "codec") == MP_NONE ||
        mp_get(doc, values, "config") == MP_NONE)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: values: expected a map with keys codec and config");
    codec = mp_get(doc, values, "codec");
    inner = nnar_codec_find(&doc->nodes[codec]);
    if (!inner) {
        const mp_node *c = &doc->nodes[codec];
        return nnar_fail(ctx, NNAR_UNSUPPORTED_CODEC, "nnar.sparse: values: unsupported codec '%.*s'",
                         c->type == MP_STR ? (int)(c->len > 60 ? 60 : c->len) : 1, c->type == MP_STR ? (const char *)c->v.p : "?");
    }
    if (inner->kind != NNAR_ARRAY_BYTES || inner == &nnar_codec_sparse)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: values: expected an array-bytes codec other than nnar.sparse, "
                         "found %s", inner->id);
    st->inner->codec = inner;
    st->inner->doc = doc;
    st->inner->config = mp_get(doc, values, "config");
    st->inner->params = MP_NONE;
    st->inner->strict = st->strict;
    st->inner->inner = NULL;
    (void)k; (void)i;
    return inner->config(ctx, st->inner);
}

typedef struct counts { uint64_t count, listed; int invert; uint32_t inner_params; } counts;

static nnar_status get_counts(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, counts *c)
{
    uint32_t cn, inv, vals;
    const mp_doc *doc = st->doc;
    NNAR_TRY(nnar_param(ctx, st, st->params, "count", MP_INT, &cn));
    NNAR_TRY(nnar_param(ctx, st, st->params, "invert", MP_BOOL, &inv));
    NNAR_TRY(nnar_param(ctx, st, st->params, "values", MP_MAP, &vals));
    if (doc->nodes[cn].neg || doc->nodes[cn].v.u > spec.size)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: count: expected 0 to %llu stored values",
                         (unsigned long long)spec.size);
    c->count = doc->nodes[cn].v.u;
    c->invert = doc->nodes[inv].v.b;
    if (c->invert && !st->gaps) return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: invert: expected false with bitmask positions");
    c->listed = c->invert ? spec.size - c->count : c->count;
    c->inner_params = vals;
    return NNAR_OK;
}

static nnar_stage inner_stage(const nnar_stage *st, const counts *c, nnar_spec spec, nnar_spec *ispec)
{
    nnar_stage in = *st->inner;
    in.params = c->inner_params;
    ispec->dtype = spec.dtype;
    ispec->size = c->count;
    return in;
}

static nnar_status names(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req, uint32_t *n)
{
    counts c = {0, 0, 0, 0};
    nnar_spec is;
    nnar_stage in;
    uint32_t k, m = 0;
    NNAR_TRY(get_counts(ctx, st, spec, &c));
    in = inner_stage(st, &c, spec, &is);
    NNAR_TRY(in.codec->names(ctx, &in, is, req + 1, &m));
    strcpy(req[0].name, "positions");
    for (k = 1; k <= m; k++) {
        char tmp[40];
        sprintf(tmp, "values.%.30s", req[k].name);
        strcpy(req[k].name, tmp);
    }
    *n = m + 1;
    return NNAR_OK;
}

static nnar_status lengths(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req)
{
    counts c = {0, 0, 0, 0};
    nnar_spec is;
    nnar_stage in;
    NNAR_TRY(get_counts(ctx, st, spec, &c));
    in = inner_stage(st, &c, spec, &is);
    NNAR_TRY(in.codec->lengths(ctx, &in, is, req + 1));
    if (!st->gaps) { req[0].length = spec.size / 8 + (spec.size % 8 != 0); req[0].exact = 1; }
    else {
        uint64_t cap = (1u << st->gap_bits) - 1, symbols = c.listed + spec.size / cap;
        req[0].length = (symbols * (uint64_t)st->gap_bits + 7) / 8;
        req[0].exact = 0;
    }
    return NNAR_OK;
}

static unsigned symbol(const uint8_t *d, uint64_t len, uint64_t k, int width, unsigned cap)
{
    uint64_t bit = k * (uint64_t)width, byte = bit / 8;
    unsigned v = d[byte] | (byte + 1 < len ? (unsigned)d[byte + 1] << 8 : 0u);
    return (v >> (bit % 8)) & cap;
}

/* The mask of listed positions from a gap stream (decoding step 4). */
static nnar_status read_gaps(nnar_ctx *ctx, const nnar_stage *st, const nnar_stream *s, uint64_t n, uint64_t listed,
                             uint8_t *mask)
{
    int w = st->gap_bits;
    unsigned cap = (1u << w) - 1;
    uint64_t have = 8 * s->size / (uint64_t)w, p = 0, k = 0, found = 0, bits;
    while (found < listed) {
        unsigned r;
        if (k == have)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: expected %llu listed positions, the gap stream "
                             "holds %llu", (unsigned long long)listed, (unsigned long long)found);
        r = symbol(s->data, s->size, k++, w, cap);
        if (r == cap) { p += cap; continue; }
        p += r;
        if (p >= n)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: a gap reaches position %llu, past the %llu "
                             "elements", (unsigned long long)p, (unsigned long long)n);
        mask[p++] = 1;
        found++;
    }
    bits = k * (uint64_t)w;
    if ((bits + 7) / 8 != s->size)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: %llu positions end at symbol %llu, so expected %llu "
                         "bytes, found %llu", (unsigned long long)listed, (unsigned long long)k,
                         (unsigned long long)((bits + 7) / 8), (unsigned long long)s->size);
    if (bits % 8 && (s->data[bits / 8] >> (bits % 8)))
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: expected zero padding bits after the last gap");
    return NNAR_OK;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, const nnar_stream *s, uint8_t *out)
{
    counts c = {0, 0, 0, 0};
    nnar_spec is;
    nnar_stage in;
    uint64_t n = spec.size, i, k = 0;
    size_t w = nnar_dtype_size(spec.dtype);
    uint8_t *mask = NULL, *values;
    nnar_status r;
    NNAR_TRY(get_counts(ctx, st, spec, &c));
    in = inner_stage(st, &c, spec, &is);
    if (!st->gaps) {
        uint64_t ones = 0, nb = n / 8 + (n % 8 != 0);
        if (s[0].size != nb)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: expected a %llu-byte bitmask, found %llu bytes",
                             (unsigned long long)nb, (unsigned long long)s[0].size);
        if (n % 8 && (s[0].data[nb - 1] >> (n % 8)))
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: expected zero padding bits after the bitmask");
        for (i = 0; i < nb; i++) {
            unsigned v = s[0].data[i];
            while (v) { ones += v & 1; v >>= 1; }
        }
        if (ones != c.count)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.sparse: positions: the bitmask marks %llu elements, expected count %llu",
                             (unsigned long long)ones, (unsigned long long)c.count);
    } else {
        mask = (uint8_t *)nnar_alloc_zero(ctx, (size_t)n);
        if (!mask) return NNAR_OUT_OF_MEMORY;
        r = read_gaps(ctx, st, &s[0], n, c.listed, mask);
        if (r != NNAR_OK) { nnar_free(ctx, mask); return r; }
    }
    values = (uint8_t *)nnar_alloc(ctx, (size_t)(c.count * w));
    if (!values) { nnar_free(ctx, mask); return NNAR_OUT_OF_MEMORY; }
    r = in.codec->ab_decode(ctx, &in, is, s + 1, values);
    if (r == NNAR_OK) {
        memset(out, 0, (size_t)(n * w));
        for (i = 0; i < n && k < c.count; i++) {
            int survivor = mask ? (mask[i] != 0) != c.invert : (s[0].data[i / 8] >> (i % 8)) & 1;
            if (survivor) { memcpy(out + w * i, values + w * k, w); k++; }
        }
    }
    nnar_free(ctx, values);
    nnar_free(ctx, mask);
    return r;
}

const nnar_codec nnar_codec_sparse = {"nnar.sparse", NNAR_ARRAY_BYTES, param_keys, config, NULL, NULL, names, lengths, decode, NULL, NULL, NULL};
