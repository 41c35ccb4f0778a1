/* libFuzzer harness: any bytes, opened at random (list, read every tensor, the structure and the
 * files, verify) and read in order. The contract: a status, never a crash, a hang, a leak or
 * undefined behaviour. Build: cmake -DNNAR_FUZZ=ON with CC=clang; run:
 * ./fuzz_open -max_total_time=1800 corpus/ */
#include <stdlib.h>
#include <string.h>

#include "nnar.h"
#include "cursor.h"


static int on_tensor(void *user, const nnar_tensor_info *info, const void *data)
{
    size_t *total = (size_t *)user;
    if (info->nbytes) *total += ((const unsigned char *)data)[info->nbytes - 1];   /* the last byte is there */
    *total += info->name.size ? (unsigned char)info->name.data[info->name.size - 1] : 0;
    return 0;
}

static int on_text(void *user, nnar_text key, nnar_text value)
{
    size_t *total = (size_t *)user;
    /* touch every byte: a text handed out must lie inside the input */
    size_t i;
    for (i = 0; i < key.size; i++) *total += (unsigned char)key.data[i];
    for (i = 0; i < value.size; i++) *total += (unsigned char)value.data[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    nnar_archive *a;
    nnar_error err;
    nnar_limits limits;
    nnar_options opt;
    nnar_stream_visitor v;
    cursor c;
    size_t total = 0;
    unsigned char content[32];
    /* small limits: a hostile declaration must fail on a limit, not exhaust the fuzzer */
    nnar_limits_default(&limits);
    limits.max_tensor_bytes = 1u << 24;
    limits.max_total_bytes = 1u << 26;
    limits.max_descriptor_bytes = 1u << 20;
    memset(&opt, 0, sizeof opt);
    opt.limits = &limits;
    if (nnar_open_memory(data, size, &opt, &a, &err) == NNAR_OK) {
        size_t i, n = nnar_tensor_count(a);
        int present = 0;
        nnar_text fmt;
        unsigned long long len = 0;
        uint64_t mlen = 0;
        for (i = 0; i < n; i++) {
            nnar_tensor_info t;
            if (nnar_tensor_at(a, i, &t) == NNAR_OK && t.nbytes <= (1u << 24)) {
                void *buf = malloc(t.nbytes ? (size_t)t.nbytes : 1);
                if (buf) nnar_read_tensor(a, i, buf, (size_t)t.nbytes, 1);
                free(buf);
            }
        }
        if (nnar_model_info(a, &present, &fmt, &mlen) == NNAR_OK && present) {
            void *buf = malloc(mlen ? (size_t)mlen : 1);
            if (buf) nnar_read_model(a, buf, (size_t)mlen);
            free(buf);
        }
        for (i = 0; i < nnar_file_count(a); i++) {
            nnar_text p;
            uint64_t fl = 0;
            if (nnar_file_at(a, i, &p, &fl) == NNAR_OK && fl <= (1u << 24)) {
                void *buf = malloc(fl ? (size_t)fl : 1);
                if (buf) nnar_read_file(a, i, buf, (size_t)fl);
                free(buf);
            }
        }
        (void)len;
        nnar_verify(a, content, NULL);
        nnar_close(a);
    }
    c.p = data; c.n = size; c.pos = 0;
    memset(&v, 0, sizeof v);
    v.tensor = on_tensor;
    v.metadata = on_text;
    v.user = &total;
    v.check_digests = 1;
    nnar_read_stream(read_cursor, &c, &opt, &v, content, &err);
    return 0;
}
