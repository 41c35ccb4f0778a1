/* The registered codec ids (spec/codecs/README.md) and helpers shared by codecs. */
#include <stdio.h>

#include "codecs.h"

static const nnar_codec *const all[] = {
    &nnar_codec_raw, &nnar_codec_byteplanes, &nnar_codec_zstd, &nnar_codec_huffman, &nnar_codec_chunked,
    &nnar_codec_cast, &nnar_codec_codebook, &nnar_codec_affine, &nnar_codec_sparse, NULL
};

const nnar_codec *nnar_codec_find(const mp_node *id)
{
    const nnar_codec *const *c;
    for (c = all; *c; c++)
        if (mp_str_eq(id, (*c)->id)) return *c;
    return NULL;
}

static int listed(const mp_node *key, const char *const *list)
{
    for (; list && *list; list++)
        if (mp_str_eq(key, *list)) return 1;
    return 0;
}

nnar_status nnar_config_keys(nnar_ctx *ctx, const nnar_stage *st, const char *const *required,
                             const char *const *optional)
{
    const mp_doc *doc = st->doc;
    const mp_node *m = &doc->nodes[st->config];
    const char *const *r;
    uint32_t i, k;
    if (m->type != MP_MAP) return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: expected a config map, found another type", st->codec->id);
    for (r = required; r && *r; r++)
        if (mp_get(doc, st->config, *r) == MP_NONE)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: config: expected key '%s', found none", st->codec->id, *r);
    for (k = st->config + 1, i = 0; i < m->len; i++) {
        const mp_node *key = &doc->nodes[k];
        if (!listed(key, required) && !listed(key, optional))
            return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: config: unknown key '%.*s' (a config is closed)", st->codec->id,
                             (int)(key->len > 40 ? 40 : key->len), (const char *)key->v.p);
        k = doc->nodes[key->end].end;
    }
    return NNAR_OK;
}

nnar_status nnar_config_int(nnar_ctx *ctx, const nnar_stage *st, uint32_t map, const char *key, int64_t lo,
                            int64_t hi, int64_t *out)
{
    uint32_t v = mp_get(st->doc, map, key);
    const mp_node *n = v == MP_NONE ? NULL : &st->doc->nodes[v];
    int64_t x;
    if (!n || n->type != MP_INT) goto bad;
    if (n->neg) x = n->v.i;
    else if (n->v.u > (uint64_t)INT64_MAX) goto bad;
    else x = (int64_t)n->v.u;
    if (x < lo || x > hi) goto bad;
    *out = x;
    return NNAR_OK;
bad:
    return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: %s: expected an integer in [%lld, %lld]", st->codec->id, key,
                     (long long)lo, (long long)hi);
}

nnar_status nnar_param(nnar_ctx *ctx, const nnar_stage *st, uint32_t params, const char *key, int type,
                       uint32_t *node)
{
    uint32_t v = mp_get(st->doc, params, key);
    if (v == MP_NONE) return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: expected param '%s', found none", st->codec->id, key);
    if (st->doc->nodes[v].type != type)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: param '%s': expected another type", st->codec->id, key);
    *node = v;
    return NNAR_OK;
}

int nnar_unknown_params(const nnar_stage *st, uint32_t params)
{
    const mp_doc *doc = st->doc;
    uint32_t i, k;
    if (params == MP_NONE || doc->nodes[params].type != MP_MAP) return 0;
    for (k = params + 1, i = 0; i < doc->nodes[params].len; i++) {
        const mp_node *key = &doc->nodes[k];
        uint32_t v = key->end;
        if (!listed(key, st->codec->param_keys)) return 1;
        if (st->inner && mp_str_eq(key, "values") && nnar_unknown_params(st->inner, v)) return 1;
        k = doc->nodes[v].end;
    }
    return 0;
}
