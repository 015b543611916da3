// Numeric kernels on the data path (see include/kernels.h).
#include "kernels.h"

#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// MARK: CRC-32C (Castagnoli), the end-to-end check of a tensor stream

/// The reflected CRC-32C polynomial (iSCSI, RFC 3720).
#define FED_CRC32C_POLY 0x82f63b78u
/// Block sizes of the three-way parallel hardware CRC (powers of two).
#define FED_CRC32C_LONG 8192
#define FED_CRC32C_SHORT 256

static uint32_t fed_crc32c_table[256];
static uint32_t fed_crc32c_long[4][256];
static uint32_t fed_crc32c_short[4][256];
/// Carry-less multiplication constants that move a 128-bit block forward by 2048, 512, 384, 256
/// and 128 bits (low, high qword each: see fed_crc32c_fold_constants).
enum { FED_FOLD_2048, FED_FOLD_512, FED_FOLD_384, FED_FOLD_256, FED_FOLD_128, FED_FOLD_COUNT };
static uint64_t fed_crc32c_fold[FED_FOLD_COUNT][2];
static pthread_once_t fed_crc32c_once = PTHREAD_ONCE_INIT;

/// GF(2) matrix (32 rows) times a vector.
static inline uint32_t fed_gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static inline void fed_gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = fed_gf2_times(mat, mat[n]);
}

/// The operator that appends `len` zero bytes to a CRC (`len` a power of two).
/// After Mark Adler's crc32c.c (zlib licence).
static void fed_crc32c_zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    odd[0] = FED_CRC32C_POLY;
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    fed_gf2_square(even, odd);  // two zero bits
    fed_gf2_square(odd, even);  // four zero bits
    do {
        fed_gf2_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        fed_gf2_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof(odd));
}

static void fed_crc32c_zeros(uint32_t zeros[][256], size_t len) {
    uint32_t op[32];
    fed_crc32c_zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = fed_gf2_times(op, n);
        zeros[1][n] = fed_gf2_times(op, n << 8);
        zeros[2][n] = fed_gf2_times(op, n << 16);
        zeros[3][n] = fed_gf2_times(op, n << 24);
    }
}

static inline uint32_t fed_crc32c_shift(uint32_t zeros[][256], uint32_t crc) {
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

/// x^n mod P for the CRC-32C polynomial P (not reflected: bit k is the coefficient of x^k).
static uint64_t fed_crc32c_xpow(unsigned n) {
    uint64_t r = 1;
    while (n--) {
        r <<= 1;
        if (r & 0x100000000ull) r ^= 0x11edc6f41ull;
    }
    return r;
}

static uint64_t fed_reverse64(uint64_t v) {
    uint64_t r = 0;
    for (int i = 0; i < 64; i++)
        if (v >> i & 1) r |= 1ull << (63 - i);
    return r;
}

/// Folding a 128-bit block A = A_hi·x^64 + A_lo (message order; in memory the first qword is
/// A_hi, bit-reflected) forward by `bits` onto a later block adds A·x^bits ≡ A_hi·(x^(bits+64) mod P)
/// + A_lo·(x^bits mod P), each product under 96 bits. In the reflected domain a carry-less product
/// comes out multiplied by x once more, hence the exponents one lower.
static void fed_crc32c_fold_constants(uint64_t k[2], unsigned bits) {
    k[0] = fed_reverse64(fed_crc32c_xpow(bits + 63));
    k[1] = fed_reverse64(fed_crc32c_xpow(bits - 1));
}

static void fed_crc32c_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ FED_CRC32C_POLY : crc >> 1;
        fed_crc32c_table[n] = crc;
    }
    fed_crc32c_zeros(fed_crc32c_long, FED_CRC32C_LONG);
    fed_crc32c_zeros(fed_crc32c_short, FED_CRC32C_SHORT);
    const unsigned distances[FED_FOLD_COUNT] = {2048, 512, 384, 256, 128};
    for (int i = 0; i < FED_FOLD_COUNT; i++) fed_crc32c_fold_constants(fed_crc32c_fold[i], distances[i]);
}

uint32_t fed_crc32c_portable(uint32_t crc, const void *buffer, size_t length) {
    pthread_once(&fed_crc32c_once, fed_crc32c_init);
    const unsigned char *next = (const unsigned char *)buffer;
    uint32_t c = crc ^ 0xffffffffu;
    while (length--) c = fed_crc32c_table[(c ^ *next++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

#if defined(__x86_64__)
/// Runs the crc32 instruction on three independent streams of `block` bytes each, as long as
/// 3 × `block` bytes remain, joining them with the zeros operator for `block` bytes.
__attribute__((target("sse4.2"))) static inline uint64_t fed_crc32c_sse42_blocks(
    uint64_t crc0, const unsigned char **cursor, size_t *remaining, size_t block, uint32_t zeros[][256]) {
    const unsigned char *next = *cursor;
    size_t length = *remaining;
    while (length >= 3 * block) {
        uint64_t crc1 = 0, crc2 = 0;
        const unsigned char *end = next + block;
        do {
            uint64_t a, b, c;
            memcpy(&a, next, 8);
            memcpy(&b, next + block, 8);
            memcpy(&c, next + 2 * block, 8);
            crc0 = _mm_crc32_u64(crc0, a);
            crc1 = _mm_crc32_u64(crc1, b);
            crc2 = _mm_crc32_u64(crc2, c);
            next += 8;
        } while (next < end);
        crc0 = fed_crc32c_shift(zeros, (uint32_t)crc0) ^ (uint32_t)crc1;
        crc0 = fed_crc32c_shift(zeros, (uint32_t)crc0) ^ (uint32_t)crc2;
        next += 2 * block;
        length -= 3 * block;
    }
    *cursor = next;
    *remaining = length;
    return crc0;
}

/// The crc32 instruction 8 bytes at a time, then byte by byte (on the internal, inverted state).
__attribute__((target("sse4.2"))) static inline uint64_t fed_crc32c_sse42_tail(uint64_t state, const unsigned char *next, size_t length) {
    while (length >= 8) {
        uint64_t a;
        memcpy(&a, next, 8);
        state = _mm_crc32_u64(state, a);
        next += 8;
        length -= 8;
    }
    while (length--) state = _mm_crc32_u8((uint32_t)state, *next++);
    return state;
}

/// SSE 4.2's crc32 instruction on three independent streams, joined with the zeros operators.
__attribute__((target("sse4.2"))) static uint32_t fed_crc32c_sse42(uint32_t crc, const void *buffer, size_t length) {
    pthread_once(&fed_crc32c_once, fed_crc32c_init);
    const unsigned char *next = (const unsigned char *)buffer;
    uint64_t crc0 = crc ^ 0xffffffffu;
    while (length && ((uintptr_t)next & 7) != 0) {
        crc0 = _mm_crc32_u8((uint32_t)crc0, *next++);
        length--;
    }
    crc0 = fed_crc32c_sse42_blocks(crc0, &next, &length, FED_CRC32C_LONG, fed_crc32c_long);
    crc0 = fed_crc32c_sse42_blocks(crc0, &next, &length, FED_CRC32C_SHORT, fed_crc32c_short);
    return (uint32_t)fed_crc32c_sse42_tail(crc0, next, length) ^ 0xffffffffu;
}

#define FED_VPCLMUL_TARGET __attribute__((target("avx512f,avx512bw,vpclmulqdq,pclmul,sse4.2")))

FED_VPCLMUL_TARGET static inline __m128i fed_fold_k(int which) {
    return _mm_set_epi64x((long long)fed_crc32c_fold[which][1], (long long)fed_crc32c_fold[which][0]);
}

/// Four 512-bit accumulators folded forward by 2048 bits per 256 bytes (VPCLMULQDQ), then
/// reduced to one 128-bit block whose CRC the crc32 instruction finishes (Intel's "Fast CRC
/// computation using PCLMULQDQ", Gopal et al. 2009, widened to AVX-512). When `any_nonfinite` is
/// given, every 64-byte block read is also checked for a Float32 NaN or infinity (the buffer then
/// starts on a value): the check rides on loads the CRC makes anyway. Needs length ≥ 256.
FED_VPCLMUL_TARGET static uint32_t fed_crc32c_vpclmul_main(
    uint32_t crc, const unsigned char *p, size_t length, int *any_nonfinite) {
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
#define FED_CHECK(v) \
    if (any_nonfinite) bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, exponent), exponent)
#define FED_FOLD512(x, k, next) \
    _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), next, 0x96)
#define FED_FOLD128(x, k, next) \
    _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next)
    const __m512i k2048 = _mm512_broadcast_i32x4(fed_fold_k(FED_FOLD_2048));
    const __m512i k512 = _mm512_broadcast_i32x4(fed_fold_k(FED_FOLD_512));
    __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64);
    __m512i x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
    FED_CHECK(x0); FED_CHECK(x1); FED_CHECK(x2); FED_CHECK(x3);
    // The running CRC enters as the first four bytes' XOR (a CRC is linear).
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)(crc ^ 0xffffffffu))));
    p += 256;
    length -= 256;
    while (length >= 256) {
        __m512i y0 = _mm512_loadu_si512(p), y1 = _mm512_loadu_si512(p + 64);
        __m512i y2 = _mm512_loadu_si512(p + 128), y3 = _mm512_loadu_si512(p + 192);
        FED_CHECK(y0); FED_CHECK(y1); FED_CHECK(y2); FED_CHECK(y3);
        x0 = FED_FOLD512(x0, k2048, y0);
        x1 = FED_FOLD512(x1, k2048, y1);
        x2 = FED_FOLD512(x2, k2048, y2);
        x3 = FED_FOLD512(x3, k2048, y3);
        p += 256;
        length -= 256;
    }
    x1 = FED_FOLD512(x0, k512, x1);
    x2 = FED_FOLD512(x1, k512, x2);
    x3 = FED_FOLD512(x2, k512, x3);
    while (length >= 64) {
        __m512i y = _mm512_loadu_si512(p);
        FED_CHECK(y);
        x3 = FED_FOLD512(x3, k512, y);
        p += 64;
        length -= 64;
    }
    __m128i r = FED_FOLD128(_mm512_extracti32x4_epi32(x3, 0), fed_fold_k(FED_FOLD_384),
                FED_FOLD128(_mm512_extracti32x4_epi32(x3, 1), fed_fold_k(FED_FOLD_256),
                FED_FOLD128(_mm512_extracti32x4_epi32(x3, 2), fed_fold_k(FED_FOLD_128), _mm512_extracti32x4_epi32(x3, 3))));
    const __m128i k128 = fed_fold_k(FED_FOLD_128);
    while (length >= 16) {
        __m128i y = _mm_loadu_si128((const __m128i *)p);
        if (any_nonfinite) bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_zextsi128_si512(y), exponent), exponent);
        r = FED_FOLD128(r, k128, y);
        p += 16;
        length -= 16;
    }
    uint64_t state = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(r));
    state = _mm_crc32_u64(state, (uint64_t)_mm_extract_epi64(r, 1));
    state = fed_crc32c_sse42_tail(state, p, length);
#undef FED_CHECK
#undef FED_FOLD512
#undef FED_FOLD128
    if (any_nonfinite) *any_nonfinite = bad != 0;
    return (uint32_t)state ^ 0xffffffffu;
}

FED_VPCLMUL_TARGET static uint32_t fed_crc32c_vpclmul(uint32_t crc, const void *buffer, size_t length) {
    pthread_once(&fed_crc32c_once, fed_crc32c_init);
    // Below a few hundred bytes the crc32 instruction alone is as fast.
    if (length < 512) return fed_crc32c_sse42(crc, buffer, length);
    return fed_crc32c_vpclmul_main(crc, (const unsigned char *)buffer, length, NULL);
}

static int fed_has_vpclmul(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("vpclmulqdq")
        && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.2");
}
#endif

int fed_crc32c_available(int implementation) {
    switch (implementation) {
    case FED_CRC32C_PORTABLE: return 1;
#if defined(__x86_64__)
    case FED_CRC32C_SSE42: return __builtin_cpu_supports("sse4.2");
    case FED_CRC32C_VPCLMULQDQ: return fed_has_vpclmul();
#endif
    default: return 0;
    }
}

int fed_crc32c_best(void) {
    if (fed_crc32c_available(FED_CRC32C_VPCLMULQDQ)) return FED_CRC32C_VPCLMULQDQ;
    if (fed_crc32c_available(FED_CRC32C_SSE42)) return FED_CRC32C_SSE42;
    return FED_CRC32C_PORTABLE;
}

uint32_t fed_crc32c_using(int implementation, uint32_t crc, const void *buffer, size_t length) {
    if (!fed_crc32c_available(implementation)) implementation = FED_CRC32C_PORTABLE;
    switch (implementation) {
#if defined(__x86_64__)
    case FED_CRC32C_SSE42: return fed_crc32c_sse42(crc, buffer, length);
    case FED_CRC32C_VPCLMULQDQ: return fed_crc32c_vpclmul(crc, buffer, length);
#endif
    default: return fed_crc32c_portable(crc, buffer, length);
    }
}

/// fed_crc32c_best(), asked of the CPU once.
static int fed_crc32c_chosen(void) {
    static int best = -1;
    int chosen = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (chosen < 0) {
        chosen = fed_crc32c_best();
        __atomic_store_n(&best, chosen, __ATOMIC_RELAXED);
    }
    return chosen;
}

uint32_t fed_crc32c(uint32_t crc, const void *buffer, size_t length) {
    return fed_crc32c_using(fed_crc32c_chosen(), crc, buffer, length);
}

uint32_t fed_crc32c_f32(uint32_t crc, const void *buffer, size_t count, long *first_nonfinite) {
    size_t length = count * 4;
#if defined(__x86_64__)
    if (length >= 512 && fed_crc32c_chosen() == FED_CRC32C_VPCLMULQDQ) {
        pthread_once(&fed_crc32c_once, fed_crc32c_init);
        int any = 0;
        uint32_t result = fed_crc32c_vpclmul_main(crc, (const unsigned char *)buffer, length, &any);
        // The last values past the last 16-byte block were not checked; a hit is located exactly.
        size_t checked = length & ~(size_t)15;
        long tail = fed_first_nonfinite_f32((const unsigned char *)buffer + checked, count - checked / 4);
        *first_nonfinite = any ? fed_first_nonfinite_f32(buffer, count) : (tail < 0 ? -1 : (long)(checked / 4) + tail);
        return result;
    }
#endif
    *first_nonfinite = fed_first_nonfinite_f32(buffer, count);
    return fed_crc32c(crc, buffer, length);
}

// MARK: Float32 validation

#if defined(__x86_64__)
/// Whether 64 values starting at `bytes` hold a NaN or an infinity (exponent bits all ones).
__attribute__((target("avx2"))) static int fed_block_has_nonfinite_avx2(const unsigned char *bytes) {
    const __m256i mask = _mm256_set1_epi32(0x7f800000);
    __m256i any = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(bytes + 32 * k)), mask);
        any = _mm256_or_si256(any, _mm256_cmpeq_epi32(v, mask));
    }
    return !_mm256_testz_si256(any, any);
}
#endif

static int fed_block_has_nonfinite_portable(const unsigned char *bytes) {
    uint32_t any = 0;
    for (int k = 0; k < 64; k++) {
        uint32_t bits;
        memcpy(&bits, bytes + 4 * k, 4);
        any |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return any != 0;
}

long fed_first_nonfinite_f32(const void *buffer, size_t count) {
    const unsigned char *bytes = (const unsigned char *)buffer;
    size_t block = 0;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        while (block + 64 <= count && !fed_block_has_nonfinite_avx2(bytes + 4 * block)) block += 64;
    }
#endif
    while (block + 64 <= count && !fed_block_has_nonfinite_portable(bytes + 4 * block)) block += 64;
    // The block that holds the first bad value (or the tail), one value at a time.
    for (size_t i = block; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, bytes + 4 * i, 4);
        if ((bits & 0x7f800000u) == 0x7f800000u) return (long)i;
    }
    return -1;
}

/// a(x) · b(x) modulo the CRC-32C polynomial, bits reflected (x^0 is the top bit).
static uint32_t fed_crc32c_multmodp(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ 0x82f63b78u : b >> 1;
    }
    return p;
}

uint32_t fed_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2) {
    // crc(A ‖ B) = crc(A) · x^(8 · |B|) + crc(B): the power by repeated squaring of x^8.
    uint32_t power = 1u << 31;  // x^0
    uint32_t square = 1u << 23; // x^8
    for (uint64_t n = length2; n; n >>= 1) {
        if (n & 1) power = fed_crc32c_multmodp(square, power);
        square = fed_crc32c_multmodp(square, square);
    }
    return fed_crc32c_multmodp(power, crc1) ^ crc2;
}

// MARK: Float32 bounds

#if defined(__x86_64__)
/// Whether 64 values starting at `bytes` hold one whose magnitude bits exceed `bound_bits`.
__attribute__((target("avx2"))) static int fed_block_exceeds_avx2(const unsigned char *bytes, uint32_t bound_bits) {
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    const __m256i bound = _mm256_set1_epi32((int32_t)bound_bits);
    __m256i any = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(bytes + 32 * k)), magnitude);
        any = _mm256_or_si256(any, _mm256_cmpgt_epi32(v, bound));
    }
    return !_mm256_testz_si256(any, any);
}

__attribute__((target("avx2,fma"))) static double fed_sum_squares_avx2(const unsigned char *bytes, size_t count, size_t *done) {
    double total = 0;
    size_t i = 0;
    // Float lanes over blocks of 1024 values, each block's sum added in double.
    while (i + 1024 <= count) {
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
        for (size_t k = 0; k < 1024; k += 16) {
            __m256 x = _mm256_loadu_ps((const float *)(bytes + 4 * (i + k)));
            __m256 y = _mm256_loadu_ps((const float *)(bytes + 4 * (i + k + 8)));
            a = _mm256_fmadd_ps(x, x, a);
            b = _mm256_fmadd_ps(y, y, b);
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, _mm256_add_ps(a, b));
        for (int k = 0; k < 8; k++) total += lanes[k];
        i += 1024;
    }
    *done = i;
    return total;
}
#endif

static int fed_block_exceeds_portable(const unsigned char *bytes, uint32_t bound_bits) {
    uint32_t any = 0;
    for (int k = 0; k < 64; k++) {
        uint32_t bits;
        memcpy(&bits, bytes + 4 * k, 4);
        any |= (bits & 0x7fffffffu) > bound_bits;
    }
    return any != 0;
}

long fed_first_beyond_f32(const void *buffer, size_t count, float bound) {
    const unsigned char *bytes = (const unsigned char *)buffer;
    uint32_t bound_bits;
    memcpy(&bound_bits, &bound, 4);
    bound_bits &= 0x7fffffffu;
    size_t block = 0;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        while (block + 64 <= count && !fed_block_exceeds_avx2(bytes + 4 * block, bound_bits)) block += 64;
    }
#endif
    while (block + 64 <= count && !fed_block_exceeds_portable(bytes + 4 * block, bound_bits)) block += 64;
    for (size_t i = block; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, bytes + 4 * i, 4);
        if ((bits & 0x7fffffffu) > bound_bits) return (long)i;
    }
    return -1;
}

double fed_sum_squares_f32(const void *buffer, size_t count) {
    const unsigned char *bytes = (const unsigned char *)buffer;
    double total = 0;
    size_t i = 0;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) total = fed_sum_squares_avx2(bytes, count, &i);
#endif
    for (; i < count; i++) {
        float x;
        memcpy(&x, bytes + 4 * i, 4);
        total += (double)x * (double)x;
    }
    return total;
}

// MARK: FLSECAGG-v1 mask fold and quantization

static void fed_fold_u32_portable(uint32_t *target, const uint32_t *const *streams, const int *subtract, int count, size_t from,
                                  size_t n) {
    for (size_t i = from; i < n; i++) {
        uint32_t acc = target[i];
        for (int s = 0; s < count; s++) acc = subtract[s] ? acc - streams[s][i] : acc + streams[s][i];
        target[i] = acc;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static size_t fed_fold_u32_avx2(uint32_t *target, const uint32_t *const *streams,
                                                                 const int *subtract, int count, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i acc = _mm256_loadu_si256((const __m256i *)(target + i));
        for (int s = 0; s < count; s++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(streams[s] + i));
            acc = subtract[s] ? _mm256_sub_epi32(acc, v) : _mm256_add_epi32(acc, v);
        }
        _mm256_storeu_si256((__m256i *)(target + i), acc);
    }
    return i;
}

__attribute__((target("avx512f"))) static size_t fed_fold_u32_avx512(uint32_t *target, const uint32_t *const *streams,
                                                                      const int *subtract, int count, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i acc = _mm512_loadu_si512((const void *)(target + i));
        for (int s = 0; s < count; s++) {
            __m512i v = _mm512_loadu_si512((const void *)(streams[s] + i));
            acc = subtract[s] ? _mm512_sub_epi32(acc, v) : _mm512_add_epi32(acc, v);
        }
        _mm512_storeu_si512((void *)(target + i), acc);
    }
    return i;
}

static size_t fed_fold_u32_sse2(uint32_t *target, const uint32_t *const *streams, const int *subtract, int count, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128i acc = _mm_loadu_si128((const __m128i *)(target + i));
        for (int s = 0; s < count; s++) {
            __m128i v = _mm_loadu_si128((const __m128i *)(streams[s] + i));
            acc = subtract[s] ? _mm_sub_epi32(acc, v) : _mm_add_epi32(acc, v);
        }
        _mm_storeu_si128((__m128i *)(target + i), acc);
    }
    return i;
}
#endif

void fed_fold_u32(uint32_t *target, const uint32_t *const *streams, const int *subtract, int count, size_t n) {
    size_t done = 0;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) done = fed_fold_u32_avx512(target, streams, subtract, count, n);
    else if (__builtin_cpu_supports("avx2")) done = fed_fold_u32_avx2(target, streams, subtract, count, n);
    else done = fed_fold_u32_sse2(target, streams, subtract, count, n);
#endif
    fed_fold_u32_portable(target, streams, subtract, count, done, n);
}

#pragma clang fp contract(off)
#define FED_QUANTIZE_BODY \
    for (size_t i = 0; i < n; i++) { \
        uint32_t bits; \
        memcpy(&bits, delta + i, 4); \
        if ((bits & 0x7f800000u) == 0x7f800000u) return (long)i; \
    } \
    for (size_t i = 0; i < n; i++) { \
        double d = (double)delta[i]; \
        double v = (omega * fmin(fmax(d, -clip), clip)) * scale; \
        double f = floor(v); \
        double threshold = (v - f) * 4294967296.0; \
        int32_t q = (int32_t)f + ((double)randoms[i] < threshold ? 1 : 0); \
        out[i] = (uint32_t)q; \
    } \
    return -1;

static long fed_quantize_portable(const float *delta, const uint32_t *randoms, uint32_t *out, size_t n, double omega,
                                  double clip, double scale) {
    FED_QUANTIZE_BODY
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static long fed_quantize_avx2(const float *delta, const uint32_t *randoms, uint32_t *out,
                                                               size_t n, double omega, double clip, double scale) {
    FED_QUANTIZE_BODY
}

__attribute__((target("avx512f,avx512dq,avx512vl"))) static long fed_quantize_avx512(const float *delta, const uint32_t *randoms,
                                                                                       uint32_t *out, size_t n, double omega,
                                                                                       double clip, double scale) {
    FED_QUANTIZE_BODY
}
#endif
#pragma clang fp contract(on)

long fed_quantize_f32(const float *delta, const uint32_t *randoms, uint32_t *out, size_t n, double omega, double clip,
                      double scale) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return fed_quantize_avx512(delta, randoms, out, n, omega, clip, scale);
    if (__builtin_cpu_supports("avx2")) return fed_quantize_avx2(delta, randoms, out, n, omega, clip, scale);
#endif
    return fed_quantize_portable(delta, randoms, out, n, omega, clip, scale);
}

// MARK: libc helpers

int fed_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int fed_tune_malloc_for_large_buffers(void) {
    int a = mallopt(M_MMAP_THRESHOLD, 64 << 20);
    int b = mallopt(M_TRIM_THRESHOLD, 32 << 20);
    // Few arenas: with a thread per connection, per-thread arenas would each keep their own free memory.
    int c = mallopt(M_ARENA_MAX, 2);
    return a && b && c;
}

int fed_keep_freed_heap_memory(void) { return mallopt(M_TRIM_THRESHOLD, 0x7fffffff); }

void fed_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
