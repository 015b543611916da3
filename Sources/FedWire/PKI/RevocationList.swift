import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// A certificate revocation list (`X509_CRL`) signed by the federation CA.
public final class RevocationList: @unchecked Sendable {
    // @unchecked: immutable after creation.
    let pointer: OpaquePointer  // X509_CRL

    init(takingOwnership pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_CRL_free(pointer) }

    /// Loads a PEM CRL.
    public convenience init(pemFile path: String) throws {
        let crl = try PEMFile.withFileBIO(path, "certificate revocation list") { bio -> OpaquePointer in
            guard let crl = PEM_read_bio_X509_CRL(bio, nil, nil, nil) else {
                throw WireError(.certificate, "'\(path)' holds no readable CRL: \(OpenSSLErrorStack.describe(fallback: "bad PEM"))")
            }
            return crl
        }
        self.init(takingOwnership: crl)
    }

    /// The revoked serial numbers, upper-case hex.
    public var revokedSerials: [String] {
        guard let stack = X509_CRL_get_REVOKED(pointer) else { return [] }
        var serials: [String] = []
        for index in 0..<shim_sk_X509_REVOKED_num(stack) {
            guard let revoked = shim_sk_X509_REVOKED_value(stack, index),
                let serial = X509_REVOKED_get0_serialNumber(revoked),
                let bn = ASN1_INTEGER_to_BN(serial, nil)
            else { continue }
            defer { BN_free(bn) }
            if let hex = BN_bn2hex(bn) {
                serials.append(String(cString: hex))
                shim_OPENSSL_free(hex)
            }
        }
        return serials
    }

    /// Writes the CRL as PEM, mode 0644, atomically (a listener may reload it at any moment).
    public func write(to path: String) throws {
        let bytes = try PEMFile.withMemoryBIO("CRL") { PEM_write_bio_X509_CRL($0, pointer) }
        try PEMFile.write(bytes, to: path, mode: 0o644)
    }

    static func make(issuer: CertificateAuthority, revokedSerials: [String], validity: Double) throws -> RevocationList {
        guard let crl = X509_CRL_new() else { throw WireError(.certificate, "X509_CRL_new failed") }
        let list = RevocationList(takingOwnership: crl)
        func check(_ ok: Bool, _ what: String) throws {
            if !ok { throw WireError(.certificate, "\(what): \(OpenSSLErrorStack.describe(fallback: "unknown"))") }
        }
        try check(X509_CRL_set_version(crl, 1) == 1, "cannot set the CRL version")
        try check(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer.certificate.pointer)) == 1, "cannot set the issuer")
        guard let now = ASN1_TIME_adj(nil, time(nil), 0, -60), let next = ASN1_TIME_adj(nil, time(nil), 0, Int(validity)) else {
            throw WireError(.certificate, "cannot compute the CRL dates")
        }
        defer { ASN1_TIME_free(now); ASN1_TIME_free(next) }
        try check(X509_CRL_set1_lastUpdate(crl, now) == 1 && X509_CRL_set1_nextUpdate(crl, next) == 1, "cannot set the CRL dates")
        for serialHex in revokedSerials {
            guard let revoked = X509_REVOKED_new() else { throw WireError(.certificate, "X509_REVOKED_new failed") }
            var bn: OpaquePointer? = nil
            guard BN_hex2bn(&bn, serialHex) > 0, let bn, let serial = BN_to_ASN1_INTEGER(bn, nil) else {
                X509_REVOKED_free(revoked)
                throw WireError(.certificate, "'\(serialHex)' is not a hexadecimal serial number")
            }
            BN_free(bn)
            defer { ASN1_INTEGER_free(serial) }
            try check(X509_REVOKED_set_serialNumber(revoked, serial) == 1 && X509_REVOKED_set_revocationDate(revoked, now) == 1,
                      "cannot fill the revocation entry")
            try check(X509_CRL_add0_revoked(crl, revoked) == 1, "cannot add the revocation entry")
        }
        X509_CRL_sort(crl)
        try check(X509_CRL_sign(crl, issuer.key.pointer, EVP_sha256()) > 0, "cannot sign the CRL")
        return list
    }
}
