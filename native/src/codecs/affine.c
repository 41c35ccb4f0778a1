/* nnar.affine (spec/codecs/affine.md): value = float32(q - zero_point) * scale, one IEEE
 * binary32 multiplication per element, per group of group_size elements. */
#include "codecs.h"

static const char *const no_keys[] = {NULL};
static const char *const required[] = {"bits", "group_size", NULL};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st)
{
    int64_t b, g;
    NNAR_TRY(nnar_config_keys(ctx, st, required, no_keys));
    NNAR_TRY(nnar_config_int(ctx, st, st->config, "bits", 1, 8, &b));
    NNAR_TRY(nnar_config_int(ctx, st, st->config, "group_size", 1, INT64_MAX, &g));
    st->bits = (int)b;
    st->group_size = (uint64_t)g;
    return NNAR_OK;
}

static nnar_status names(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req, uint32_t *n)
{
    (void)ctx; (void)st; (void)spec;
    strcpy(req[0].name, "scales");
    strcpy(req[1].name, "zero_points");
    strcpy(req[2].name, "indices");
    *n = 3;
    return NNAR_OK;
}

static nnar_status lengths(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req)
{
    uint64_t g = spec.size / st->group_size + (spec.size % st->group_size != 0);
    if (spec.dtype != NNAR_FLOAT32)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.affine: expected a float32 array, found %s", nnar_dtype_name(spec.dtype));
    req[0].length = 4 * g; req[0].exact = 1;
    req[1].length = g; req[1].exact = 1;
    req[2].length = nnar_packed_length(spec.size, st->bits); req[2].exact = 1;
    return NNAR_OK;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, const nnar_stream *s, uint8_t *out)
{
    uint64_t g = s[1].size, j, i, n = spec.size;
    unsigned qmax = (1u << st->bits) - 1;
    uint8_t ident[256];
    unsigned v;
    for (j = 0; j < g; j++) {
        uint32_t u;
        memcpy(&u, s[0].data + 4 * j, 4);
        u = (uint32_t)s[0].data[4 * j] | (uint32_t)s[0].data[4 * j + 1] << 8 | (uint32_t)s[0].data[4 * j + 2] << 16 |
            (uint32_t)s[0].data[4 * j + 3] << 24;
        if ((u & 0x7F800000u) == 0x7F800000u)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.affine: scale of group %llu: expected a finite number",
                             (unsigned long long)j);
        if (s[1].data[j] > qmax)
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.affine: zero point %u of group %llu exceeds %u", s[1].data[j],
                             (unsigned long long)j, qmax);
    }
    /* q values, one byte each, written at the front of out; expanded below from the back so
     * no value is overwritten before it is read */
    for (v = 0; v < 256; v++) ident[v] = (uint8_t)v;
    NNAR_TRY(nnar_unpack(ctx, "nnar.affine", &s[2], n, st->bits, qmax, ident, 1, out));
    for (i = n; i-- > 0;) {
        uint64_t grp = i / st->group_size;
        uint32_t u = (uint32_t)s[0].data[4 * grp] | (uint32_t)s[0].data[4 * grp + 1] << 8 |
                     (uint32_t)s[0].data[4 * grp + 2] << 16 | (uint32_t)s[0].data[4 * grp + 3] << 24;
        float scale, value;
        memcpy(&scale, &u, 4);
        value = (float)((int)out[i] - (int)s[1].data[grp]) * scale;
        memcpy(out + 4 * i, &value, 4);
    }
    return NNAR_OK;
}

const nnar_codec nnar_codec_affine = {"nnar.affine", NNAR_ARRAY_BYTES, no_keys, config, NULL, NULL, names, lengths, decode, NULL, NULL, NULL};
