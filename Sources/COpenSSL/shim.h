// Shim for the OpenSSL 3 macros and variadic functions Swift cannot import, plus the few libc
// calls the Glibc module does not export. Every function here is a thin, allocation-free wrapper.
#ifndef FEDCOORD_COPENSSL_SHIM_H
#define FEDCOORD_COPENSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bn.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <malloc.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// MARK: SSL_CTX / SSL controls (macros in 3.0)

static inline int shim_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline int shim_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long shim_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline void shim_SSL_CTX_set_read_ahead(SSL_CTX *ctx, int on) { SSL_CTX_set_read_ahead(ctx, on); }
static inline long shim_SSL_CTX_set_session_cache_off(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}
static inline unsigned long shim_SSL_OP_NO_RENEGOTIATION(void) { return (unsigned long)SSL_OP_NO_RENEGOTIATION; }
static inline unsigned long shim_SSL_OP_NO_TICKET(void) { return (unsigned long)SSL_OP_NO_TICKET; }
static inline int shim_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

// MARK: memory

static inline long shim_BIO_get_mem_data(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }

static inline void shim_OPENSSL_free(void *p) { OPENSSL_free(p); }

// MARK: certificates

static inline int shim_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
static inline const GENERAL_NAME *shim_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}
static inline int shim_sk_X509_REVOKED_num(const STACK_OF(X509_REVOKED) *s) { return sk_X509_REVOKED_num(s); }
static inline const X509_REVOKED *shim_sk_X509_REVOKED_value(const STACK_OF(X509_REVOKED) *s, int i) {
    return sk_X509_REVOKED_value(s, i);
}
/// Generates an EC P-256 key (EVP_EC_gen is a macro over a variadic function).
static inline EVP_PKEY *shim_EVP_EC_gen_P256(void) { return EVP_EC_gen("P-256"); }
/// A v3 extension from its OpenSSL config text ("critical,CA:TRUE"), with issuer and subject set.
static inline X509_EXTENSION *shim_X509V3_ext(X509 *issuer, X509 *subject, X509_CRL *crl, int nid,
                                              const char *value) {
    X509V3_CTX ctx;
    memset(&ctx, 0, sizeof(ctx));
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, subject, NULL, crl, 0);
    return X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
}
static inline int shim_GENERAL_NAME_type(const GENERAL_NAME *name) { return name->type; }
static inline const ASN1_STRING *shim_GENERAL_NAME_string(const GENERAL_NAME *name) {
    switch (name->type) {
    case GEN_DNS: return name->d.dNSName;
    case GEN_IPADD: return name->d.iPAddress;
    case GEN_EMAIL: return name->d.rfc822Name;
    case GEN_URI: return name->d.uniformResourceIdentifier;
    default: return NULL;
    }
}

// MARK: libc

/// Puts a descriptor into non-blocking mode (fcntl is variadic). Returns -1 with errno on failure.
static inline int shim_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}
/// Keeps buffers above 64 MiB out of mmap so that repeated multi-MiB allocations reuse warm heap
/// pages instead of page-faulting fresh ones (see swift-c-interop.md §6). Returns 1 when accepted.
static inline int shim_tune_malloc_for_large_buffers(void) {
    int a = mallopt(M_MMAP_THRESHOLD, 64 << 20);
    int b = mallopt(M_TRIM_THRESHOLD, 32 << 20);
    /* Few arenas: with a thread per connection, per-thread arenas would each keep their own free memory. */
    int c = mallopt(M_ARENA_MAX, 2);
    return a && b && c;
}
/// Never hands freed heap memory back to the kernel, so that a buffer freed and allocated again
/// each round (an agent's copy of the model) reuses warm pages instead of faulting in fresh ones.
static inline int shim_keep_freed_heap_memory(void) { return mallopt(M_TRIM_THRESHOLD, 0x7fffffff); }
static inline void shim_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

// MARK: secure aggregation (FLSECAGG-v1) primitives

/// HKDF-SHA256 (extract and expand, RFC 5869) with a fetched HKDF; returns 1 on success.
static inline int shim_hkdf_sha256(EVP_KDF *kdf, const unsigned char *ikm, size_t ikm_len, const unsigned char *salt,
                                   size_t salt_len, const unsigned char *info, size_t info_len, unsigned char *out,
                                   size_t out_len) {
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    if (kctx == NULL) return 0;
    OSSL_PARAM params[5];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    params[4] = OSSL_PARAM_construct_end();
    int rc = EVP_KDF_derive(kctx, out, out_len, params);
    EVP_KDF_CTX_free(kctx);
    return rc;
}
/// The 16-byte GCM tag after EVP_EncryptFinal_ex.
static inline int shim_gcm_get_tag(EVP_CIPHER_CTX *ctx, unsigned char *tag) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
}
/// The expected 16-byte GCM tag, before EVP_DecryptFinal_ex.
static inline int shim_gcm_set_tag(EVP_CIPHER_CTX *ctx, unsigned char *tag) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag);
}

/// Folds `count` keystream slices into `target`: target[i] += Σ ±stream_s[i] (mod 2^32), one pass,
/// AVX2 when the CPU has it. `subtract[s]` != 0 subtracts stream s.
#include <immintrin.h>
#include <stdint.h>
__attribute__((target("avx2"))) static inline void shim_fold_u32_avx2(uint32_t *target, const uint32_t *const *streams,
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
    for (; i < n; i++) {
        uint32_t acc = target[i];
        for (int s = 0; s < count; s++) acc = subtract[s] ? acc - streams[s][i] : acc + streams[s][i];
        target[i] = acc;
    }
}
__attribute__((target("avx512f"))) static inline void shim_fold_u32_avx512(uint32_t *target, const uint32_t *const *streams,
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
    for (; i < n; i++) {
        uint32_t acc = target[i];
        for (int s = 0; s < count; s++) acc = subtract[s] ? acc - streams[s][i] : acc + streams[s][i];
        target[i] = acc;
    }
}
static inline void shim_fold_u32(uint32_t *target, const uint32_t *const *streams, const int *subtract, int count, size_t n) {
    if (__builtin_cpu_supports("avx512f")) {
        shim_fold_u32_avx512(target, streams, subtract, count, n);
        return;
    }
    if (__builtin_cpu_supports("avx2")) {
        shim_fold_u32_avx2(target, streams, subtract, count, n);
        return;
    }
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128i acc = _mm_loadu_si128((const __m128i *)(target + i));
        for (int s = 0; s < count; s++) {
            __m128i v = _mm_loadu_si128((const __m128i *)(streams[s] + i));
            acc = subtract[s] ? _mm_sub_epi32(acc, v) : _mm_add_epi32(acc, v);
        }
        _mm_storeu_si128((__m128i *)(target + i), acc);
    }
    for (; i < n; i++) {
        uint32_t acc = target[i];
        for (int s = 0; s < count; s++) acc = subtract[s] ? acc - streams[s][i] : acc + streams[s][i];
        target[i] = acc;
    }
}

/// FLSECAGG-v1 §3.9 quantization of `n` Float32 values (widened to Float64) into two's-complement
/// `uint32`s: `v = (omega · clamp(d, −clip, clip)) · scale`, then `floor(v)` plus one when
/// `randoms[i] < (v − floor(v)) · 2^32`. The operation order is the spec's; no contraction.
/// Returns the index of the first non-finite value (nothing written), or -1.
#include <math.h>
#pragma clang fp contract(off)
#define SHIM_QUANTIZE_BODY \
    for (size_t i = 0; i < n; i++) { \
        uint32_t bits; memcpy(&bits, delta + i, 4); \
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
__attribute__((target("avx2"))) static inline long shim_quantize_avx2(const float *delta, const uint32_t *randoms, uint32_t *out,
                                                                      size_t n, double omega, double clip, double scale) {
    SHIM_QUANTIZE_BODY
}
static inline long shim_quantize_generic(const float *delta, const uint32_t *randoms, uint32_t *out, size_t n, double omega,
                                         double clip, double scale) {
    SHIM_QUANTIZE_BODY
}
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline long shim_quantize_avx512(const float *delta, const uint32_t *randoms,
                                                                                              uint32_t *out, size_t n, double omega,
                                                                                              double clip, double scale) {
    SHIM_QUANTIZE_BODY
}
static inline long shim_quantize(const float *delta, const uint32_t *randoms, uint32_t *out, size_t n, double omega, double clip,
                                 double scale) {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return shim_quantize_avx512(delta, randoms, out, n, omega, clip, scale);
    if (__builtin_cpu_supports("avx2")) return shim_quantize_avx2(delta, randoms, out, n, omega, clip, scale);
    return shim_quantize_generic(delta, randoms, out, n, omega, clip, scale);
}
#pragma clang fp contract(on)

#endif
