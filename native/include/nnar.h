/* nnar.h: the whole public API of libnnar, a C99 reader of nnar archives (spec/FORMAT.md).
 *
 * Every function returns a status (NNAR_OK or an error); none aborts. A failed call leaves a
 * message saying what was expected, what was found and where: in the nnar_error passed to the
 * open functions, and afterwards in the archive handle (nnar_archive_error). A handle holds no
 * global state and may be used from one thread at a time; different handles are independent.
 * Memory comes from the caller's allocator when one is given (libzstd's own decoder state
 * excepted, which uses libzstd's allocator). */
#ifndef NNAR_H
#define NNAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: those of FORMAT.md §11 first, then the library's own. */
typedef enum nnar_status {
    NNAR_OK = 0,
    NNAR_BAD_MAGIC,            /* bad-magic */
    NNAR_UNSUPPORTED_VERSION,  /* unsupported-version */
    NNAR_RESERVED_NONZERO,     /* reserved-nonzero */
    NNAR_TRUNCATED,            /* truncated */
    NNAR_CHECKSUM,             /* checksum */
    NNAR_BAD_DESCRIPTOR,       /* bad-descriptor */
    NNAR_BAD_LAYOUT,           /* bad-layout */
    NNAR_UNSUPPORTED_RECORD,   /* unsupported-record */
    NNAR_UNSUPPORTED_CODEC,    /* unsupported-codec */
    NNAR_UNSUPPORTED_DTYPE,    /* unsupported-dtype */
    NNAR_CODEC_DATA,           /* codec-data */
    NNAR_DIGEST,               /* digest */
    NNAR_LIMIT_EXCEEDED,       /* limit-exceeded */
    NNAR_WRONG_BASE,           /* wrong-base: a patch applied to an archive other than its base */
    NNAR_IO_ERROR = 100,       /* io-error: the operating system failed a read */
    NNAR_OUT_OF_MEMORY,        /* out-of-memory: the allocator returned NULL */
    NNAR_NOT_FOUND,            /* not-found: no tensor of that name */
    NNAR_INVALID_ARGUMENT,     /* invalid-argument: a caller error (buffer too small, ...) */
    NNAR_STOPPED,              /* stopped: a callback asked to stop */
    NNAR_OUTPUT_EXISTS         /* output-exists: the output of a patch exists (and force was not given) */
} nnar_status;

/* The stable code of a status, as the spec and the Python package spell it ("bad-magic"). */
const char *nnar_status_code(nnar_status status);

typedef struct nnar_error {
    nnar_status status;
    char message[512];         /* NUL-terminated: expected, found, where */
} nnar_error;

/* Element types of FORMAT.md §5.2.2. */
typedef enum nnar_dtype {
    NNAR_DTYPE_UNKNOWN = 0,
    NNAR_BOOL, NNAR_INT8, NNAR_INT16, NNAR_INT32, NNAR_INT64,
    NNAR_UINT8, NNAR_UINT16, NNAR_UINT32, NNAR_UINT64,
    NNAR_FLOAT16, NNAR_BFLOAT16, NNAR_FLOAT32, NNAR_FLOAT64,
    NNAR_FLOAT8_E4M3FN, NNAR_FLOAT8_E5M2   /* since format 1.4: bit patterns, one byte */
} nnar_dtype;

const char *nnar_dtype_name(nnar_dtype dtype);   /* "float32"; "?" for unknown */
size_t nnar_dtype_size(nnar_dtype dtype);        /* bytes per element; 0 for unknown */

/* bfloat16, float16 and float8 elements come out as bit patterns; these widen bfloat16 and
 * float16 to float32, exactly (NaN payloads kept). */
float nnar_bf16_to_f32(uint16_t bits);
float nnar_f16_to_f32(uint16_t bits);
/* Whole arrays: n elements from src (little-endian bit patterns) to dst. */
void nnar_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n);
void nnar_f16_to_f32_array(const uint16_t *src, float *dst, size_t n);

/* Limits of FORMAT.md §9; nnar_limits_default fills the spec's defaults. */
typedef struct nnar_limits {
    uint64_t max_descriptor_bytes;
    uint64_t max_descriptor_objects;
    uint64_t max_descriptor_depth;
    uint64_t max_tensors;
    uint64_t max_rank;
    uint64_t max_tensor_bytes;
    uint64_t max_total_bytes;
    uint64_t max_stages;
    uint64_t max_segments;
} nnar_limits;
void nnar_limits_default(nnar_limits *limits);

/* A caller-supplied allocator: malloc(user, n) returns n bytes or NULL; free(user, p) with
 * p == NULL does nothing. */
typedef struct nnar_allocator {
    void *(*malloc)(void *user, size_t size);
    void (*free)(void *user, void *ptr);
    void *user;
} nnar_allocator;

typedef struct nnar_options {
    const nnar_allocator *allocator;   /* NULL: the C library's malloc/free */
    const nnar_limits *limits;         /* NULL: the defaults of §9 */
} nnar_options;

/* A length-counted string; not NUL-terminated in general (a msgpack str may hold U+0000). */
typedef struct nnar_text {
    const char *data;
    size_t size;
} nnar_text;

/* ---- Random access (FORMAT.md §8.2) ------------------------------------------------------ */

typedef struct nnar_archive nnar_archive;

/* Open an archive: preamble, META, trailer, index and ALIS records are checked. The memory
 * form reads from data[0 .. size), which must outlive the handle. err may be NULL. */
nnar_status nnar_open_file(const char *path, const nnar_options *options, nnar_archive **out,
                           nnar_error *err);
nnar_status nnar_open_memory(const void *data, size_t size, const nnar_options *options,
                             nnar_archive **out, nnar_error *err);
/* As nnar_open_file, the file mapped into memory rather than read (POSIX mmap; where it cannot
 * be mapped, or on Windows, it is read): bodies are checked and decoded in place, no copy and
 * no buffer for them, so reading is faster (README, "Measured"). Opt-in, for files nobody
 * changes while the handle is open: a file truncated under a mapping makes the process fail
 * with SIGBUS on the next read of the lost pages, and bytes rewritten meanwhile are seen
 * (checksums still catch most). */
nnar_status nnar_open_mapped(const char *path, const nnar_options *options, nnar_archive **out,
                             nnar_error *err);
void nnar_close(nnar_archive *archive);

/* The last error of a call on this handle. */
const nnar_error *nnar_archive_error(const nnar_archive *archive);

uint16_t nnar_format_minor(const nnar_archive *archive);
/* META: the writer's version, the source format, and the user's metadata (§5.1). */
nnar_text nnar_writer_version(const nnar_archive *archive);
nnar_text nnar_source_format(const nnar_archive *archive);
size_t nnar_metadata_count(const nnar_archive *archive);
nnar_status nnar_metadata_entry(nnar_archive *archive, size_t i, nnar_text *key, nnar_text *value);

typedef struct nnar_tensor_info {
    nnar_text name;
    nnar_text dtype_name;      /* as stored: may name a dtype this reader does not know */
    nnar_dtype dtype;          /* NNAR_DTYPE_UNKNOWN for such a dtype */
    uint32_t rank;
    const uint64_t *shape;     /* rank dimensions; valid until the handle is closed */
    uint64_t nbytes;           /* decoded bytes (0 for an unknown dtype) */
    uint64_t stored_bytes;     /* its record's stored body bytes; a group member: its share by size */
    uint32_t group;            /* tensors stored in the same record */
    nnar_text alias_of;        /* for an alias (§5.5): the tensor it names; size 0 otherwise */
    size_t fidelity_count;     /* entries of the record's fidelity map (§5.2.5) */
    const uint8_t *digest;     /* 32 bytes: SHA-256 of its record's decoded array */
} nnar_tensor_info;

/* Tensors and aliases, in archive order. Listing reads each TENS descriptor once (cached). */
size_t nnar_tensor_count(const nnar_archive *archive);
nnar_status nnar_tensor_at(nnar_archive *archive, size_t i, nnar_tensor_info *info);
/* The index of a tensor or alias by name (its UTF-8 bytes): NNAR_NOT_FOUND when absent. */
nnar_status nnar_tensor_find(nnar_archive *archive, const char *name, size_t name_size, size_t *index);
/* Fidelity entry j of tensor i: its key, and its value as text (a str as is; a number printed
 * in C's "%.17g" or "%lld"). */
nnar_status nnar_fidelity_entry(nnar_archive *archive, size_t i, size_t j, nnar_text *key,
                                nnar_text *value);

/* Decode tensor i into out (exactly info.nbytes bytes, C order, little-endian element bytes;
 * NULL for an empty tensor). Only the tensor's own record is read; its CRCs are checked, and
 * with check_digest its record's SHA-256 digest too. Nothing is returned from a record that
 * fails a check, but out may have been written. */
nnar_status nnar_read_tensor(nnar_archive *archive, size_t i, void *out, size_t out_size,
                             int check_digest);

/* The MODL record (§5.4): present or not, its format, and the structure's decoded length. */
nnar_status nnar_model_info(nnar_archive *archive, int *present, nnar_text *format,
                            uint64_t *length);
/* Decode the structure into out (exactly length bytes). */
nnar_status nnar_read_model(nnar_archive *archive, void *out, size_t out_size);

/* Aliases (§5.5), in archive order. */
size_t nnar_alias_count(const nnar_archive *archive);
nnar_status nnar_alias_at(nnar_archive *archive, size_t i, nnar_text *name, nnar_text *target);

/* FILE records (§5.7, since format 1.4): the files of a model folder that are not weights. */
size_t nnar_file_count(const nnar_archive *archive);
nnar_status nnar_file_at(nnar_archive *archive, size_t i, nnar_text *path, uint64_t *length);
/* Decode file i into out (exactly length bytes), checked against its SHA-256 digest. */
nnar_status nnar_read_file(nnar_archive *archive, size_t i, void *out, size_t out_size);

/* Verify (§8.2 step 6): decode every record, check every CRC and digest, the structure, and
 * the content digest (§5.3.1). content (may be NULL) receives the computed content digest;
 * *has_stored (may be NULL) says whether the index carries one. */
nnar_status nnar_verify(nnar_archive *archive, uint8_t content[32], int *has_stored);

/* ---- In order, from a stream (FORMAT.md §8.1) --------------------------------------------- */

/* Read up to size bytes into buf; return the count (0 at the end), or -1 on an error. */
typedef long long (*nnar_read_fn)(void *user, void *buf, size_t size);

typedef struct nnar_stream_visitor {
    /* Each META metadata entry (§5.1), before any record. May be NULL. */
    int (*metadata)(void *user, nnar_text key, nnar_text value);
    /* Each tensor (aliases too) as soon as its record is decoded: data holds info->nbytes
     * bytes, valid during the call. Return nonzero to stop (NNAR_STOPPED). May be NULL. */
    int (*tensor)(void *user, const nnar_tensor_info *info, const void *data);
    /* The MODL structure, when present. May be NULL. */
    int (*model)(void *user, nnar_text format, const void *data, size_t size);
    /* Each FILE record's bytes, decoded and checked (only when check_digests). May be NULL. */
    int (*file)(void *user, nnar_text path, const void *data, size_t size);
    void *user;
    int check_digests;         /* nonzero: check every record's digest (what verify does) */
} nnar_stream_visitor;

/* Read a whole archive in order, in memory bounded by one record: every check of §8.1,
 * the index, the content digest and the trailer included. content (may be NULL) receives the
 * computed content digest. */
nnar_status nnar_read_stream(nnar_read_fn read, void *read_user, const nnar_options *options,
                             const nnar_stream_visitor *visitor, uint8_t content[32],
                             nnar_error *err);

/* ---- Patches (spec/patch.md) ------------------------------------------------------------ */

/* Write size bytes from buf; return 0 on success, nonzero on an error (io-error). */
typedef int (*nnar_write_fn)(void *user, const void *buf, size_t size);

typedef struct nnar_patch_info {
    int content;               /* 1: a content patch (1.4, patch.md §3-§6); 0: a byte patch (1.3, §9) */
    uint16_t result_minor;     /* the PTCH descriptor's result_minor */
    /* a content patch: the result's content digest (equal to the patch's); a byte patch: zeros */
    uint8_t result_content[32];
    uint64_t result_length;    /* bytes written */
    uint32_t records;          /* records of the result before its INDX record */
} nnar_patch_info;

/* Apply a patch (spec/patch.md §6, or §9 for a byte patch) to the base archive at base_path
 * (or, with base_path NULL, at base_data[0 .. base_size)), reading the patch once, in order,
 * through read (a pipe or a download: nothing is read twice), and writing the result in order
 * through write (NULL: nowhere, only check the patch). Every check of patch.md is made: the base's content digest (or bytes) against
 * the patch (wrong-base, before anything is written), every payload tensor's digest, every
 * rebuilt record as a reader checks it (its array's digest when anything of it came from the
 * patch), the patch's own index and trailer, and the result's content digest (or SHA-256)
 * against the patch's (digest). Memory is bounded by one record of each input at a time, plus
 * the names of the result (for its index). On an error the bytes written so far are not an
 * archive: discard them (nnar_patch_file does). info (may be NULL) is filled on success. The
 * base is only read. Rebuilt segments are encoded with this library's encoders (nnar.zstd
 * through libzstd, whose encoder state is libzstd's allocation; nnar.huffman). */
nnar_status nnar_patch_stream(const char *base_path, const void *base_data, size_t base_size, nnar_read_fn read,
                              void *read_user, nnar_write_fn write, void *write_user, const nnar_options *options,
                              nnar_patch_info *info, nnar_error *err);

/* nnar_patch_stream into the file out_path: written to a temporary file beside it, synced,
 * and moved into place only after every check passed (a hard link, or with force a rename
 * over an existing file); on any error nothing is left behind. An existing out_path is
 * refused (output-exists) unless force; an out_path that is the base is refused
 * (invalid-argument). */
nnar_status nnar_patch_file(const char *base_path, nnar_read_fn read, void *read_user, const char *out_path, int force,
                            const nnar_options *options, nnar_patch_info *info, nnar_error *err);

#ifdef __cplusplus
}
#endif
#endif
