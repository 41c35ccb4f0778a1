/* nnar.raw (spec/codecs/raw.md): one stream, `data`, the array's bytes. */
#include "codecs.h"

static const char *const no_keys[] = {NULL};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st) { return nnar_config_keys(ctx, st, no_keys, no_keys); }

static nnar_status names(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req, uint32_t *n)
{
    (void)ctx; (void)st; (void)spec;
    strcpy(req[0].name, "data");
    *n = 1;
    return NNAR_OK;
}

static nnar_status lengths(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req)
{
    (void)ctx; (void)st;
    req[0].length = spec.size * nnar_dtype_size(spec.dtype);
    req[0].exact = 1;
    return NNAR_OK;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, const nnar_stream *s, uint8_t *out)
{
    (void)ctx; (void)st;
    size_t n = (size_t)(spec.size * nnar_dtype_size(spec.dtype));
    if (n && s[0].data != out) memcpy(out, s[0].data, n);   /* read in place: nothing to copy */
    return NNAR_OK;
}

const nnar_codec nnar_codec_raw = {"nnar.raw", NNAR_ARRAY_BYTES, no_keys, config, NULL, NULL, names, lengths, decode, NULL, NULL, NULL};
