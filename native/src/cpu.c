/* The CPU features the fast paths may use, found once per handle (nnar_ctx_init): no global
 * state. On x86-64 with gcc or clang, cpuid (and xgetbv for AVX2's registers); elsewhere none,
 * so the portable code runs. NNAR_PORTABLE set in the environment (to anything but "" or "0"),
 * or the build option of the same name, forces the portable code: the tests compare the two. */
#include <stdlib.h>

#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NNAR_PORTABLE)
#include <cpuid.h>

static unsigned detect(void)
{
    unsigned a, b, c, d, f = 0, xcr0_lo = 0, xcr0_hi = 0;
    int osxsave;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if ((c & (1u << 1)) && (c & (1u << 19))) f |= NNAR_CPU_PCLMUL;   /* PCLMULQDQ, SSE4.1 */
    if ((c & (1u << 9)) && (c & (1u << 19))) f |= NNAR_CPU_SSSE3;    /* SSSE3, SSE4.1 */
    osxsave = (c >> 27) & 1;
    if (osxsave) {
        /* xgetbv: whether the system saves the AVX registers (XMM and YMM state) */
        __asm__ __volatile__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if ((b >> 29) & 1 && (f & NNAR_CPU_SSSE3)) f |= NNAR_CPU_SHA;
        if ((b >> 5) & 1 && osxsave && (xcr0_lo & 6u) == 6u) f |= NNAR_CPU_AVX2;
    }
    (void)xcr0_hi;
    return f;
}
#else
static unsigned detect(void) { return 0; }
#endif

unsigned nnar_cpu_features(void)
{
    const char *e = getenv("NNAR_PORTABLE");
    if (e && *e && strcmp(e, "0") != 0) return 0;
    return detect();
}
