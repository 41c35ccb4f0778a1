/* The codec interface (spec/codecs/): each codec is one file defining one nnar_codec. A stage
 * is a codec with its config parsed; params are read from the descriptor when needed. Codecs
 * never see a file offset. */
#ifndef NNAR_CODECS_H
#define NNAR_CODECS_H

#include "../internal.h"

enum { NNAR_ARRAY_ARRAY, NNAR_ARRAY_BYTES, NNAR_BYTES_BYTES };

#define NNAR_MAX_STREAMS 16

typedef struct nnar_spec {
    nnar_dtype dtype;
    uint64_t size;            /* elements (C order; the shape does not change decoding) */
} nnar_spec;

typedef struct nnar_stage {
    const struct nnar_codec *codec;
    const mp_doc *doc;
    uint32_t config, params;  /* nodes; params is MP_NONE for sparse's nested stage without params */
    int strict;
    /* parsed config */
    int bits;                 /* codebook, affine */
    uint64_t group_size;      /* affine */
    nnar_dtype cast_dtype;    /* cast */
    int gaps, gap_bits;       /* sparse */
    uint64_t chunk_bytes;     /* chunked */
    struct nnar_stage *inner; /* sparse: the nested array->bytes stage; chunked: the nested bytes->bytes one */
} nnar_stage;

/* A stream an array->bytes stage reads: its name, and its exact length or a bound. */
typedef struct nnar_stream_req {
    char name[40];
    uint64_t length;
    int exact;                /* 1: length is exact; 0: length is a bound */
} nnar_stream_req;

typedef struct nnar_stream {
    const uint8_t *data;
    uint64_t size;
} nnar_stream;

typedef struct nnar_codec {
    const char *id;
    int kind;
    const char *const *param_keys;   /* NULL-terminated */
    /* config: closed (any other key is codec-data) */
    nnar_status (*config)(nnar_ctx *ctx, nnar_stage *st);
    /* array->array */
    nnar_status (*out_spec)(nnar_ctx *ctx, const nnar_stage *st, nnar_spec in, nnar_spec *out);
    nnar_status (*aa_decode)(nnar_ctx *ctx, const nnar_stage *st, nnar_spec in, const uint8_t *src, uint8_t *dst);
    /* array->bytes: stream names (checking params they depend on), then lengths and bounds */
    nnar_status (*names)(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req, uint32_t *n);
    nnar_status (*lengths)(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, nnar_stream_req *req);
    /* streams are given in the order of names(); out holds spec.size elements */
    nnar_status (*ab_decode)(nnar_ctx *ctx, const nnar_stage *st, nnar_spec spec, const nnar_stream *streams,
                             uint8_t *out);
    /* bytes->bytes: the encoded bound of n bytes (each codec page's "Encoded bound"; it may saturate at
     * UINT64_MAX, the caller clamps it); decoding at most max_out bytes into *out, allocated
     * here when *out is NULL on entry, else a caller's buffer of max_out bytes (a chunk's place
     * in nnar.chunked's output; nothing allocated) */
    uint64_t (*bound)(const struct nnar_stage *st, uint64_t n);
    nnar_status (*bb_decode)(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size,
                             uint64_t max_out, uint8_t **out, size_t *out_size);
    /* bytes->bytes encoding with the stage's config (a patch's rebuilt streams); *out is
     * allocated here. Params are empty for every bytes->bytes codec of this format. */
    nnar_status (*bb_encode)(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint8_t **out,
                             size_t *out_size);
} nnar_codec;

extern const nnar_codec nnar_codec_raw, nnar_codec_byteplanes, nnar_codec_zstd, nnar_codec_huffman,
    nnar_codec_chunked, nnar_codec_cast, nnar_codec_codebook, nnar_codec_affine, nnar_codec_sparse;

const nnar_codec *nnar_codec_find(const mp_node *id);
/* Config helpers: the config is a map holding exactly these keys (codec-data otherwise). */
nnar_status nnar_config_keys(nnar_ctx *ctx, const nnar_stage *st, const char *const *required,
                             const char *const *optional);
nnar_status nnar_config_int(nnar_ctx *ctx, const nnar_stage *st, uint32_t map, const char *key, int64_t lo,
                            int64_t hi, int64_t *out);
/* A param (codec-data when missing or of the wrong type). */
nnar_status nnar_param(nnar_ctx *ctx, const nnar_stage *st, uint32_t params, const char *key, int type,
                       uint32_t *node);
/* Unknown params keys (nested ones for sparse): 1 when there is one. */
int nnar_unknown_params(const nnar_stage *st, uint32_t params);

/* huffman_enc.c: nnar.huffman's encoder (Encoding of huffman.md, lengths as nnar chooses them). */
nnar_status nnar_huffman_encode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint8_t **out,
                                size_t *out_size);

/* packing.md */
uint64_t nnar_packed_length(uint64_t count, int bits);
/* Check a packed stream (length, every index <= max_index, zero unused slots); then expand
 * each index into itemsize bytes of table. */
/* Outputs of at least this many bytes are written with non-temporal stores by the AVX2 code */
#define NNAR_STREAM_MIN (4u << 20)
/* byteplanes_x86.c: elements i.. of 2 or 4 bytes interleaved from their planes with AVX2 (out
 * is the whole array), rotated when rotate, 32 at a time; returns the index reached (i where
 * not built). Only when the handle's cpu has NNAR_CPU_AVX2. */
uint64_t nnar_byteplanes_avx2(const nnar_stream *s, size_t w, int rotate, uint64_t i, uint64_t n, uint8_t *out);
/* packing_x86.c: 4-bit indices (bytes 0..nbytes) into a table of 16 entries of 4 bytes, with
 * AVX2, from input byte b on; returns the input byte reached (b where not built). Only when
 * the handle's cpu has NNAR_CPU_AVX2. */
uint64_t nnar_unpack4_avx2(const uint8_t *in, uint64_t b, uint64_t nbytes, const uint32_t table[16], uint8_t *out);

nnar_status nnar_unpack(nnar_ctx *ctx, const char *codec, const nnar_stream *s, uint64_t count, int bits,
                        uint32_t max_index, const uint8_t *table, size_t itemsize, uint8_t *out);

/* cast.md: convert one element between float formats (bit patterns). */
uint64_t nnar_convert_float(uint64_t u, nnar_dtype from, nnar_dtype to);

#endif
