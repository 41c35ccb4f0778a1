/* libFuzzer harness for the patcher: the first byte chooses one of five fixed bases (the small
 * bases of spec/vectors/patch, in patch_bases.h: content patches over groups, a folder and
 * k-means, a byte patch over groups; and a small archive of chunked streams, format 1.5), the
 * rest is the patch, read in uneven chunks as from a pipe, the result discarded. The contract:
 * a status, never a crash, a hang, a leak or undefined behaviour. Build: cmake -DNNAR_FUZZ=ON
 * with CC=clang; run: ./fuzz_patch -max_total_time=1800 corpus_patch/ */
#include <stdlib.h>
#include <string.h>

#include "nnar.h"
#include "cursor.h"
#include "patch_bases.h"

static int sink(void *user, const void *buf, size_t size)
{
    unsigned long *total = (unsigned long *)user;
    if (size) *total += ((const unsigned char *)buf)[size - 1];   /* the bytes are there */
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    nnar_limits limits;
    nnar_options opt;
    nnar_error err;
    nnar_patch_info info;
    cursor c;
    unsigned long total = 0;
    unsigned which;
    if (size < 1) return 0;
    which = data[0] % NBASES;
    nnar_limits_default(&limits);
    limits.max_tensor_bytes = 1u << 24;
    limits.max_total_bytes = 1u << 26;
    limits.max_descriptor_bytes = 1u << 20;
    memset(&opt, 0, sizeof opt);
    opt.limits = &limits;
    c.p = data + 1; c.n = size - 1; c.pos = 0;
    nnar_patch_stream(NULL, bases[which], (size_t)base_sizes[which], read_cursor, &c, sink, &total, &opt, &info, &err);
    return 0;
}
