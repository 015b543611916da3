import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// The federation's certificate authority: a P-256 key and a self-signed CA certificate that
/// issues the coordinator's and the agents' certificates and signs the revocation list.
///
/// Everything here uses OpenSSL's C API directly (no `openssl` command). Issuing costs one key
/// generation and one ECDSA signature (well under a millisecond each).
public final class CertificateAuthority: @unchecked Sendable {
    // @unchecked: immutable after init.
    public let key: PrivateKey
    public let certificate: Certificate

    public init(key: PrivateKey, certificate: Certificate) {
        self.key = key
        self.certificate = certificate
    }

    /// What a certificate is for; sets its extended key usage and subjectAltNames.
    public enum Usage: Sendable {
        /// A coordinator: `serverAuth`, with the DNS names and IP addresses agents dial.
        case server(dnsNames: [String], ipAddresses: [String])
        /// An agent: `clientAuth`; its common name is also written as a DNS subjectAltName.
        case client
    }

    /// Creates a new CA with a fresh key.
    ///
    /// - Parameters:
    ///   - commonName: the CA's name ("FedCoord development CA").
    ///   - validity: seconds from now the CA stays valid.
    public static func create(commonName: String, validity: Double = 10 * 365 * 86400) throws -> CertificateAuthority {
        let key = try PrivateKey.generateP256()
        let x509 = try makeCertificate(
            subjectName: commonName, publicKey: key, issuer: nil, issuerKey: key,
            notBefore: -3600, notAfter: validity,
            extensions: [
                (NID_basic_constraints, "critical,CA:TRUE"),
                (NID_key_usage, "critical,keyCertSign,cRLSign"),
                (NID_subject_key_identifier, "hash"),
            ])
        return CertificateAuthority(key: key, certificate: x509)
    }

    /// Loads a CA from its PEM certificate and key.
    public static func load(certificatePath: String, keyPath: String) throws -> CertificateAuthority {
        CertificateAuthority(key: try PrivateKey(pemFile: keyPath), certificate: try Certificate(pemFile: certificatePath))
    }

    /// Issues a certificate for `commonName` with a fresh key.
    ///
    /// - Parameters:
    ///   - notBefore: seconds from now when validity starts (negative: in the past).
    ///   - notAfter: seconds from now when validity ends (negative makes an expired certificate, for tests).
    /// - Returns: the certificate and its new private key.
    public func issue(
        commonName: String, usage: Usage, notBefore: Double = -3600, notAfter: Double = 825 * 86400
    ) throws -> (Certificate, PrivateKey) {
        let key = try PrivateKey.generateP256()
        var extensions: [(Int32, String)] = [
            (NID_basic_constraints, "critical,CA:FALSE"),
            (NID_key_usage, "critical,digitalSignature,keyAgreement"),
            (NID_subject_key_identifier, "hash"),
            (NID_authority_key_identifier, "keyid:always"),
        ]
        switch usage {
        case .server(let dnsNames, let ipAddresses):
            extensions.append((NID_ext_key_usage, "serverAuth"))
            let names = dnsNames.map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }
            if !names.isEmpty { extensions.append((NID_subject_alt_name, names.joined(separator: ","))) }
        case .client:
            extensions.append((NID_ext_key_usage, "clientAuth"))
            extensions.append((NID_subject_alt_name, "DNS:\(commonName)"))
        }
        let x509 = try Self.makeCertificate(
            subjectName: commonName, publicKey: key, issuer: certificate, issuerKey: self.key,
            notBefore: notBefore, notAfter: notAfter, extensions: extensions)
        return (x509, key)
    }

    /// Signs a revocation list naming `revokedSerials` (upper-case hex), valid for `validity` seconds.
    public func makeRevocationList(revokedSerials: [String], validity: Double = 365 * 86400) throws -> RevocationList {
        try RevocationList.make(issuer: self, revokedSerials: revokedSerials, validity: validity)
    }

    // MARK: Building certificates

    private static func makeCertificate(
        subjectName: String, publicKey: PrivateKey, issuer: Certificate?, issuerKey: PrivateKey,
        notBefore: Double, notAfter: Double, extensions: [(Int32, String)]
    ) throws -> Certificate {
        guard let x509 = X509_new() else { throw WireError(.certificate, "X509_new failed") }
        let certificate = Certificate(takingOwnership: x509)
        func check(_ ok: Bool, _ what: String) throws {
            if !ok { throw WireError(.certificate, "\(what): \(OpenSSLErrorStack.describe(fallback: "unknown"))") }
        }
        try check(X509_set_version(x509, 2) == 1, "cannot set the version")
        try setRandomSerial(x509)
        try check(X509_gmtime_adj(X509_getm_notBefore(x509), Int(notBefore)) != nil, "cannot set notBefore")
        try check(X509_gmtime_adj(X509_getm_notAfter(x509), Int(notAfter)) != nil, "cannot set notAfter")
        try check(X509_set_pubkey(x509, publicKey.pointer) == 1, "cannot set the public key")
        guard let name = X509_NAME_new() else { throw WireError(.certificate, "X509_NAME_new failed") }
        defer { X509_NAME_free(name) }
        try check(
            X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, "FedCoord", -1, -1, 0) == 1
                && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, subjectName, -1, -1, 0) == 1,
            "cannot set the subject name")
        try check(X509_set_subject_name(x509, name) == 1, "cannot set the subject")
        let issuerName = issuer.map { X509_get_subject_name($0.pointer) } ?? name
        try check(X509_set_issuer_name(x509, issuerName) == 1, "cannot set the issuer")
        for (nid, value) in extensions {
            guard let ext = shim_X509V3_ext(issuer?.pointer ?? x509, x509, nil, nid, value) else {
                throw WireError(.certificate, "cannot build extension \(nid)=\(value): \(OpenSSLErrorStack.describe(fallback: "?"))")
            }
            defer { X509_EXTENSION_free(ext) }
            try check(X509_add_ext(x509, ext, -1) == 1, "cannot add extension \(nid)")
        }
        try check(X509_sign(x509, issuerKey.pointer, EVP_sha256()) > 0, "cannot sign the certificate")
        return certificate
    }

    private static func setRandomSerial(_ x509: OpaquePointer) throws {
        guard let bn = BN_new() else { throw WireError(.certificate, "BN_new failed") }
        defer { BN_free(bn) }
        // 127 random bits, top bit clear: positive and at most 16 bytes, as RFC 5280 asks.
        guard BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1,
            BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x509)) != nil
        else { throw WireError(.certificate, "cannot set a random serial number") }
    }
}
