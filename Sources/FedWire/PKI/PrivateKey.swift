import COpenSSL

/// An EC P-256 private key (`EVP_PKEY`). Owns the key; OpenSSL wipes it when freed.
public final class PrivateKey: @unchecked Sendable {
    // @unchecked: immutable after init; EVP_PKEY is safe to share read-only.
    let pointer: OpaquePointer  // EVP_PKEY

    init(takingOwnership pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }

    /// Generates a fresh P-256 key from OpenSSL's CSPRNG.
    public static func generateP256() throws -> PrivateKey {
        guard let key = shim_EVP_EC_gen_P256() else {
            throw WireError(.certificate, "cannot generate a P-256 key: \(OpenSSLErrorStack.describe(fallback: "unknown"))")
        }
        return PrivateKey(takingOwnership: key)
    }

    /// Loads a PEM private key.
    public convenience init(pemFile path: String) throws {
        let key = try PEMFile.withFileBIO(path, "private key") { bio -> OpaquePointer in
            guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
                throw WireError(.certificate, "'\(path)' holds no readable private key: \(OpenSSLErrorStack.describe(fallback: "bad PEM"))")
            }
            return key
        }
        self.init(takingOwnership: key)
    }

    /// Writes the key as unencrypted PKCS#8 PEM, mode 0600, atomically.
    public func write(to path: String) throws {
        var bytes = try PEMFile.withMemoryBIO("private key") { PEM_write_bio_PrivateKey($0, pointer, nil, nil, 0, nil, nil) }
        defer { bytes.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) } }
        try PEMFile.write(bytes, to: path, mode: 0o600)
    }
}
