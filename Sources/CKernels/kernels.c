// Numeric kernels on the data path (see include/kernels.h).
#include "kernels.h"

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

static void fed_crc32c_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ FED_CRC32C_POLY : crc >> 1;
        fed_crc32c_table[n] = crc;
    }
    fed_crc32c_zeros(fed_crc32c_long, FED_CRC32C_LONG);
    fed_crc32c_zeros(fed_crc32c_short, FED_CRC32C_SHORT);
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
    while (length >= 8) {
        uint64_t a;
        memcpy(&a, next, 8);
        crc0 = _mm_crc32_u64(crc0, a);
        next += 8;
        length -= 8;
    }
    while (length--) crc0 = _mm_crc32_u8((uint32_t)crc0, *next++);
    return (uint32_t)crc0 ^ 0xffffffffu;
}
#endif

uint32_t fed_crc32c(uint32_t crc, const void *buffer, size_t length) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return fed_crc32c_sse42(crc, buffer, length);
#endif
    return fed_crc32c_portable(crc, buffer, length);
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
