// Shim for the OpenSSL 3 macros and variadic functions Swift cannot import: nothing else (the
// numeric kernels and the libc helpers are in CKernels). Every function is a thin, allocation-free
// wrapper.
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

#endif
