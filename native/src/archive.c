/* Random access (FORMAT.md §8.2): preamble, META, trailer, index and the records the index
 * needs read at open; each tensor's record read when listed or decoded; verify reads them all,
 * then the structure and the content digest. */
#include <stdio.h>

#include "internal.h"

typedef struct tref {
    uint32_t entry;         /* TENS entry of the record holding it */
    uint32_t member;        /* its position among the record's names */
    int64_t alias;          /* index into aliases, or -1 */
} tref;

struct nnar_archive {
    nnar_ctx ctx;
    nnar_error error;
    nnar_source src;
    int owns_file;
    uint16_t minor;
    uint8_t preamble[16];
    nnar_head meta;
    uint64_t first_offset;
    nnar_head indx;
    nnar_index ix;
    nnar_head *heads;       /* per entry: ALIS, MODL and other records' heads read at open */
    uint8_t (*extra)[32];   /* per entry: the SHA-256 of an unknown record's body */
    nnar_record **recs;     /* per entry: TENS records, parsed when first needed */
    nnar_alias *aliases;
    uint32_t *alias_entry;  /* per alias: the TENS entry of its target */
    uint32_t alias_count;
    tref *order;
    size_t tensor_count;
    uint32_t *by_name;      /* open addressing: slot -> 1 + index into order (0: empty) */
    size_t by_name_mask;
    uint8_t *scratch;       /* a file's record bodies are read here: the largest so far, kept */
    uint64_t scratch_size;
    uint32_t *files;        /* FILE entries, in index order */
    uint32_t file_count;
    char text[64];          /* a fidelity number as text */
};

static nnar_status fail_open(nnar_archive *a, nnar_status s, nnar_archive **out, nnar_error *err)
{
    if (err) *err = a->error;
    nnar_close(a);
    *out = NULL;
    return s;
}

static int type_is(const uint8_t *t, const char *s) { return memcmp(t, s, 4) == 0; }

/* the frame and descriptor at an entry's offset, whose type and length must be the entry's */
static nnar_status head_at(nnar_archive *a, const nnar_entry *e, nnar_head *h)
{
    nnar_ctx *ctx = &a->ctx;
    NNAR_TRY(nnar_read_head(ctx, &a->src, e->offset, NULL, h));
    if (memcmp(h->type, e->type, 4) != 0 || NNAR_HEAD_END(h) - h->offset != e->length) {
        char tt[17];
        nnar_type_text(h->type, tt);
        nnar_head_free(ctx, h);
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index entry '%.4s': expected a %llu-byte record, found a %llu-byte '%s' record",
                         (const char *)e->type, (unsigned long long)e->length,
                         (unsigned long long)(NNAR_HEAD_END(h) - h->offset), tt);
    }
    return NNAR_OK;
}

static nnar_status read_body(nnar_archive *a, const nnar_head *h, const uint8_t **body, uint8_t **owned)
{
    nnar_ctx *ctx = &a->ctx;
    uint32_t crc = 0;
    if (a->src.mem) {
        NNAR_TRY(nnar_read_bytes(ctx, &a->src, NNAR_BODY_OFFSET(h), h->body_length, body, owned, "record body"));
        crc = nnar_crc32_cpu(ctx->cpu, 0, *body, (size_t)h->body_length);
    } else {
        /* from a file: into the kept buffer (no fresh pages per record), 1 MiB at a time, each
         * chunk added to the CRC while it is in cache */
        uint64_t base = NNAR_BODY_OFFSET(h), n = h->body_length, done = 0;
        *owned = NULL;
        if (base > a->src.size || n > a->src.size - base)
            return nnar_fail(ctx, NNAR_TRUNCATED, "record body: expected %llu bytes at offset %llu, found %llu",
                             (unsigned long long)n, (unsigned long long)base,
                             (unsigned long long)(base > a->src.size ? 0 : a->src.size - base));
        if (n > a->scratch_size || !a->scratch) {
            nnar_free(ctx, a->scratch);
            a->scratch_size = 0;
            a->scratch = (uint8_t *)nnar_alloc(ctx, (size_t)n);
            if (!a->scratch) return NNAR_OUT_OF_MEMORY;
            a->scratch_size = n;
        }
        while (done < n) {
            size_t want = n - done < (1u << 20) ? (size_t)(n - done) : (1u << 20), got = 0;
            NNAR_TRY(a->src.read_at(ctx, &a->src, base + done, a->scratch + done, want, &got));
            if (got < want)
                return nnar_fail(ctx, NNAR_TRUNCATED, "record body: expected %llu bytes at offset %llu, found %llu",
                                 (unsigned long long)n, (unsigned long long)base, (unsigned long long)(done + got));
            crc = nnar_crc32_cpu(ctx->cpu, crc, a->scratch + done, want);
            done += want;
        }
        *body = a->scratch;
    }
    if (NNAR_CRC_DIFFERS(crc, h->body_crc)) {
        nnar_free(ctx, *owned);
        *owned = NULL;
        return nnar_fail(ctx, NNAR_CHECKSUM, "record body: expected CRC-32 0x%08x, computed 0x%08x", h->body_crc, crc);
    }
    return NNAR_OK;
}

/* "Unknown record types" of §11.1 for an entry read at random. */
static nnar_status check_other(nnar_archive *a, uint32_t i)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_head *h = &a->heads[i];
    const uint8_t *body;
    uint8_t *owned = NULL;
    nnar_sha256 sha;
    if (type_is(h->type, "META") || type_is(h->type, "INDX") || type_is(h->type, "TENS") || type_is(h->type, "MODL") ||
        type_is(h->type, "ALIS") || type_is(h->type, "PTCH") || type_is(h->type, "FILE"))
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "record '%.4s' is not allowed here", (const char *)h->type);
    if (h->flags & NNAR_FLAG_MUST_UNDERSTAND)
        return nnar_fail(ctx, NNAR_UNSUPPORTED_RECORD, "record type '%.4s' is marked must-understand and this reader does "
                         "not know it (a newer nnar wrote it)", (const char *)h->type);
    NNAR_TRY(read_body(a, h, &body, &owned));
    nnar_sha256_init(&sha, ctx->cpu);
    nnar_sha256_update(&sha, body, (size_t)h->body_length);
    nnar_sha256_final(&sha, a->extra[i]);
    nnar_free(ctx, owned);
    return NNAR_OK;
}

static nnar_status load_index(nnar_archive *a)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_index *ix = &a->ix;
    uint64_t size = a->src.size, t_off, index_offset;
    const uint8_t *t;
    uint8_t *owned = NULL;
    uint32_t i, j, k;
    size_t names_total;
    nnar_status s;
    if (size < a->first_offset + NNAR_FRAME_SIZE + NNAR_TRAILER_SIZE) {
        nnar_set_where(ctx, "archive");
        return nnar_fail(ctx, NNAR_TRUNCATED, "expected at least %llu bytes for META, INDX and trailer, found %llu",
                         (unsigned long long)(a->first_offset + NNAR_FRAME_SIZE + NNAR_TRAILER_SIZE), (unsigned long long)size);
    }
    t_off = size - NNAR_TRAILER_SIZE;
    NNAR_TRY(nnar_read_bytes(ctx, &a->src, t_off, NNAR_TRAILER_SIZE, &t, &owned, "trailer"));
    s = nnar_parse_trailer(ctx, t, t_off, &index_offset);
    nnar_free(ctx, owned);
    NNAR_TRY(s);
    if (index_offset < a->first_offset || index_offset > t_off - NNAR_FRAME_SIZE)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "index_offset: expected in [%llu, %llu], found %llu",
                         (unsigned long long)a->first_offset, (unsigned long long)(t_off - NNAR_FRAME_SIZE),
                         (unsigned long long)index_offset);
    NNAR_TRY(nnar_read_head(ctx, &a->src, index_offset, NULL, &a->indx));
    if (!type_is(a->indx.type, "INDX")) {
        char tt[17];
        nnar_type_text(a->indx.type, tt);
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "the trailer points at a '%s' record, expected INDX", tt);
    }
    if (a->indx.body_length || NNAR_HEAD_END(&a->indx) != t_off)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "INDX record: expected an empty body ending at the trailer (%llu), found it "
                         "ending at %llu", (unsigned long long)t_off, (unsigned long long)NNAR_HEAD_END(&a->indx));
    nnar_set_where(ctx, "INDX record at offset %llu", (unsigned long long)index_offset);
    NNAR_TRY(nnar_parse_index(ctx, &a->indx, a->first_offset, ix));
    NNAR_TRY(nnar_index_content(ctx, &a->indx, ix));
    a->heads = (nnar_head *)nnar_alloc_zero(ctx, ((size_t)ix->count + 1) * sizeof *a->heads);
    a->extra = (uint8_t(*)[32])nnar_alloc_zero(ctx, ((size_t)ix->count + 1) * 32);
    a->recs = (nnar_record **)nnar_alloc_zero(ctx, ((size_t)ix->count + 1) * sizeof *a->recs);
    if (!a->heads || !a->extra || !a->recs) return NNAR_OUT_OF_MEMORY;
    names_total = ix->name_count;
    for (i = 0; i < ix->count; i++) {
        const nnar_entry *e = &ix->entries[i];
        if (type_is(e->type, "TENS")) continue;
        NNAR_TRY(head_at(a, e, &a->heads[i]));
        if (type_is(e->type, "ALIS")) {
            nnar_alias *pairs;
            uint32_t n;
            const nnar_entry *prev = &ix->entries[i - 1];
            NNAR_TRY(nnar_parse_aliases(ctx, &a->heads[i], &pairs, &n));
            s = nnar_check_limit(ctx, "tensors and aliases", (uint64_t)names_total + n, ctx->limits.max_tensors, "max_tensors");
            for (j = 0; j < n && s == NNAR_OK; j++) {
                int in_prev = 0;
                for (k = 0; k < prev->name_count && !in_prev; k++)
                    in_prev = ix->name_lens[prev->first_name + k] == pairs[j].target_len &&
                              memcmp(ix->names[prev->first_name + k], pairs[j].target, pairs[j].target_len) == 0;
                if (!in_prev)
                    s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "alias '%.*s': its target '%.*s' is not a tensor of the TENS record "
                                  "just before", (int)pairs[j].name_len, (const char *)pairs[j].name,
                                  (int)pairs[j].target_len, (const char *)pairs[j].target);
                else {
                    int added = nnar_nameset_add(ctx, &ix->seen, pairs[j].name, pairs[j].name_len);
                    if (added < 0) s = NNAR_OUT_OF_MEMORY;
                    else if (!added)
                        s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "duplicate tensor name '%.*s'", (int)pairs[j].name_len,
                                      (const char *)pairs[j].name);
                }
            }
            if (s == NNAR_OK) {
                nnar_alias *grown = (nnar_alias *)nnar_alloc(ctx, ((size_t)a->alias_count + n) * sizeof *grown);
                uint32_t *ge = (uint32_t *)nnar_alloc(ctx, ((size_t)a->alias_count + n) * sizeof *ge);
                if (!grown || !ge) { nnar_free(ctx, grown); nnar_free(ctx, ge); s = NNAR_OUT_OF_MEMORY; }
                else {
                    if (a->alias_count) {
                        memcpy(grown, a->aliases, a->alias_count * sizeof *grown);
                        memcpy(ge, a->alias_entry, a->alias_count * sizeof *ge);
                    }
                    memcpy(grown + a->alias_count, pairs, n * sizeof *pairs);
                    for (j = 0; j < n; j++) ge[a->alias_count + j] = i - 1;
                    nnar_free(ctx, a->aliases);
                    nnar_free(ctx, a->alias_entry);
                    a->aliases = grown;
                    a->alias_entry = ge;
                    a->alias_count += n;
                    names_total += n;
                }
            }
            nnar_free(ctx, pairs);
            NNAR_TRY(s);
        } else if (type_is(e->type, "PTCH")) {
            return nnar_fail(ctx, NNAR_UNSUPPORTED_RECORD, "this file is an nnar patch, not a model archive: apply it to its base");
        } else if (!type_is(e->type, "MODL") && !type_is(e->type, "FILE")) {
            NNAR_TRY(check_other(a, i));
        }
    }
    /* FILE paths, from the descriptors read above: valid and unique (bodies read on demand) */
    a->files = (uint32_t *)nnar_alloc(ctx, ((size_t)ix->count + 1) * sizeof *a->files);
    if (!a->files) return NNAR_OUT_OF_MEMORY;
    {
        nnar_nameset paths;
        nnar_nameset_init(&paths);
        s = NNAR_OK;
        for (i = 0; i < ix->count && s == NNAR_OK; i++) {
            uint32_t p;
            const nnar_head *h = &a->heads[i];
            int added;
            if (!type_is(ix->entries[i].type, "FILE")) continue;
            nnar_set_where(ctx, "FILE record at offset %llu", (unsigned long long)h->offset);
            p = mp_get(&h->doc, 0, "path");
            if (p == MP_NONE) { s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "path: expected a string, found none"); break; }
            if ((s = nnar_check_path(ctx, &h->doc.nodes[p])) != NNAR_OK) break;
            added = nnar_nameset_add(ctx, &paths, h->doc.nodes[p].v.p, h->doc.nodes[p].len);
            if (added < 0) s = NNAR_OUT_OF_MEMORY;
            else if (!added) s = nnar_fail(ctx, NNAR_BAD_LAYOUT, "duplicate file path '%.*s'", (int)h->doc.nodes[p].len,
                                           (const char *)h->doc.nodes[p].v.p);
            else a->files[a->file_count++] = i;
        }
        nnar_nameset_free(ctx, &paths);
        NNAR_TRY(s);
    }
    /* archive order: each TENS record's names, then the aliases of the ALIS record after it */
    a->tensor_count = names_total;
    a->order = (tref *)nnar_alloc(ctx, (names_total + 1) * sizeof *a->order);
    if (!a->order) return NNAR_OUT_OF_MEMORY;
    {
        size_t n = 0;
        uint32_t al = 0;
        for (i = 0; i < ix->count; i++) {
            const nnar_entry *e = &ix->entries[i];
            if (type_is(e->type, "TENS"))
                for (j = 0; j < e->name_count; j++) { a->order[n].entry = i; a->order[n].member = j; a->order[n].alias = -1; n++; }
            else if (type_is(e->type, "ALIS"))
                for (; al < a->alias_count && a->alias_entry[al] == i - 1; al++) {
                    const nnar_entry *te = &ix->entries[i - 1];
                    a->order[n].entry = i - 1;
                    a->order[n].alias = al;
                    a->order[n].member = 0;
                    for (k = 0; k < te->name_count; k++)
                        if (ix->name_lens[te->first_name + k] == a->aliases[al].target_len &&
                            memcmp(ix->names[te->first_name + k], a->aliases[al].target, a->aliases[al].target_len) == 0)
                            a->order[n].member = k;
                    n++;
                }
        }
    }
    return NNAR_OK;
}

static void name_of(const nnar_archive *a, size_t i, const uint8_t **p, uint32_t *n)
{
    const tref *t = &a->order[i];
    const nnar_entry *e = &a->ix.entries[t->entry];
    if (t->alias >= 0) { *p = a->aliases[t->alias].name; *n = a->aliases[t->alias].name_len; }
    else { *p = a->ix.names[e->first_name + t->member]; *n = a->ix.name_lens[e->first_name + t->member]; }
}

static size_t name_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    return (size_t)h;
}

/* names -> archive order, so a lookup by name costs one hash, not a scan */
static nnar_status index_names(nnar_archive *a)
{
    size_t cap = 16, i;
    while (cap < 2 * a->tensor_count) cap *= 2;
    a->by_name = (uint32_t *)nnar_alloc_zero(&a->ctx, cap * sizeof *a->by_name);
    if (!a->by_name) return NNAR_OUT_OF_MEMORY;
    a->by_name_mask = cap - 1;
    for (i = 0; i < a->tensor_count; i++) {
        const uint8_t *p;
        uint32_t n;
        size_t slot;
        name_of(a, i, &p, &n);
        slot = name_hash(p, n) & a->by_name_mask;
        while (a->by_name[slot]) slot = (slot + 1) & a->by_name_mask;
        a->by_name[slot] = (uint32_t)(i + 1);
    }
    return NNAR_OK;
}

static nnar_status open_source(nnar_archive *a)
{
    nnar_ctx *ctx = &a->ctx;
    NNAR_TRY(nnar_read_preamble(ctx, &a->src, a->preamble, &a->minor));
    NNAR_TRY(nnar_read_head(ctx, &a->src, NNAR_PREAMBLE_SIZE, a->preamble, &a->meta));
    NNAR_TRY(nnar_parse_meta(ctx, &a->meta));
    a->first_offset = NNAR_HEAD_END(&a->meta);
    NNAR_TRY(load_index(a));
    return index_names(a);
}

static nnar_archive *new_archive(const nnar_options *o)
{
    nnar_ctx tmp;
    nnar_archive *a;
    nnar_ctx_init(&tmp, o, NULL);
    a = (nnar_archive *)tmp.alloc.malloc(tmp.alloc.user, sizeof *a);
    if (!a) return NULL;
    memset(a, 0, sizeof *a);
    nnar_ctx_init(&a->ctx, o, &a->error);
    return a;
}

static nnar_status open_path(const char *path, const nnar_options *o, nnar_archive **out, nnar_error *err, int map)
{
    nnar_archive *a = new_archive(o);
    nnar_status s;
    *out = NULL;
    if (!a) {
        if (err) { err->status = NNAR_OUT_OF_MEMORY; strcpy(err->message, "out of memory"); }
        return NNAR_OUT_OF_MEMORY;
    }
    s = map ? nnar_io_map(&a->ctx, path, &a->src) : nnar_io_open(&a->ctx, path, &a->src);
    if (s != NNAR_OK) return fail_open(a, s, out, err);
    a->owns_file = 1;
    s = open_source(a);
    if (s != NNAR_OK) return fail_open(a, s, out, err);
    if (err) { err->status = NNAR_OK; err->message[0] = 0; }
    *out = a;
    return NNAR_OK;
}

nnar_status nnar_open_file(const char *path, const nnar_options *o, nnar_archive **out, nnar_error *err)
{
    return open_path(path, o, out, err, 0);
}

nnar_status nnar_open_mapped(const char *path, const nnar_options *o, nnar_archive **out, nnar_error *err)
{
    return open_path(path, o, out, err, 1);
}

nnar_status nnar_open_memory(const void *data, size_t size, const nnar_options *o, nnar_archive **out, nnar_error *err)
{
    nnar_archive *a = new_archive(o);
    nnar_status s;
    *out = NULL;
    if (!a) {
        if (err) { err->status = NNAR_OUT_OF_MEMORY; strcpy(err->message, "out of memory"); }
        return NNAR_OUT_OF_MEMORY;
    }
    nnar_source_memory(&a->src, data, size);
    s = open_source(a);
    if (s != NNAR_OK) return fail_open(a, s, out, err);
    if (err) { err->status = NNAR_OK; err->message[0] = 0; }
    *out = a;
    return NNAR_OK;
}

void nnar_close(nnar_archive *a)
{
    nnar_ctx *ctx;
    uint32_t i;
    nnar_allocator al;
    if (!a) return;
    ctx = &a->ctx;
    for (i = 0; a->heads && i < a->ix.count; i++) nnar_head_free(ctx, &a->heads[i]);
    for (i = 0; a->recs && i < a->ix.count; i++)
        if (a->recs[i]) { nnar_record_free(ctx, a->recs[i]); nnar_free(ctx, a->recs[i]); }
    nnar_free(ctx, a->heads);
    nnar_free(ctx, a->extra);
    nnar_free(ctx, a->recs);
    nnar_free(ctx, a->aliases);
    nnar_free(ctx, a->alias_entry);
    nnar_free(ctx, a->order);
    nnar_free(ctx, a->files);
    nnar_free(ctx, a->scratch);
    nnar_free(ctx, a->by_name);
    nnar_index_free(ctx, &a->ix);
    nnar_head_free(ctx, &a->indx);
    nnar_head_free(ctx, &a->meta);
    if (a->owns_file) nnar_io_close(&a->src);
    nnar_ctx_free(ctx);
    al = ctx->alloc;
    al.free(al.user, a);
}

const nnar_error *nnar_archive_error(const nnar_archive *a) { return &a->error; }
uint16_t nnar_format_minor(const nnar_archive *a) { return a->minor; }

static nnar_text text_of(const mp_doc *doc, uint32_t node)
{
    nnar_text t;
    t.data = node == MP_NONE ? "" : (const char *)doc->nodes[node].v.p;
    t.size = node == MP_NONE ? 0 : doc->nodes[node].len;
    return t;
}

nnar_text nnar_writer_version(const nnar_archive *a) { return text_of(&a->meta.doc, mp_get(&a->meta.doc, 0, "nnar_version")); }
nnar_text nnar_source_format(const nnar_archive *a) { return text_of(&a->meta.doc, mp_get(&a->meta.doc, 0, "source_format")); }

size_t nnar_metadata_count(const nnar_archive *a)
{
    return a->meta.doc.nodes[mp_get(&a->meta.doc, 0, "metadata")].len;
}

nnar_status nnar_metadata_entry(nnar_archive *a, size_t i, nnar_text *key, nnar_text *value)
{
    const mp_doc *doc = &a->meta.doc;
    uint32_t md = mp_get(doc, 0, "metadata"), k = md + 1;
    size_t j;
    if (i >= doc->nodes[md].len) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "metadata entry %zu: out of range", i);
    for (j = 0; j < i; j++) k = doc->nodes[doc->nodes[k].end].end;
    *key = text_of(doc, k);
    *value = text_of(doc, doc->nodes[k].end);
    return NNAR_OK;
}

/* A TENS record's tensors must be the ones its index entry names, in order. */
static nnar_status check_index_names(nnar_archive *a, const nnar_entry *e, const nnar_record *rec)
{
    uint32_t k;
    int same = rec->member_count == e->name_count;
    for (k = 0; same && k < e->name_count; k++)
        same = rec->members[k].name_len == a->ix.name_lens[e->first_name + k] &&
               memcmp(rec->members[k].name, a->ix.names[e->first_name + k], rec->members[k].name_len) == 0;
    return same ? NNAR_OK
                : nnar_fail(&a->ctx, NNAR_BAD_LAYOUT, "the index names other tensors than this record's descriptor");
}

/* The TENS record of entry i, its descriptor checked (TENS steps 1-10, names against the
 * entry), cached. */
static nnar_status record_of(nnar_archive *a, uint32_t i, nnar_record **out)
{
    nnar_ctx *ctx = &a->ctx;
    const nnar_entry *e = &a->ix.entries[i];
    nnar_record *rec;
    nnar_status s;
    if (a->recs[i]) { *out = a->recs[i]; return NNAR_OK; }
    rec = (nnar_record *)nnar_alloc_zero(ctx, sizeof *rec);
    if (!rec) return NNAR_OUT_OF_MEMORY;
    s = head_at(a, e, &rec->head);
    if (s == NNAR_OK) s = nnar_parse_tensor(ctx, rec);
    if (s == NNAR_OK) s = check_index_names(a, e, rec);
    if (s != NNAR_OK) { nnar_record_free(ctx, rec); nnar_free(ctx, rec); return s; }
    a->recs[i] = rec;
    *out = rec;
    return NNAR_OK;
}

size_t nnar_tensor_count(const nnar_archive *a) { return a->tensor_count; }

nnar_status nnar_tensor_at(nnar_archive *a, size_t i, nnar_tensor_info *info)
{
    nnar_record *rec;
    const nnar_member *m;
    const tref *t;
    uint64_t stored = 0, itemsize;
    uint32_t k;
    if (i >= a->tensor_count) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "tensor %zu: out of range", i);
    t = &a->order[i];
    NNAR_TRY(record_of(a, t->entry, &rec));
    m = &rec->members[t->member];
    memset(info, 0, sizeof *info);
    info->name.data = (const char *)m->name;
    info->name.size = m->name_len;
    if (t->alias >= 0) {
        info->alias_of = info->name;
        info->name.data = (const char *)a->aliases[t->alias].name;
        info->name.size = a->aliases[t->alias].name_len;
    }
    info->dtype_name.data = (const char *)rec->dtype_name;
    info->dtype_name.size = rec->dtype_len;
    info->dtype = rec->dtype;
    info->rank = m->rank;
    info->shape = m->shape;
    itemsize = nnar_dtype_size(rec->dtype);
    info->nbytes = m->size * itemsize;
    for (k = 0; k < rec->segment_count; k++) stored += rec->segments[k].length;
    if (t->alias >= 0) stored = 0;
    else if (rec->member_count > 1)   /* a member's share by size (in floating point: the product may pass 2^64) */
        stored = rec->array_size && itemsize ? (uint64_t)((double)stored * (double)info->nbytes /
                                                          (double)(rec->array_size * itemsize)) : 0;
    info->stored_bytes = stored;
    info->group = rec->member_count;
    info->fidelity_count = rec->fidelity == MP_NONE ? 0 : rec->head.doc.nodes[rec->fidelity].len;
    info->digest = rec->digest;
    return NNAR_OK;
}

nnar_status nnar_tensor_find(nnar_archive *a, const char *name, size_t name_size, size_t *index)
{
    size_t slot = name_hash((const uint8_t *)name, name_size) & a->by_name_mask;
    for (; a->by_name[slot]; slot = (slot + 1) & a->by_name_mask) {
        const uint8_t *p;
        uint32_t n;
        name_of(a, a->by_name[slot] - 1, &p, &n);
        if (n == name_size && memcmp(p, name, n) == 0) { *index = a->by_name[slot] - 1; return NNAR_OK; }
    }
    a->ctx.where[0] = 0;
    return nnar_fail(&a->ctx, NNAR_NOT_FOUND, "tensor '%.*s': not in this archive", (int)(name_size > 200 ? 200 : name_size), name);
}

nnar_status nnar_fidelity_entry(nnar_archive *a, size_t i, size_t j, nnar_text *key, nnar_text *value)
{
    nnar_record *rec;
    const mp_doc *doc;
    const mp_node *v;
    uint32_t k;
    size_t q;
    if (i >= a->tensor_count) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "tensor %zu: out of range", i);
    NNAR_TRY(record_of(a, a->order[i].entry, &rec));
    doc = &rec->head.doc;
    if (rec->fidelity == MP_NONE || j >= doc->nodes[rec->fidelity].len)
        return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "fidelity entry %zu: out of range", j);
    for (k = rec->fidelity + 1, q = 0; q < j; q++) k = doc->nodes[doc->nodes[k].end].end;
    *key = text_of(doc, k);
    v = &doc->nodes[doc->nodes[k].end];
    if (v->type == MP_STR) *value = text_of(doc, doc->nodes[k].end);
    else {
        if (v->type == MP_FLOAT) sprintf(a->text, "%.17g", v->v.f);
        else if (v->neg) sprintf(a->text, "%lld", (long long)v->v.i);
        else sprintf(a->text, "%llu", (unsigned long long)v->v.u);
        value->data = a->text;
        value->size = strlen(a->text);
    }
    return NNAR_OK;
}

/* TENS steps 14-18 for a record read at random: the body, its CRC and padding, the dtype, the
 * pipeline, and (verifying) the digest. out holds the record's array. */
/* A raw record: its body read (or, from memory, copied) straight into out in chunks of 1 MiB,
 * each added to the CRC while in cache: one pass over memory, no body buffer. */
static nnar_status decode_raw_in_place(nnar_archive *a, const nnar_record *rec, uint8_t *out)
{
    nnar_ctx *ctx = &a->ctx;
    const nnar_head *h = &rec->head;
    uint64_t base = NNAR_BODY_OFFSET(h), pad = rec->segments[0].offset - base, n = rec->segments[0].length, done = 0;
    uint8_t padding[NNAR_ALIGN];
    const uint8_t *seg[1];
    uint32_t crc;
    size_t got;
    uint64_t k;
    if (pad > sizeof padding || pad + n != h->body_length) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "raw record: inconsistent layout");
    NNAR_TRY(a->src.read_at(ctx, &a->src, base, padding, (size_t)pad, &got));
    if (got < pad) return nnar_fail(ctx, NNAR_TRUNCATED, "record body: expected %llu bytes at offset %llu, found fewer",
                                    (unsigned long long)h->body_length, (unsigned long long)base);
    crc = nnar_crc32(0, padding, (size_t)pad);
    if (a->src.mem) {
        if (base > a->src.size || h->body_length > a->src.size - base)
            return nnar_fail(ctx, NNAR_TRUNCATED, "record body: expected %llu bytes at offset %llu, found fewer",
                             (unsigned long long)h->body_length, (unsigned long long)base);
        crc = nnar_crc32_copy(ctx->cpu, crc, out, a->src.mem + base + pad, (size_t)n);
        done = n;
    }
    while (done < n) {
        size_t want = n - done < (1u << 20) ? (size_t)(n - done) : (1u << 20);
        NNAR_TRY(a->src.read_at(ctx, &a->src, base + pad + done, out + done, want, &got));
        if (got < want)
            return nnar_fail(ctx, NNAR_TRUNCATED, "record body: expected %llu bytes at offset %llu, found %llu",
                             (unsigned long long)h->body_length, (unsigned long long)base, (unsigned long long)(pad + done + got));
        crc = nnar_crc32_cpu(ctx->cpu, crc, out + done, want);
        done += want;
    }
    if (NNAR_CRC_DIFFERS(crc, h->body_crc))
        return nnar_fail(ctx, NNAR_CHECKSUM, "record body: expected CRC-32 0x%08x, computed 0x%08x", h->body_crc, crc);
    for (k = 0; k < pad; k++)
        if (padding[k])
            return nnar_fail(ctx, NNAR_RESERVED_NONZERO, "padding before segment 'data': expected zero bytes, found 0x%02x at "
                             "offset %llu", padding[k], (unsigned long long)(base + k));
    seg[0] = out;
    return nnar_decode_segments(ctx, rec, seg, out);
}

static nnar_status decode_record(nnar_archive *a, const nnar_record *rec, uint8_t *out, int check_digest)
{
    nnar_ctx *ctx = &a->ctx;
    const uint8_t *body;
    uint8_t *owned = NULL;
    nnar_status s;
    if (nnar_record_is_raw(rec)) {
        s = decode_raw_in_place(a, rec, out);
        goto digest;
    }
    NNAR_TRY(read_body(a, &rec->head, &body, &owned));
    s = nnar_check_padding(ctx, rec, body);
    if (s == NNAR_OK && rec->dtype == NNAR_DTYPE_UNKNOWN)
        s = nnar_fail(ctx, NNAR_UNSUPPORTED_DTYPE, "unsupported dtype: expected one of bool, int8..uint64, float16, bfloat16, "
                      "float32, float64, found '%.*s' (a newer nnar wrote it)", (int)rec->dtype_len, (const char *)rec->dtype_name);
    if (s == NNAR_OK) s = nnar_decode_record(ctx, rec, body, out);
    nnar_free(ctx, owned);
digest:
    if (s == NNAR_OK && check_digest) {
        nnar_sha256 sha;
        uint8_t d[32];
        nnar_sha256_init(&sha, ctx->cpu);
        nnar_sha256_update(&sha, out, (size_t)(rec->array_size * nnar_dtype_size(rec->dtype)));
        nnar_sha256_final(&sha, d);
        if (memcmp(d, rec->digest, 32) != 0)
            s = nnar_fail(ctx, NNAR_DIGEST, "decoded array: expected the SHA-256 of its descriptor's digest, computed another");
    }
    return s;
}

nnar_status nnar_read_tensor(nnar_archive *a, size_t i, void *out, size_t out_size, int check_digest)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_record *rec;
    const nnar_member *m;
    uint64_t itemsize, nbytes, total;
    uint8_t *array, empty[8];
    nnar_status s;
    if (i >= a->tensor_count) return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "tensor %zu: out of range", i);
    if (!out) {   /* an empty tensor needs no buffer */
        if (out_size) return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "output buffer: expected one, found NULL");
        out = empty;
    }
    NNAR_TRY(record_of(a, a->order[i].entry, &rec));
    m = &rec->members[a->order[i].member];
    itemsize = nnar_dtype_size(rec->dtype);
    nbytes = m->size * itemsize;
    if (rec->dtype != NNAR_DTYPE_UNKNOWN && out_size != nbytes)
        return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "output buffer: expected %llu bytes, found %zu", (unsigned long long)nbytes,
                         out_size);
    total = rec->array_size * itemsize;
    if (rec->member_count == 1) return decode_record(a, rec, (uint8_t *)out, check_digest);
    array = (uint8_t *)nnar_alloc(ctx, (size_t)total);
    if (!array) return NNAR_OUT_OF_MEMORY;
    s = decode_record(a, rec, array, check_digest);
    if (s == NNAR_OK && nbytes) memcpy(out, array + m->start * itemsize, (size_t)nbytes);
    nnar_free(ctx, array);
    return s;
}

size_t nnar_alias_count(const nnar_archive *a) { return a->alias_count; }

nnar_status nnar_alias_at(nnar_archive *a, size_t i, nnar_text *name, nnar_text *target)
{
    if (i >= a->alias_count) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "alias %zu: out of range", i);
    name->data = (const char *)a->aliases[i].name;
    name->size = a->aliases[i].name_len;
    target->data = (const char *)a->aliases[i].target;
    target->size = a->aliases[i].target_len;
    return NNAR_OK;
}

nnar_status nnar_model_info(nnar_archive *a, int *present, nnar_text *format, uint64_t *length)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_record rec;
    nnar_status s;
    *present = 0;
    if (!a->ix.count || !type_is(a->ix.entries[0].type, "MODL")) return NNAR_OK;
    memset(&rec, 0, sizeof rec);
    NNAR_TRY(head_at(a, &a->ix.entries[0], &rec.head));
    s = nnar_parse_model(ctx, &rec);
    if (s == NNAR_OK) {
        /* the text points into the MODL head kept at open */
        const mp_doc *doc = &a->heads[0].doc;
        *present = 1;
        *format = text_of(doc, mp_get(doc, 0, "format"));
        *length = rec.length;
    }
    nnar_record_free(ctx, &rec);
    return s;
}

/* A parsed MODL or FILE record's bytes, its body read and checked, decoded into *buf: the
 * caller's (of exactly the record's length), or allocated here when *buf is NULL. */
static nnar_status decode_bytes(nnar_archive *a, nnar_record *rec, uint8_t **buf, size_t out_size)
{
    nnar_ctx *ctx = &a->ctx;
    const uint8_t *body;
    uint8_t *owned = NULL;
    nnar_status s = NNAR_OK;
    if (*buf && out_size != rec->length)
        return nnar_fail(ctx, NNAR_INVALID_ARGUMENT, "output buffer: expected %llu bytes, found %zu",
                         (unsigned long long)rec->length, out_size);
    s = read_body(a, &rec->head, &body, &owned);
    if (s == NNAR_OK) s = nnar_check_padding(ctx, rec, body);
    if (s == NNAR_OK && !*buf) {
        *buf = (uint8_t *)nnar_alloc(ctx, (size_t)rec->length);
        if (!*buf) s = NNAR_OUT_OF_MEMORY;
    }
    if (s == NNAR_OK) s = nnar_decode_record(ctx, rec, body, *buf);
    nnar_free(ctx, owned);
    return s;
}

/* MODL steps 2-4: the structure decoded into out (allocated here when *out is NULL). */
static nnar_status read_model(nnar_archive *a, uint8_t **out, uint64_t *length, size_t out_size)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_record rec;
    uint8_t *buf = *out;
    nnar_status s;
    memset(&rec, 0, sizeof rec);
    NNAR_TRY(head_at(a, &a->ix.entries[0], &rec.head));
    nnar_set_where(ctx, "MODL record at offset %llu", (unsigned long long)rec.head.offset);
    s = nnar_parse_model(ctx, &rec);
    if (s == NNAR_OK) s = decode_bytes(a, &rec, &buf, out_size);
    *length = rec.length;
    nnar_record_free(ctx, &rec);
    if (s != NNAR_OK && !*out) nnar_free(ctx, buf);
    else *out = buf;
    return s;
}

nnar_status nnar_read_model(nnar_archive *a, void *out, size_t out_size)
{
    uint8_t *p = (uint8_t *)out;
    uint64_t length;
    if (!a->ix.count || !type_is(a->ix.entries[0].type, "MODL"))
        return nnar_fail(&a->ctx, NNAR_NOT_FOUND, "model structure: this archive has no MODL record");
    if (!out) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "output buffer: expected one, found NULL");
    return read_model(a, &p, &length, out_size);
}

size_t nnar_file_count(const nnar_archive *a) { return a->file_count; }

nnar_status nnar_file_at(nnar_archive *a, size_t i, nnar_text *path, uint64_t *length)
{
    const nnar_head *h;
    uint32_t n;
    if (i >= a->file_count) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "file %zu: out of range", i);
    h = &a->heads[a->files[i]];
    *path = text_of(&h->doc, mp_get(&h->doc, 0, "path"));
    n = mp_get(&h->doc, 0, "length");
    *length = n != MP_NONE && h->doc.nodes[n].type == MP_INT && !h->doc.nodes[n].neg ? h->doc.nodes[n].v.u : 0;
    return NNAR_OK;
}

/* A FILE record (§5.7) decoded and checked against its digest; into out when given (of
 * exactly its length), else into a buffer allocated here. */
static nnar_status read_file_record(nnar_archive *a, uint32_t entry, uint8_t **out, uint64_t *length, size_t out_size)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_record rec;
    uint8_t *buf = *out, d[32];
    nnar_status s;
    memset(&rec, 0, sizeof rec);
    NNAR_TRY(head_at(a, &a->ix.entries[entry], &rec.head));
    nnar_set_where(ctx, "FILE record at offset %llu", (unsigned long long)rec.head.offset);
    s = nnar_parse_file(ctx, &rec);
    if (s == NNAR_OK) s = decode_bytes(a, &rec, &buf, out_size);
    if (s == NNAR_OK) {
        nnar_sha256 sha;
        nnar_sha256_init(&sha, ctx->cpu);
        nnar_sha256_update(&sha, buf, (size_t)rec.length);
        nnar_sha256_final(&sha, d);
        if (memcmp(d, rec.digest, 32) != 0)
            s = nnar_fail(ctx, NNAR_DIGEST, "decoded file '%.*s': expected the SHA-256 of its descriptor's digest, computed "
                          "another", (int)(rec.path_len > 200 ? 200 : rec.path_len), (const char *)rec.path);
    }
    *length = rec.length;
    nnar_record_free(ctx, &rec);
    if (s != NNAR_OK && !*out) nnar_free(ctx, buf);
    else *out = buf;
    return s;
}

nnar_status nnar_read_file(nnar_archive *a, size_t i, void *out, size_t out_size)
{
    uint8_t *p = (uint8_t *)out;
    uint64_t length;
    if (i >= a->file_count) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "file %zu: out of range", i);
    if (!out) return nnar_fail(&a->ctx, NNAR_INVALID_ARGUMENT, "output buffer: expected one, found NULL");
    return read_file_record(a, a->files[i], &p, &length, out_size);
}

nnar_status nnar_verify(nnar_archive *a, uint8_t content[32], int *has_stored)
{
    nnar_ctx *ctx = &a->ctx;
    nnar_index *ix = &a->ix;
    uint8_t (*digests)[32], meta_digest[32], structure[32], computed[32];
    uint32_t i;
    nnar_status s = NNAR_OK;
    nnar_sha256 sha;
    if (has_stored) *has_stored = ix->content != NULL;
    digests = (uint8_t(*)[32])nnar_alloc(ctx, ((size_t)ix->count + 1) * 32);
    if (!digests) return NNAR_OUT_OF_MEMORY;
    for (i = 0; i < ix->count && s == NNAR_OK; i++) {
        nnar_record *rec;
        uint8_t *array;
        if (!type_is(ix->entries[i].type, "TENS")) continue;
        s = record_of(a, i, &rec);
        if (s != NNAR_OK) break;
        nnar_record_digest(&rec->head, NULL, digests[i]);
        array = (uint8_t *)nnar_alloc(ctx, (size_t)(rec->array_size * nnar_dtype_size(rec->dtype)));
        if (!array) { s = NNAR_OUT_OF_MEMORY; break; }
        s = decode_record(a, rec, array, 1);
        nnar_free(ctx, array);
        /* a verified record's descriptor is not needed again: keep memory bounded */
        nnar_record_free(ctx, rec);
        nnar_free(ctx, rec);
        a->recs[i] = NULL;
    }
    if (s == NNAR_OK && ix->count && type_is(ix->entries[0].type, "MODL")) {
        uint8_t *buf = NULL;
        uint64_t length = 0;
        s = read_model(a, &buf, &length, 0);
        if (s == NNAR_OK) {
            nnar_sha256_init(&sha, ctx->cpu);
            nnar_sha256_update(&sha, buf, (size_t)length);
            nnar_sha256_final(&sha, structure);
        }
        nnar_free(ctx, buf);
    }
    for (i = 0; i < a->file_count && s == NNAR_OK; i++) {
        uint8_t *buf = NULL;
        uint64_t length = 0;
        s = read_file_record(a, a->files[i], &buf, &length, 0);
        nnar_free(ctx, buf);
    }
    if (s == NNAR_OK) {
        nnar_record_digest(&a->meta, NULL, meta_digest);
        nnar_sha256_init(&sha, ctx->cpu);
        nnar_sha256_update(&sha, meta_digest, 32);
        for (i = 0; i < ix->count; i++) {
            const uint8_t *t = ix->entries[i].type;
            if (type_is(t, "TENS")) nnar_sha256_update(&sha, digests[i], 32);
            else {
                uint8_t d[32];
                const uint8_t *extra = type_is(t, "MODL") ? structure
                                     : type_is(t, "ALIS") || type_is(t, "PTCH") || type_is(t, "FILE") ? NULL : a->extra[i];
                nnar_record_digest(&a->heads[i], extra, d);
                nnar_sha256_update(&sha, d, 32);
            }
        }
        nnar_sha256_final(&sha, computed);
        if (content) memcpy(content, computed, 32);
        if (ix->content && memcmp(ix->content, computed, 32) != 0) {
            nnar_set_where(ctx, "INDX record at offset %llu", (unsigned long long)a->indx.offset);
            s = nnar_fail(ctx, NNAR_DIGEST, "archive content: the index records one content digest, the records give another "
                          "(records of another archive, or a damaged one)");
        }
    }
    nnar_free(ctx, digests);
    return s;
}

/* ---- for the patcher (patch.md): the base's content digest and its records as stored --------- */

nnar_ctx *nnar_archive_ctx(nnar_archive *a) { return &a->ctx; }
nnar_source *nnar_archive_source(nnar_archive *a) { return &a->src; }
uint32_t nnar_archive_records(const nnar_archive *a) { return a->ix.count; }

/* The content digest (§5.3.1) from the descriptors and the MODL structure alone: no tensor is
 * decoded (patch.md §6 step 2). */
nnar_status nnar_archive_content(nnar_archive *a, uint8_t out[32])
{
    nnar_ctx *ctx = &a->ctx;
    nnar_index *ix = &a->ix;
    nnar_sha256 sha;
    uint8_t d[32], structure[32];
    uint32_t i;
    nnar_record_digest(&a->meta, NULL, d);
    nnar_sha256_init(&sha, ctx->cpu);
    nnar_sha256_update(&sha, d, 32);
    for (i = 0; i < ix->count; i++) {
        const uint8_t *t = ix->entries[i].type;
        if (type_is(t, "TENS")) {
            nnar_head h;
            NNAR_TRY(head_at(a, &ix->entries[i], &h));
            nnar_record_digest(&h, NULL, d);
            nnar_head_free(ctx, &h);
        } else if (type_is(t, "MODL")) {
            uint8_t *buf = NULL;
            uint64_t length = 0;
            nnar_status s = read_model(a, &buf, &length, 0);
            if (s == NNAR_OK) {
                nnar_sha256 m;
                nnar_sha256_init(&m, ctx->cpu);
                nnar_sha256_update(&m, buf, (size_t)length);
                nnar_sha256_final(&m, structure);
            }
            nnar_free(ctx, buf);
            NNAR_TRY(s);
            nnar_record_digest(&a->heads[i], structure, d);
        } else {
            const uint8_t *extra = type_is(t, "ALIS") || type_is(t, "PTCH") || type_is(t, "FILE") ? NULL : a->extra[i];
            nnar_record_digest(&a->heads[i], extra, d);
        }
        nnar_sha256_update(&sha, d, 32);
    }
    nnar_sha256_final(&sha, out);
    return NNAR_OK;
}

/* Record `number` as stored (0: META; i: the i-th index entry), its CRCs and padding checked:
 * its head, its parsed descriptor (TENS, MODL, FILE) and its body (valid until the next call,
 * or until nnar_stored_free). */
nnar_status nnar_archive_stored(nnar_archive *a, uint32_t number, nnar_stored *out)
{
    nnar_ctx *ctx = &a->ctx;
    const nnar_entry *e;
    nnar_record *rec = &out->rec;
    nnar_status s = NNAR_OK;
    memset(out, 0, sizeof *out);
    if (number == 0) {
        out->head = &a->meta;
        return NNAR_OK;
    }
    e = &a->ix.entries[number - 1];
    NNAR_TRY(head_at(a, e, &rec->head));
    out->head = &rec->head;
    out->owns = 1;
    nnar_set_where(ctx, "%.4s record at offset %llu", (const char *)e->type, (unsigned long long)e->offset);
    s = read_body(a, &rec->head, &out->body, &out->owned);
    if (s == NNAR_OK && type_is(e->type, "TENS")) {
        s = nnar_parse_tensor(ctx, rec);
        if (s == NNAR_OK) s = check_index_names(a, e, rec);
    } else if (s == NNAR_OK && type_is(e->type, "MODL")) s = nnar_parse_model(ctx, rec);
    else if (s == NNAR_OK && type_is(e->type, "FILE")) s = nnar_parse_file(ctx, rec);
    if (s == NNAR_OK && rec->segment_count) s = nnar_check_padding(ctx, rec, out->body);
    if (s != NNAR_OK) nnar_stored_free(a, out);
    return s;
}

void nnar_archive_trim(nnar_archive *a)
{
    nnar_free(&a->ctx, a->scratch);
    a->scratch = NULL;
    a->scratch_size = 0;
    nnar_ctx_trim(&a->ctx);
}

void nnar_stored_free(nnar_archive *a, nnar_stored *st)
{
    nnar_free(&a->ctx, st->owned);
    if (st->owns) nnar_record_free(&a->ctx, &st->rec);
    memset(st, 0, sizeof *st);
}
