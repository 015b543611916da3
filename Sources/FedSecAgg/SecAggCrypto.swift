import COpenSSL
import Foundation

/// The primitives of FLSECAGG-v1 over OpenSSL 3 (§3.2): SHA-256, HKDF-SHA256 with the spec's
/// label scheme, X25519 with the all-zero check, AES-256-GCM share envelopes, and cleansing.
/// Every OpenSSL return value is checked; a failure throws ``SecAggError`` (`INTERNAL`).
public enum SecAggCrypto {
    /// `"FLSECAGG-v1"`.
    public static let protocolID = Array("FLSECAGG-v1".utf8)

    /// `info(label, ctx) = PID ‖ 0x00 ‖ label ‖ 0x00 ‖ ctx`.
    public static func info(_ label: String, _ context: [UInt8] = []) -> [UInt8] {
        protocolID + [0] + Array(label.utf8) + [0] + context
    }

    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 32
        let ok = data.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &digest, &length, EVP_sha256(), nil) }
        precondition(ok == 1 && length == 32, "EVP_Digest(SHA-256) failed")
        return digest
    }

    nonisolated(unsafe) private static let hkdfAlgorithm: OpaquePointer? = EVP_KDF_fetch(nil, "HKDF", nil)

    /// HKDF-SHA256(IKM, salt, info(label, ctx)) → `length` bytes.
    public static func hkdf(ikm: [UInt8], salt: [UInt8], label: String, context: [UInt8], length: Int) throws -> [UInt8] {
        guard let kdf = hkdfAlgorithm else { throw SecAggError(.internalError, "OpenSSL has no HKDF") }
        let information = info(label, context)
        var out = [UInt8](repeating: 0, count: length)
        let ok = shim_hkdf_sha256(kdf, ikm, ikm.count, salt, salt.count, information, information.count, &out, length)
        guard ok == 1 else { throw SecAggError(.internalError, "HKDF-SHA256 failed") }
        return out
    }

    // MARK: X25519

    private static func privateKey(_ bytes: [UInt8]) throws -> OpaquePointer {
        guard bytes.count == 32, let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nil, bytes, 32) else {
            throw SecAggError(.internalError, "not a 32-byte X25519 private key")
        }
        return key
    }

    /// The public key of a raw 32-byte X25519 private key.
    public static func x25519PublicKey(privateKey bytes: [UInt8]) throws -> [UInt8] {
        let key = try privateKey(bytes)
        defer { EVP_PKEY_free(key) }
        var out = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_get_raw_public_key(key, &out, &length) == 1, length == 32 else {
            throw SecAggError(.internalError, "cannot export an X25519 public key")
        }
        return out
    }

    /// The X25519 shared secret; refuses a low-order peer (OpenSSL's refusal, and an explicit
    /// all-zero check).
    public static func x25519(privateKey bytes: [UInt8], peerPublicKey peer: [UInt8]) throws -> [UInt8] {
        guard peer.count == 32 else { throw SecAggError(.inconsistent, "an X25519 public key must be 32 bytes, not \(peer.count)") }
        let mine = try privateKey(bytes)
        defer { EVP_PKEY_free(mine) }
        guard let theirs = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nil, peer, 32) else {
            throw SecAggError(.inconsistent, "not a valid X25519 public key")
        }
        defer { EVP_PKEY_free(theirs) }
        guard let context = EVP_PKEY_CTX_new(mine, nil) else { throw SecAggError(.internalError, "EVP_PKEY_CTX_new failed") }
        defer { EVP_PKEY_CTX_free(context) }
        var secret = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_derive_init(context) == 1, EVP_PKEY_derive_set_peer(context, theirs) == 1,
              EVP_PKEY_derive(context, &secret, &length) == 1, length == 32
        else {
            ERR_clear_error()
            throw SecAggError(.inconsistent, "X25519 agreement refused (a low-order public key)")
        }
        guard !isAllZero(secret) else {
            cleanse(&secret)
            throw SecAggError(.inconsistent, "X25519 agreement gave the all-zero secret")
        }
        return secret
    }

    /// Constant-time: true when every byte is zero.
    public static func isAllZero(_ bytes: [UInt8]) -> Bool {
        bytes.reduce(UInt8(0)) { $0 | $1 } == 0
    }

    // MARK: AES-256-GCM

    nonisolated(unsafe) private static let gcm: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)

    /// AES-256-GCM with a 12-byte nonce: `ciphertext ‖ tag` (16 bytes).
    public static func seal(key: [UInt8], nonce: [UInt8], aad: [UInt8], plaintext: [UInt8]) throws -> [UInt8] {
        guard key.count == 32, nonce.count == 12, let cipher = gcm, let context = EVP_CIPHER_CTX_new() else {
            throw SecAggError(.internalError, "AES-256-GCM set-up failed")
        }
        defer { EVP_CIPHER_CTX_free(context) }
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        var length: Int32 = 0, final: Int32 = 0
        let ok = EVP_EncryptInit_ex2(context, cipher, key, nonce, nil) == 1
            && EVP_EncryptUpdate(context, nil, &length, aad, Int32(aad.count)) == 1
            && out.withUnsafeMutableBufferPointer { buffer in
                EVP_EncryptUpdate(context, buffer.baseAddress, &length, plaintext, Int32(plaintext.count)) == 1
                    && EVP_EncryptFinal_ex(context, buffer.baseAddress! + Int(length), &final) == 1
                    && shim_gcm_get_tag(context, buffer.baseAddress! + plaintext.count) == 1
            }
        guard ok else { throw SecAggError(.internalError, "AES-256-GCM encryption failed") }
        return out
    }

    /// Opens `ciphertext ‖ tag`; throws (INCONSISTENT) when authentication fails.
    public static func open(key: [UInt8], nonce: [UInt8], aad: [UInt8], sealed: [UInt8]) throws -> [UInt8] {
        guard sealed.count >= 16 else { throw SecAggError(.inconsistent, "a sealed share is shorter than its tag") }
        guard key.count == 32, nonce.count == 12, let cipher = gcm, let context = EVP_CIPHER_CTX_new() else {
            throw SecAggError(.internalError, "AES-256-GCM set-up failed")
        }
        defer { EVP_CIPHER_CTX_free(context) }
        let body = Array(sealed[..<(sealed.count - 16)])
        var tag = Array(sealed[(sealed.count - 16)...])
        var out = [UInt8](repeating: 0, count: body.count + 16)
        var length: Int32 = 0, final: Int32 = 0
        let ok = EVP_DecryptInit_ex2(context, cipher, key, nonce, nil) == 1
            && EVP_DecryptUpdate(context, nil, &length, aad, Int32(aad.count)) == 1
            && EVP_DecryptUpdate(context, &out, &length, body, Int32(body.count)) == 1
            && shim_gcm_set_tag(context, &tag) == 1
            && out.withUnsafeMutableBufferPointer { EVP_DecryptFinal_ex(context, $0.baseAddress! + Int(length), &final) == 1 }
        guard ok else {
            cleanse(&out)
            ERR_clear_error()
            throw SecAggError(.inconsistent, "a share envelope failed authentication (wrong key, session or tampering)")
        }
        return Array(out[..<body.count])
    }

    /// Overwrites a secret with zeros in a way the optimizer keeps (`OPENSSL_cleanse`).
    public static func cleanse(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { OPENSSL_cleanse(base, $0.count) } }
        bytes.removeAll()
    }

    /// `count` bytes from OpenSSL's private DRBG (secrets).
    public static func privateRandom(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        precondition(RAND_priv_bytes(&out, Int32(count)) == 1, "RAND_priv_bytes failed")
        return out
    }

    /// `count` bytes from OpenSSL's public DRBG (nonces, graph seeds).
    public static func publicRandom(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        precondition(RAND_bytes(&out, Int32(count)) == 1, "RAND_bytes failed")
        return out
    }
}
