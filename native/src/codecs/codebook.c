/* nnar.codebook (spec/codecs/codebook.md): a table of `size` entries and packed indices. */
#include "codecs.h"

static const char *const param_keys[] = {"size", NULL};
static const char *const no_keys[] = {NULL};
static const char *const required[] = {"bits", NULL};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st)
{
    int64_t b;
    NNAR_TRY(nnar_config_keys(ctx, st, required, no_keys));
    NNAR_TRY(nnar_config_int(ctx, st, st->config, "bits", 1, 8, &b));
    st->bits = (int)b;
    return NNAR_OK;
}

static nnar_status size_param(nnar_ctx *ctx, const nnar_stage *st, uint64_t *size)
{
    uint32_t v;
    NNAR_TRY(nnar_param(ctx, st, st->params, "size", MP_INT, &v));
    if (st->doc->nodes[v].neg || st->doc->nodes[v].v.u < 1 || st->doc->nodes[v].v.u > (1u << st->bits))
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.codebook: size: expected 1 to %u entries for %d-bit indices",
                         1u << st->bits, st->bits);
    *size = st->doc->nodes[v].v.u;
    return NNAR_OK;
}

static nnar_status names(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req, uint32_t *n)
{
    (void)ctx; (void)st; (void)spec;
    strcpy(req[0].name, "codebook");
    strcpy(req[1].name, "indices");
    *n = 2;
    return NNAR_OK;
}

static nnar_status lengths(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req)
{
    uint64_t size = 0;
    NNAR_TRY(size_param(ctx, st, &size));
    req[0].length = size * nnar_dtype_size(spec.dtype);
    req[0].exact = 1;
    req[1].length = nnar_packed_length(spec.size, st->bits);
    req[1].exact = 1;
    return NNAR_OK;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, const nnar_stream *s, uint8_t *out)
{
    uint64_t size = 0;
    NNAR_TRY(size_param(ctx, st, &size));
    return nnar_unpack(ctx, "nnar.codebook", &s[1], spec.size, st->bits, (uint32_t)size - 1, s[0].data,
                       nnar_dtype_size(spec.dtype), out);
}

const nnar_codec nnar_codec_codebook = {"nnar.codebook", NNAR_ARRAY_BYTES, param_keys, config, NULL, NULL, names, lengths, decode, NULL, NULL, NULL};
