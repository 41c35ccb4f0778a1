/* nnar.cast (spec/codecs/cast.md): float formats converted on their bit patterns, rounding to
 * nearest even, subnormals kept, NaN payloads truncated (quiet bit set) or extended. Integer
 * arithmetic only, so no flush-to-zero mode of the processor can change a result. */
#include "codecs.h"

static const char *const no_keys[] = {NULL};
static const char *const required[] = {"dtype", NULL};

static void format_of(nnar_dtype d, int *e, int *m)
{
    switch (d) {
    case NNAR_FLOAT16: *e = 5; *m = 10; return;
    case NNAR_BFLOAT16: *e = 8; *m = 7; return;
    case NNAR_FLOAT32: *e = 8; *m = 23; return;
    case NNAR_FLOAT8_E4M3FN: *e = 4; *m = 3; return;
    case NNAR_FLOAT8_E5M2: *e = 5; *m = 2; return;
    default: *e = 11; *m = 52; return;
    }
}

/* m / 2^shift rounded to nearest, ties to even (shift <= 0: exact) */
static uint64_t rne(uint64_t m, int shift)
{
    uint64_t q, rem, half;
    if (shift <= 0) return m << -shift;
    if (shift >= 64) return 0;
    q = m >> shift;
    rem = m & ((1ull << shift) - 1);
    half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return q;
}

uint64_t nnar_convert_float(uint64_t u, nnar_dtype from, nnar_dtype to)
{
    int fe, fm, te, tm, fbias, tbias, p, e, x, d, shift;
    uint64_t sign, exp, mant, m, q, r, tmax;
    format_of(from, &fe, &fm);
    format_of(to, &te, &tm);
    fbias = (1 << (fe - 1)) - 1;
    tbias = (1 << (te - 1)) - 1;
    sign = (u >> (fe + fm)) & 1;
    exp = (u >> fm) & ((1ull << fe) - 1);
    mant = u & ((1ull << fm) - 1);
    tmax = (1ull << te) - 1;
    sign <<= te + tm;
    /* float8_e4m3fn has no infinities: only S.1111.111 is a NaN, other bytes of the top
     * exponent are normal numbers (FORMAT.md §5.2.2) */
    if (from == NNAR_FLOAT8_E4M3FN ? (u & 0x7F) == 0x7F : exp == (1ull << fe) - 1) {
        if (!mant) return sign | tmax << tm;
        /* NaN: widening keeps the payload (and a clear quiet bit); narrowing truncates it and
         * sets the quiet bit, so the result stays a NaN */
        m = tm >= fm ? mant << (tm - fm) : (mant >> (fm - tm)) | 1ull << (tm - 1);
        return sign | tmax << tm | m;
    }
    if (!exp && !mant) return sign;
    if (!exp) { m = mant; e = 1 - fbias - fm; }
    else { m = mant | 1ull << fm; e = (int)exp - fbias - fm; }
    for (p = 63; !(m >> p); p--) {}
    x = e + p;
    d = x + tbias;
    shift = d >= 1 ? p - tm : (1 - tbias - tm) - e;
    q = rne(m, shift);
    r = (d >= 1 ? (uint64_t)(d - 1) << tm : 0) + q;
    if (r >= tmax << tm) r = tmax << tm;
    return sign | r;
}

static nnar_status config(nnar_ctx *ctx, nnar_stage *st)
{
    uint32_t v;
    NNAR_TRY(nnar_config_keys(ctx, st, required, no_keys));
    v = mp_get(st->doc, st->config, "dtype");
    st->cast_dtype = st->doc->nodes[v].type == MP_STR ? nnar_dtype_from(st->doc->nodes[v].v.p, st->doc->nodes[v].len)
                                                      : NNAR_DTYPE_UNKNOWN;
    if (!nnar_dtype_is_float(st->cast_dtype) && st->cast_dtype != NNAR_FLOAT8_E4M3FN && st->cast_dtype != NNAR_FLOAT8_E5M2)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.cast: dtype: expected one of float16, bfloat16, float32, float64, "
                         "float8_e4m3fn, float8_e5m2");
    return NNAR_OK;
}

static int allowed(nnar_dtype in, nnar_dtype to)
{
    return (in == NNAR_FLOAT32 && (to == NNAR_FLOAT16 || to == NNAR_BFLOAT16 || to == NNAR_FLOAT64)) ||
           (in == NNAR_FLOAT64 && (to == NNAR_FLOAT32 || to == NNAR_FLOAT16)) ||
           (in == NNAR_FLOAT16 && (to == NNAR_FLOAT32 || to == NNAR_FLOAT64)) ||
           (in == NNAR_BFLOAT16 && to == NNAR_FLOAT32) ||
           ((in == NNAR_FLOAT32 || in == NNAR_FLOAT16 || in == NNAR_BFLOAT16) &&
            (to == NNAR_FLOAT8_E4M3FN || to == NNAR_FLOAT8_E5M2));
}

static nnar_status out_spec(nnar_ctx *ctx, const nnar_stage *st, nnar_spec in, nnar_spec *out)
{
    if (!allowed(in.dtype, st->cast_dtype))
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.cast: cannot store %s as %s (not an allowed pair)",
                         nnar_dtype_name(in.dtype), nnar_dtype_name(st->cast_dtype));
    out->dtype = st->cast_dtype;
    out->size = in.size;
    return NNAR_OK;
}

static uint64_t load(const uint8_t *p, size_t w)
{
    uint64_t u = 0;
    size_t k;
    for (k = 0; k < w; k++) u |= (uint64_t)p[k] << (8 * k);
    return u;
}

static nnar_status aa_decode(nnar_ctx *ctx, const nnar_stage *st, nnar_spec in, const uint8_t *src, uint8_t *dst)
{
    size_t wi = nnar_dtype_size(st->cast_dtype), wo = nnar_dtype_size(in.dtype), k;
    uint64_t i;
    (void)ctx;
    for (i = 0; i < in.size; i++) {
        uint64_t u = nnar_convert_float(load(src + wi * i, wi), st->cast_dtype, in.dtype);
        for (k = 0; k < wo; k++) dst[wo * i + k] = (uint8_t)(u >> (8 * k));
    }
    return NNAR_OK;
}

const nnar_codec nnar_codec_cast = {"nnar.cast", NNAR_ARRAY_ARRAY, no_keys, config, out_spec, aa_decode, NULL, NULL, NULL, NULL, NULL, NULL};
