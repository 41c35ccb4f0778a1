/* nnar-native: ls, verify, unpack and patch on top of libnnar, as users exercise the Python tool.
 * Exit status: 0 ok, 1 an nnar error (one line on stderr: "nnar-native: CODE: message"),
 * 2 a usage error. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnar.h"

#if defined(_WIN32)
#include <direct.h>
#define make_dir(p) _mkdir(p)
#else
#include <sys/stat.h>
#define make_dir(p) mkdir((p), 0777)
#endif

static const char *usage =
    "usage: nnar-native ls FILE [--json] [--map]\n"
    "       nnar-native verify FILE [--stream | --map]\n"
    "       nnar-native unpack FILE DIR [--stream | --map]\n"
    "       nnar-native patch BASE PATCH -o OUT [--force]\n"
    "ls lists tensors; verify checks every CRC and digest (at random, or in order with --stream;\n"
    "--map maps the file rather than reading it);\n"
    "unpack writes one .npy per tensor, named by its percent-encoded name ('%MODL.bin': the structure;\n"
    "%FILE/NAME: each FILE record, its path percent-encoded); patch applies PATCH (- for stdin, read once,\n"
    "in order) to BASE and writes the result to OUT once every check passed (--force replaces OUT).\n";

static int map_files;   /* --map: the archive mapped rather than read (at random) */

static nnar_status open_archive(const char *path, nnar_archive **a, nnar_error *err)
{
    return map_files ? nnar_open_mapped(path, NULL, a, err) : nnar_open_file(path, NULL, a, err);
}

static int report(nnar_status s, const char *message)
{
    fprintf(stderr, "nnar-native: %s: %s\n", nnar_status_code(s), message);
    return 1;
}

static void json_text(FILE *f, const char *p, size_t n)
{
    size_t i;
    fputc('"', f);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void hex(FILE *f, const unsigned char *d, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) fprintf(f, "%02x", d[i]);
}

static int cmd_ls(const char *path, int json)
{
    nnar_archive *a;
    nnar_error err;
    nnar_status s = open_archive(path, &a, &err);
    size_t i, j, n;
    int present = 0;
    nnar_text fmt;
    uint64_t mlen = 0;
    if (s != NNAR_OK) return report(s, err.message);
    n = nnar_tensor_count(a);
    if (json) {
        nnar_text k, v;
        printf("{\"format_minor\": %u, \"metadata\": {", (unsigned)nnar_format_minor(a));
        for (i = 0; i < nnar_metadata_count(a); i++) {
            nnar_metadata_entry(a, i, &k, &v);
            if (i) printf(", ");
            json_text(stdout, k.data, k.size);
            printf(": ");
            json_text(stdout, v.data, v.size);
        }
        printf("}, \"source_format\": ");
        v = nnar_source_format(a);
        json_text(stdout, v.data, v.size);
        printf(", \"tensors\": [");
    }
    for (i = 0; i < n; i++) {
        nnar_tensor_info t;
        uint32_t d;
        s = nnar_tensor_at(a, i, &t);
        if (s != NNAR_OK) { if (json) printf("]}\n"); report(s, nnar_archive_error(a)->message); nnar_close(a); return 1; }
        if (json) {
            printf("%s{\"name\": ", i ? ", " : "");
            json_text(stdout, t.name.data, t.name.size);
            printf(", \"dtype\": ");
            json_text(stdout, t.dtype_name.data, t.dtype_name.size);
            printf(", \"shape\": [");
            for (d = 0; d < t.rank; d++) printf("%s%llu", d ? ", " : "", (unsigned long long)t.shape[d]);
            printf("], \"nbytes\": %llu, \"stored_bytes\": %llu, \"group\": %u, \"digest\": \"",
                   (unsigned long long)t.nbytes, (unsigned long long)t.stored_bytes, (unsigned)t.group);
            hex(stdout, t.digest, 32);
            printf("\"");
            if (t.alias_of.size) { printf(", \"alias_of\": "); json_text(stdout, t.alias_of.data, t.alias_of.size); }
            if (t.fidelity_count) {
                printf(", \"fidelity\": {");
                for (j = 0; j < t.fidelity_count; j++) {
                    nnar_text k, v;
                    nnar_fidelity_entry(a, i, j, &k, &v);
                    printf("%s", j ? ", " : "");
                    json_text(stdout, k.data, k.size);
                    printf(": ");
                    json_text(stdout, v.data, v.size);
                }
                printf("}");
            }
            printf("}");
        } else {
            printf("%-40.*s %-9.*s [", (int)t.name.size, t.name.data, (int)t.dtype_name.size, t.dtype_name.data);
            for (d = 0; d < t.rank; d++) printf("%s%llu", d ? ", " : "", (unsigned long long)t.shape[d]);
            printf("] %llu -> %llu bytes", (unsigned long long)t.nbytes, (unsigned long long)t.stored_bytes);
            if (t.alias_of.size) printf(" = %.*s", (int)t.alias_of.size, t.alias_of.data);
            for (j = 0; j < t.fidelity_count; j++) {
                nnar_text k, v;
                nnar_fidelity_entry(a, i, j, &k, &v);
                printf(" %.*s=%.*s", (int)k.size, k.data, (int)v.size, v.data);
            }
            printf("\n");
        }
    }
    s = nnar_model_info(a, &present, &fmt, &mlen);
    if (json) {
        printf("], \"files\": [");
        for (i = 0; i < nnar_file_count(a); i++) {
            nnar_text p;
            uint64_t len = 0;
            nnar_file_at(a, i, &p, &len);
            printf("%s{\"path\": ", i ? ", " : "");
            json_text(stdout, p.data, p.size);
            printf(", \"length\": %llu}", (unsigned long long)len);
        }
        printf("]");
        if (s == NNAR_OK && present) {
            printf(", \"model\": {\"format\": ");
            json_text(stdout, fmt.data, fmt.size);
            printf(", \"length\": %llu}", (unsigned long long)mlen);
        }
        printf("}\n");
    } else if (s == NNAR_OK && present) {
        printf("model structure: %.*s, %llu bytes\n", (int)fmt.size, fmt.data, (unsigned long long)mlen);
    }
    if (s != NNAR_OK) { report(s, nnar_archive_error(a)->message); nnar_close(a); return 1; }
    nnar_close(a);
    return 0;
}

static long long read_file(void *user, void *buf, size_t size)
{
    FILE *f = (FILE *)user;
    size_t n = fread(buf, 1, size, f);
    if (n < size && ferror(f)) return -1;
    return (long long)n;
}

static int cmd_verify(const char *path, int stream)
{
    unsigned char content[32];
    nnar_error err;
    nnar_status s;
    int stored = 0;
    if (stream) {
        nnar_stream_visitor v;
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (!f) { fprintf(stderr, "nnar-native: io-error: cannot open '%s': %s\n", path, strerror(errno)); return 1; }
        memset(&v, 0, sizeof v);
        v.check_digests = 1;
        s = nnar_read_stream(read_file, f, NULL, &v, content, &err);
        if (f != stdin) fclose(f);
        if (s != NNAR_OK) return report(s, err.message);
    } else {
        nnar_archive *a;
        s = open_archive(path, &a, &err);
        if (s != NNAR_OK) return report(s, err.message);
        s = nnar_verify(a, content, &stored);
        if (s != NNAR_OK) { report(s, nnar_archive_error(a)->message); nnar_close(a); return 1; }
        nnar_close(a);
    }
    printf("ok content ");
    hex(stdout, content, 32);
    printf("\n");
    return 0;
}

/* ---- unpack: .npy files ---------------------------------------------------------------------- */

static const char *npy_descr(nnar_dtype d)
{
    switch (d) {
    case NNAR_BOOL: return "|b1";
    case NNAR_INT8: return "|i1";
    case NNAR_INT16: return "<i2";
    case NNAR_INT32: return "<i4";
    case NNAR_INT64: return "<i8";
    case NNAR_UINT8: return "|u1";
    case NNAR_UINT16: return "<u2";
    case NNAR_UINT32: return "<u4";
    case NNAR_UINT64: return "<u8";
    case NNAR_FLOAT16: return "<f2";
    case NNAR_BFLOAT16: return "<u2";   /* bit patterns, as the vectors' .npz hold them */
    case NNAR_FLOAT32: return "<f4";
    case NNAR_FLOAT64: return "<f8";
    case NNAR_FLOAT8_E4M3FN: case NNAR_FLOAT8_E5M2: return "|u1";   /* bit patterns */
    default: return "|V1";
    }
}

/* the file name of a tensor: its name percent-encoded (names are opaque, never paths) */
static int file_name(char *out, size_t cap, const char *dir, const char *name, size_t n)
{
    size_t k, i;
    int w = snprintf(out, cap, "%s/", dir);
    if (w < 0 || (size_t)w >= cap) return -1;
    k = (size_t)w;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                    (c == '.' && i > 0);
        if (k + 8 >= cap) return -1;
        if (plain) out[k++] = (char)c;
        else k += (size_t)sprintf(out + k, "%%%02X", c);
    }
    if (k + 5 >= cap) return -1;
    strcpy(out + k, ".npy");
    return 0;
}

static int write_npy(const char *dir, const nnar_tensor_info *t, const void *data)
{
    char path[4096], header[2048];
    int h = 0;
    uint32_t d;
    size_t total;
    FILE *f;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    if (file_name(path, sizeof path, dir, t->name.data, t->name.size) != 0) {
        fprintf(stderr, "nnar-native: io-error: a tensor name is too long for a file name\n");
        return 1;
    }
    h = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (", npy_descr(t->dtype));
    for (d = 0; d < t->rank && h < 1900; d++) h += snprintf(header + h, sizeof header - (size_t)h, "%llu,%s",
                                                             (unsigned long long)t->shape[d], d + 1 < t->rank ? " " : "");
    h += snprintf(header + h, sizeof header - (size_t)h, "), }");
    total = 10 + (size_t)h + 1;
    while (total % 64) { header[h++] = ' '; total++; }
    header[h++] = '\n';
    pre[8] = (unsigned char)(h & 0xFF);
    pre[9] = (unsigned char)(h >> 8);
    f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "nnar-native: io-error: cannot write '%s': %s\n", path, strerror(errno)); return 1; }
    if (fwrite(pre, 1, 10, f) != 10 || fwrite(header, 1, (size_t)h, f) != (size_t)h ||
        (t->nbytes && fwrite(data, 1, (size_t)t->nbytes, f) != t->nbytes) || fclose(f) != 0) {
        fprintf(stderr, "nnar-native: io-error: cannot write '%s'\n", path);
        return 1;
    }
    return 0;
}

static int write_model(const char *dir, const void *data, size_t size)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%%MODL.bin", dir);
    f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "nnar-native: io-error: cannot write '%s'\n", path);
        return 1;
    }
    return 0;
}

/* a FILE record's bytes, as DIR/%FILE/<percent-encoded path> (never joined as a path) */
static int write_file(const char *dir, nnar_text path, const void *data, size_t size)
{
    char sub[4096], full[8192];
    FILE *f;
    snprintf(sub, sizeof sub, "%s/%%FILE", dir);
    if (make_dir(sub) != 0 && errno != EEXIST) {
        fprintf(stderr, "nnar-native: io-error: cannot make '%s': %s\n", sub, strerror(errno));
        return 1;
    }
    if (file_name(full, sizeof full, sub, path.data, path.size) != 0) {
        fprintf(stderr, "nnar-native: io-error: a file path is too long\n");
        return 1;
    }
    full[strlen(full) - 4] = 0;   /* no .npy */
    f = fopen(full, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "nnar-native: io-error: cannot write '%s' (does %s exist?)\n", full, sub);
        return 1;
    }
    return 0;
}

typedef struct unpack_state { const char *dir; int failed; } unpack_state;

static int on_tensor(void *user, const nnar_tensor_info *t, const void *data)
{
    unpack_state *u = (unpack_state *)user;
    if (write_npy(u->dir, t, data)) { u->failed = 1; return 1; }
    return 0;
}

static int on_model(void *user, nnar_text format, const void *data, size_t size)
{
    unpack_state *u = (unpack_state *)user;
    (void)format;
    if (write_model(u->dir, data, size)) { u->failed = 1; return 1; }
    return 0;
}

static int on_file(void *user, nnar_text path, const void *data, size_t size)
{
    unpack_state *u = (unpack_state *)user;
    if (write_file(u->dir, path, data, size)) { u->failed = 1; return 1; }
    return 0;
}

static int cmd_unpack(const char *path, const char *dir, int stream)
{
    nnar_error err;
    nnar_status s;
    if (stream) {
        nnar_stream_visitor v;
        unpack_state u;
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (!f) { fprintf(stderr, "nnar-native: io-error: cannot open '%s': %s\n", path, strerror(errno)); return 1; }
        u.dir = dir;
        u.failed = 0;
        memset(&v, 0, sizeof v);
        v.tensor = on_tensor;
        v.model = on_model;
        v.file = on_file;
        v.user = &u;
        v.check_digests = 1;
        s = nnar_read_stream(read_file, f, NULL, &v, NULL, &err);
        if (f != stdin) fclose(f);
        if (u.failed) return 1;
        if (s != NNAR_OK) return report(s, err.message);
    } else {
        nnar_archive *a;
        size_t i;
        int present = 0;
        nnar_text fmt;
        uint64_t mlen = 0;
        s = open_archive(path, &a, &err);
        if (s != NNAR_OK) return report(s, err.message);
        for (i = 0; i < nnar_tensor_count(a); i++) {
            nnar_tensor_info t;
            void *buf;
            s = nnar_tensor_at(a, i, &t);
            if (s != NNAR_OK) break;
            buf = malloc(t.nbytes ? (size_t)t.nbytes : 1);
            if (!buf) { fprintf(stderr, "nnar-native: out-of-memory\n"); nnar_close(a); return 1; }
            s = nnar_read_tensor(a, i, buf, (size_t)t.nbytes, 1);
            if (s == NNAR_OK && write_npy(dir, &t, buf)) { free(buf); nnar_close(a); return 1; }
            free(buf);
            if (s != NNAR_OK) break;
        }
        if (s == NNAR_OK) s = nnar_model_info(a, &present, &fmt, &mlen);
        if (s == NNAR_OK && present) {
            void *buf = malloc(mlen ? (size_t)mlen : 1);
            if (!buf) { fprintf(stderr, "nnar-native: out-of-memory\n"); nnar_close(a); return 1; }
            s = nnar_read_model(a, buf, (size_t)mlen);
            if (s == NNAR_OK && write_model(dir, buf, (size_t)mlen)) { free(buf); nnar_close(a); return 1; }
            free(buf);
        }
        for (i = 0; s == NNAR_OK && i < nnar_file_count(a); i++) {
            nnar_text p;
            uint64_t len = 0;
            void *buf;
            nnar_file_at(a, i, &p, &len);
            buf = malloc(len ? (size_t)len : 1);
            if (!buf) { fprintf(stderr, "nnar-native: out-of-memory\n"); nnar_close(a); return 1; }
            s = nnar_read_file(a, i, buf, (size_t)len);
            if (s == NNAR_OK && write_file(dir, p, buf, (size_t)len)) { free(buf); nnar_close(a); return 1; }
            free(buf);
        }
        if (s != NNAR_OK) { report(s, nnar_archive_error(a)->message); nnar_close(a); return 1; }
        nnar_close(a);
    }
    return 0;
}

static int cmd_patch(const char *base, const char *patch, const char *out, int force)
{
    nnar_error err;
    nnar_patch_info info;
    nnar_status s;
    FILE *f = strcmp(patch, "-") == 0 ? stdin : fopen(patch, "rb");
    if (!f) { fprintf(stderr, "nnar-native: io-error: cannot open '%s': %s\n", patch, strerror(errno)); return 1; }
    s = nnar_patch_file(base, read_file, f, out, force, NULL, &info, &err);
    if (f != stdin) fclose(f);
    if (s != NNAR_OK) return report(s, err.message);
    printf("wrote %s: %llu bytes, %u records", out, (unsigned long long)info.result_length, (unsigned)info.records);
    if (info.content) {
        printf(", content ");
        hex(stdout, info.result_content, 32);
    }
    printf(" (%s patch)\n", info.content ? "content" : "byte");
    return 0;
}

int main(int argc, char **argv)
{
    int i, json = 0, stream = 0, force = 0, npos = 0;
    const char *pos[3] = {NULL, NULL, NULL}, *output = NULL;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--stream") == 0) stream = 1;
        else if (strcmp(argv[i], "--force") == 0) force = 1;
        else if (strcmp(argv[i], "--map") == 0) map_files = 1;
        else if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) && i + 1 < argc) output = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { fputs(usage, stdout); return 0; }
        else if (npos < 3) pos[npos++] = argv[i];
        else { fputs(usage, stderr); return 2; }
    }
    if (npos == 2 && strcmp(pos[0], "ls") == 0) return cmd_ls(pos[1], json);
    if (npos == 2 && strcmp(pos[0], "verify") == 0) return cmd_verify(pos[1], stream);
    if (npos == 3 && strcmp(pos[0], "unpack") == 0) return cmd_unpack(pos[1], pos[2], stream);
    if (npos == 3 && strcmp(pos[0], "patch") == 0 && output) return cmd_patch(pos[1], pos[2], output, force);
    fputs(usage, stderr);
    return 2;
}
