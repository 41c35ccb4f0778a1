/* Declarations shared by the library's modules; not part of the public API. Names follow
 * spec/FORMAT.md. */
#ifndef NNAR_INTERNAL_H
#define NNAR_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nnar.h"

#define NNAR_PREAMBLE_SIZE 16
#define NNAR_FRAME_SIZE 32
#define NNAR_TRAILER_SIZE 32
#define NNAR_DIGEST_SIZE 32
#define NNAR_FORMAT_MAJOR 1
#define NNAR_FORMAT_MINOR 5          /* the format this reader implements: 1.5 (strict up to it, §10) */
#define NNAR_CONTENT_PATCH_MINOR 4   /* a content patch's result: at least 1.4 (patch.md §6 step 3) */
#define NNAR_ALIGN 64
#define NNAR_MAX_NAME_BYTES 65535
#define NNAR_MAX_U63 0x7FFFFFFFFFFFFFFFull
#define NNAR_FLAG_MUST_UNDERSTAND 1u
#define NNAR_FLAG_DESCRIPTOR_ZSTD 2u

/* ---- context: allocator, limits, error ---------------------------------------------------- */

typedef struct ZSTD_DCtx_s ZSTD_DCtx;
typedef struct ZSTD_CCtx_s ZSTD_CCtx;

#ifndef NNAR_POOL
#define NNAR_POOL 6
#endif
#define NNAR_POOL_MIN (256u << 10)

typedef struct nnar_ctx {
    nnar_allocator alloc;
    nnar_limits limits;
    nnar_error *err;
    int strict;             /* format_minor <= the reader's (§10) */
    char where[160];        /* the structure being read, for messages */
    ZSTD_DCtx *zstd;        /* made on first use, reused */
    ZSTD_CCtx *zstd_c;      /* the encoder (patches), likewise */
    /* large blocks freed, kept for the next record (fresh pages cost more than decoding) */
    void *pool[NNAR_POOL];
    unsigned cpu;           /* NNAR_CPU_* found at init (cpu.c): the fast paths this handle takes */
} nnar_ctx;

void nnar_ctx_init(nnar_ctx *ctx, const nnar_options *options, nnar_error *err);
void nnar_ctx_free(nnar_ctx *ctx);
void nnar_ctx_trim(nnar_ctx *ctx);                     /* the blocks kept for reuse, released */
void *nnar_alloc(nnar_ctx *ctx, size_t size);          /* sets NNAR_OUT_OF_MEMORY on failure */
void *nnar_alloc_zero(nnar_ctx *ctx, size_t size);
void nnar_free(nnar_ctx *ctx, void *p);
/* Record an error (message prefixed with ctx->where) and return its status. */
nnar_status nnar_fail(nnar_ctx *ctx, nnar_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void nnar_set_where(nnar_ctx *ctx, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
nnar_status nnar_check_limit(nnar_ctx *ctx, const char *what, uint64_t value, uint64_t limit,
                             const char *limit_name);

#define NNAR_TRY(expr) do { nnar_status s_ = (expr); if (s_ != NNAR_OK) return s_; } while (0)

/* ---- CPU features (cpu.c) ------------------------------------------------------------------- */

#define NNAR_CPU_PCLMUL 1u   /* x86-64: PCLMULQDQ and SSE4.1 (crc32_x86.c) */
#define NNAR_CPU_SHA 2u      /* x86-64: the SHA extensions, SSSE3, SSE4.1 (sha256_x86.c) */
#define NNAR_CPU_SSSE3 4u
#define NNAR_CPU_AVX2 8u     /* x86-64: AVX2, its registers saved by the system (codecs/byteplanes_x86.c) */
/* The fast paths this CPU allows: 0 elsewhere, or with NNAR_PORTABLE in the environment. */
unsigned nnar_cpu_features(void);

/* ---- checksums ---------------------------------------------------------------------------- */

uint32_t nnar_crc32(uint32_t crc, const void *data, size_t size); /* crc: 0 to start; portable */
/* The same through the CPU's carry-less multiply when cpu allows it (large buffers). */
uint32_t nnar_crc32_cpu(unsigned cpu, uint32_t crc, const void *data, size_t size);
/* Copy size bytes from src to dst and return the CRC of them, in one pass. */
uint32_t nnar_crc32_copy(unsigned cpu, uint32_t crc, void *dst, const void *src, size_t size);
/* crc32_x86.c: the register (not inverted) advanced over n bytes, n a multiple of 64, at
 * least 64; with dst, the bytes copied there too. Only when cpu has NNAR_CPU_PCLMUL. */
uint32_t nnar_crc32_clmul(uint32_t reg, const uint8_t *p, size_t n, uint8_t *dst);
/* A stored CRC against the computed one. The fuzzing build (libFuzzer's convention) accepts
 * any, so that mutations reach the descriptors and codecs rather than stop at a checksum. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define NNAR_CRC_DIFFERS(computed, stored) ((void)(computed), (void)(stored), 0)
#else
#define NNAR_CRC_DIFFERS(computed, stored) ((computed) != (stored))
#endif

typedef struct nnar_sha256 {
    uint32_t h[8];
    uint64_t length;
    uint8_t block[64];
    size_t used;
    unsigned cpu;           /* NNAR_CPU_SHA: blocks through sha256_x86.c */
} nnar_sha256;
void nnar_sha256_init(nnar_sha256 *s, unsigned cpu);   /* cpu: the handle's ctx->cpu, or 0 */
void nnar_sha256_update(nnar_sha256 *s, const void *data, size_t size);
void nnar_sha256_final(nnar_sha256 *s, uint8_t out[32]);
/* sha256_x86.c: n blocks through the CPU's SHA instructions (1), or 0 where not built. Only
 * when cpu has NNAR_CPU_SHA. */
int nnar_sha256_blocks_fast(uint32_t h[8], const uint8_t *p, size_t n, const uint32_t *k);

/* ---- msgpack (FORMAT.md §4.2) ------------------------------------------------------------- */

enum { MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP };

typedef struct mp_node {
    uint8_t type;
    uint8_t neg;            /* MP_INT: v.i holds a negative value */
    uint32_t end;           /* index one past this node's subtree (nodes are in pre-order) */
    uint32_t len;           /* str/bin: bytes; array: elements; map: pairs */
    union { uint64_t u; int64_t i; double f; const uint8_t *p; int b; } v;
} mp_node;

typedef struct mp_doc {
    mp_node *nodes;
    uint32_t count;
} mp_doc;

#define MP_NONE 0xFFFFFFFFu

/* Parse one descriptor (the objects/depth limits first, then the msgpack rules): nodes point
 * into data, which must outlive the doc. */
nnar_status mp_parse(nnar_ctx *ctx, const uint8_t *data, size_t size, mp_doc *doc);
void mp_free(nnar_ctx *ctx, mp_doc *doc);
uint32_t mp_get(const mp_doc *doc, uint32_t map, const char *key);   /* value index or MP_NONE */
int mp_str_eq(const mp_node *n, const char *s);
/* Required and optional keys of a map: missing -> bad-descriptor; unknown when strict ->
 * bad-descriptor. what names the map in the message. */
nnar_status mp_check_keys(nnar_ctx *ctx, const mp_doc *doc, uint32_t map, const char *const *required,
                          const char *const *optional, int strict, const char *what);
int mp_u63(const mp_node *n, uint64_t *out);     /* an int in [0, 2^63-1] */
/* Canonical encoding (§5.3.1) of node i into a SHA-256, with segment lengths zeroed when
 * zero_segment_lengths; returns its length when sha is NULL. */
uint64_t mp_canonical(const mp_doc *doc, uint32_t i, int zero_segment_lengths, nnar_sha256 *sha);
/* The canonical encoding of a whole descriptor into out (NULL: only its length). With
 * segment_mode, each segment's `length` is lengths[j] (appended where missing), or 0 when
 * lengths is NULL (the content form of §5.3.1). */
uint64_t mp_encode(const mp_doc *doc, int segment_mode, const uint64_t *lengths, uint8_t *out);

/* ---- names, dtypes, sets of names ---------------------------------------------------------- */

nnar_dtype nnar_dtype_from(const uint8_t *s, size_t n);
int nnar_dtype_is_float(nnar_dtype d);
int nnar_utf8_valid(const uint8_t *s, size_t n);
nnar_status nnar_check_name(nnar_ctx *ctx, const mp_node *n);   /* §5.2.1 */

typedef struct nnar_nameset {
    const uint8_t **keys;
    uint32_t *lens;
    size_t cap, count;
} nnar_nameset;
void nnar_nameset_init(nnar_nameset *s);
void nnar_nameset_free(nnar_ctx *ctx, nnar_nameset *s);
/* Add a name: 1 if added, 0 if present, -1 out of memory. */
int nnar_nameset_add(nnar_ctx *ctx, nnar_nameset *s, const uint8_t *p, uint32_t len);
int nnar_nameset_has(const nnar_nameset *s, const uint8_t *p, uint32_t len);

/* ---- byte sources ---------------------------------------------------------------------------- */

typedef struct nnar_source {
    /* random access: read_at; in order: read (sequential). */
    nnar_status (*read_at)(nnar_ctx *ctx, struct nnar_source *src, uint64_t offset, void *buf,
                           size_t size, size_t *got);
    const uint8_t *mem;     /* memory sources: the bytes, for reading in place */
    uint64_t size;          /* UINT64_MAX when unknown (a stream) */
    uint64_t pos;           /* next offset, for streams */
    void *file;             /* io module's handle */
    void *mapped;           /* a mapped file (mem points here), unmapped on close */
    nnar_read_fn read;
    void *read_user;
} nnar_source;

/* io_stdio.c: the only platform-specific module. */
nnar_status nnar_io_open(nnar_ctx *ctx, const char *path, nnar_source *src);
/* The file mapped into memory (POSIX; read as nnar_io_open does where it cannot be mapped). */
nnar_status nnar_io_map(nnar_ctx *ctx, const char *path, nnar_source *src);
void nnar_io_close(nnar_source *src);

nnar_status nnar_source_memory(nnar_source *src, const void *data, size_t size);
nnar_status nnar_source_stream(nnar_source *src, nnar_read_fn read, void *user);
/* Exactly size bytes at offset, or truncated (what names them). *out points into memory for a
 * memory source (*owned = NULL), or into a buffer allocated here (*owned = it). */
nnar_status nnar_read_bytes(nnar_ctx *ctx, nnar_source *src, uint64_t offset, uint64_t size,
                            const uint8_t **out, uint8_t **owned, const char *what);
/* Whether the stream has ended (in order, §8.1 step 6). */
nnar_status nnar_source_at_end(nnar_ctx *ctx, nnar_source *src, uint64_t offset, int *at_end);

/* ---- records (framing.c, schema.c) --------------------------------------------------------- */

typedef struct nnar_head {
    uint64_t offset;
    uint8_t type[4];
    uint32_t flags;
    uint64_t body_length;
    uint32_t descriptor_length;
    uint32_t body_crc;
    uint8_t *owned_stored;  /* stored descriptor when copied */
    uint8_t *owned_plain;   /* decompressed descriptor */
    const uint8_t *stored;  /* the descriptor as stored (valid while the head is) */
    const uint8_t *desc;    /* the descriptor as decoded */
    size_t desc_size;
    mp_doc doc;
} nnar_head;

#define NNAR_HEAD_END(h) ((h)->offset + NNAR_FRAME_SIZE + (h)->descriptor_length + (h)->body_length)
#define NNAR_BODY_OFFSET(h) ((h)->offset + NNAR_FRAME_SIZE + (h)->descriptor_length)

nnar_status nnar_read_preamble(nnar_ctx *ctx, nnar_source *src, uint8_t preamble[16], uint16_t *minor);
/* Frame steps 1-8 of §11.1: the frame, its limits, header_crc and the descriptor. */
nnar_status nnar_read_head(nnar_ctx *ctx, nnar_source *src, uint64_t offset, const uint8_t *crc_prefix,
                           nnar_head *head);
void nnar_head_free(nnar_ctx *ctx, nnar_head *head);
void nnar_type_text(const uint8_t type[4], char out[17]);
nnar_status nnar_parse_trailer(nnar_ctx *ctx, const uint8_t *t, uint64_t offset, uint64_t *index_offset);
/* One zstd frame, exactly, declaring at most max_size bytes (spec/codecs/zstd.md). The caller
 * maps the codes: fail_code for a bad frame, limit_code for a declared size above max. *out:
 * NULL on entry (the output is allocated here) or a buffer of max_size bytes to decode into. */
nnar_status nnar_zstd_frame(nnar_ctx *ctx, const uint8_t *in, size_t in_size, uint64_t max_size,
                            nnar_status fail_code, nnar_status limit_code, uint8_t **out, size_t *out_size);

typedef struct nnar_segment {
    const uint8_t *name;
    uint32_t name_len;
    uint64_t length, raw_length;
    uint32_t codecs;        /* node of the codecs array */
    uint64_t offset;        /* absolute start in the archive */
} nnar_segment;

typedef struct nnar_member {
    const uint8_t *name;
    uint32_t name_len;
    uint32_t rank;
    uint64_t *shape;
    uint64_t size;          /* elements */
    uint64_t start;         /* first element in the record's array */
} nnar_member;

/* A TENS or MODL record's parsed descriptor. */
typedef struct nnar_record {
    nnar_head head;
    const uint8_t *dtype_name;
    uint32_t dtype_len;
    nnar_dtype dtype;
    nnar_member *members;
    uint32_t member_count;
    uint64_t *shapes;       /* storage for all members' shapes */
    uint64_t array_size;    /* elements of the record's array */
    uint32_t array_rank;
    uint64_t array_shape1;  /* the record array's shape when grouped: [array_size] */
    const uint8_t *digest;
    uint32_t pipeline;      /* node */
    nnar_segment *segments;
    uint32_t segment_count;
    uint32_t fidelity;      /* node or MP_NONE */
    /* FILE */
    const uint8_t *path;
    uint32_t path_len;
    /* MODL */
    const uint8_t *format;
    uint32_t format_len;
    uint64_t length;
} nnar_record;

nnar_status nnar_parse_meta(nnar_ctx *ctx, nnar_head *h);
/* A `segments` list (§5.2.3) without its layout; with probe, each `length` is ignored (a
 * patch's content-form descriptor: the applier sets it) and taken as raw_length for a verbatim
 * segment, 0 otherwise. *out is allocated here. */
nnar_status nnar_segment_entries(nnar_ctx *ctx, const mp_doc *doc, uint32_t segs, int probe, nnar_segment **out,
                                 uint32_t *count);
/* TENS steps 1-10 (the head is moved into rec). */
nnar_status nnar_parse_tensor(nnar_ctx *ctx, nnar_record *rec);
/* MODL step 2. */
nnar_status nnar_parse_model(nnar_ctx *ctx, nnar_record *rec);
/* FILE (§5.7): its keys, path, length, digest, pipeline and segments. */
nnar_status nnar_parse_file(nnar_ctx *ctx, nnar_record *rec);
/* A FILE path (§5.7): 1 to 4096 bytes, '/'-separated plain components. */
nnar_status nnar_check_path(nnar_ctx *ctx, const mp_node *n);
void nnar_record_free(nnar_ctx *ctx, nnar_record *rec);
/* Padding (§5.2.3) of a checked body. */
nnar_status nnar_check_padding(nnar_ctx *ctx, const nnar_record *rec, const uint8_t *body);

typedef struct nnar_entry {
    uint8_t type[4];
    uint64_t offset, length;
    uint32_t first_name, name_count;   /* into the index's names */
} nnar_entry;

typedef struct nnar_index {
    nnar_entry *entries;
    uint32_t count;
    const uint8_t **names;
    uint32_t *name_lens;
    uint32_t name_count;
    const uint8_t *content;            /* 32 bytes or NULL */
    nnar_nameset seen;
} nnar_index;

/* INDX steps 2-7 of §11.1 (at random and in order alike). */
nnar_status nnar_parse_index(nnar_ctx *ctx, const nnar_head *h, uint64_t first_offset, nnar_index *ix);
void nnar_index_free(nnar_ctx *ctx, nnar_index *ix);
/* INDX step 7: content, when present, a 32-byte bin. */
nnar_status nnar_index_content(nnar_ctx *ctx, const nnar_head *h, nnar_index *ix);

typedef struct nnar_alias {
    const uint8_t *name, *target;
    uint32_t name_len, target_len;
} nnar_alias;
/* ALIS steps 1-2: the body and the pairs (pairs point into h's descriptor). */
nnar_status nnar_parse_aliases(nnar_ctx *ctx, const nnar_head *h, nnar_alias **pairs, uint32_t *count);

/* ---- pipelines and codecs (pipeline.c) ---------------------------------------------------- */

/* Decode a record's array (§6.1) into out (nbytes of the record's array), from its body
 * (the body's CRC and padding already checked). */
nnar_status nnar_decode_record(nnar_ctx *ctx, const nnar_record *rec, const uint8_t *body, uint8_t *out);
/* The same, given where each segment's stored bytes are (segments[j] for segment j). */
nnar_status nnar_decode_segments(nnar_ctx *ctx, const nnar_record *rec, const uint8_t *const *segments, uint8_t *out);
/* Whether the record is one tensor stored raw in one verbatim segment (§8.3): its bytes are
 * the tensor's, so a reader may read them straight into the caller's buffer. */
int nnar_record_is_raw(const nnar_record *rec);

/* A segment's stream decoded through its codecs (exactly raw_length bytes), and a stream
 * encoded through them (patches); *out allocated here. */
nnar_status nnar_decode_chain(nnar_ctx *ctx, const mp_doc *doc, uint32_t codecs, uint64_t raw_length, const uint8_t *in,
                              size_t in_size, uint8_t **out);
nnar_status nnar_encode_chain(nnar_ctx *ctx, const mp_doc *doc, uint32_t codecs, const uint8_t *in, size_t in_size,
                              uint8_t **out, size_t *out_size);

/* ---- the base of a patch (archive.c) ------------------------------------------------------------ */

typedef struct nnar_stored {
    const nnar_head *head;   /* the record's head (META's: the archive's) */
    nnar_record rec;         /* TENS, MODL, FILE: parsed (rec.head is the head) */
    const uint8_t *body;
    uint8_t *owned;
    int owns;
} nnar_stored;
nnar_ctx *nnar_archive_ctx(nnar_archive *a);
nnar_source *nnar_archive_source(nnar_archive *a);
uint32_t nnar_archive_records(const nnar_archive *a);    /* entries of the index */
nnar_status nnar_archive_content(nnar_archive *a, uint8_t out[32]);
nnar_status nnar_archive_stored(nnar_archive *a, uint32_t number, nnar_stored *out);
/* Release what the handle keeps for its next read (the body buffer, kept blocks). */
void nnar_archive_trim(nnar_archive *a);
void nnar_stored_free(nnar_archive *a, nnar_stored *st);

/* ---- a patch read in order (stream.c) --------------------------------------------------------- */

typedef struct nnar_instream nnar_instream;
typedef struct nnar_payload {
    nnar_dtype dtype;
    uint32_t rank;
    uint64_t size;          /* elements (the one dimension when rank is 1) */
    const uint8_t *data;    /* valid until the next call */
    uint64_t nbytes;
} nnar_payload;
/* The patch's preamble, META and first record, which must be PTCH (its head: *ptch). *out is
 * set even on an error (close it). */
nnar_status nnar_instream_open(const nnar_options *options, nnar_error *err, nnar_read_fn read, void *user,
                               nnar_instream **out, const nnar_head **ptch, uint16_t *minor);
/* The next payload tensor, decoded and checked against its record's digest; *end at the end
 * of the patch (its index, content digest and trailer checked). */
nnar_status nnar_instream_next(nnar_instream *in, nnar_payload *p, int *end);
nnar_ctx *nnar_instream_ctx(nnar_instream *in);
void nnar_instream_close(nnar_instream *in);

/* ---- content digest (content.c) ------------------------------------------------------------ */

void nnar_record_digest(const nnar_head *h, const uint8_t *extra, uint8_t out[32]);

#endif
