/* The patcher (spec/patch.md): shared by patch_schema.c (the PTCH descriptor), patch.c
 * (segments, content patches, the API) and patch_bytes.c (byte patches, §9). */
#ifndef NNAR_PATCH_H
#define NNAR_PATCH_H

#include "internal.h"
#include "writer.h"

enum { SRC_BASE, SRC_PATCH, SRC_DELTA };

typedef struct seg_op {
    uint8_t source, add, width;   /* add: the "add" op (else "xor") */
    uint32_t ranges;              /* node of the ranges array, or MP_NONE */
} seg_op;

typedef struct rec_op {
    int has_base, has_flags, has_segs, has_crc;
    uint64_t base;
    uint32_t type;                /* node of the type str, or MP_NONE */
    uint32_t flags;
    uint32_t desc;                /* node of the descriptor bin, or MP_NONE */
    uint32_t first_seg, nseg;     /* into the header's segs */
    uint32_t body_crc;
} rec_op;

typedef struct patch_header {
    int content;                  /* 1: a content patch (§3); 0: a byte patch (§9.1) */
    uint16_t result_minor;
    const mp_doc *doc;            /* the PTCH descriptor (nodes below point into it) */
    rec_op *ops;
    uint32_t nops;
    seg_op *segs;
    const uint8_t *base_content, *result_content, *base_digest, *result_digest;
    uint64_t base_length, result_length;
    uint32_t index_flags, index_desc;
} patch_header;

/* One segment of a result record: its map (from the result's descriptor) and stored bytes. */
typedef struct patcher {
    nnar_ctx ctx;                 /* the patcher's: its errors, encoders and buffers */
    nnar_error *err;
    nnar_instream *in;
    nnar_archive *base;
    patch_header h;
    nnar_sink sink;
    uint32_t n_base;              /* 1 + the base's index entries */
} patcher;

/* patch_schema.c: §3 / §9.1, checked as nnar's reader does (its order). */
nnar_status nnar_patch_header(nnar_ctx *ctx, const mp_doc *doc, uint16_t minor, patch_header *h);
void nnar_patch_header_free(nnar_ctx *ctx, patch_header *h);

/* patch.c, for both kinds */
nnar_status nnar_patch_base_failed(patcher *p, nnar_status s);   /* the base's error, copied */
int nnar_type_eq(const mp_node *n, const char *s);
/* Record op i's partner (stored, checked; none without `base`) and the result record's type (the
 * op's, else the partner's), which must be META for the first op and only for it. */
nnar_status nnar_patch_partner(patcher *p, uint32_t i, const rec_op *op, nnar_stored *src, uint8_t type[4]);
/* The next payload tensor: of dtype, one-dimensional, of size elements (UINT64_MAX: any). */
nnar_status nnar_patch_payload(patcher *p, nnar_dtype dtype, uint64_t size, nnar_payload *out);
/* The stored bytes of a segment op on result segment `ref` (codecs in doc): *out allocated. */
nnar_status nnar_patch_segment(patcher *p, const seg_op *sop, const nnar_segment *ref, const mp_doc *doc,
                               const nnar_stored *src, int content, uint8_t **out, size_t *out_size);

/* patch_bytes.c */
nnar_status nnar_patch_bytes(patcher *p, const char *base_path, const void *base_data, size_t base_size,
                             const nnar_options *options);

#endif
