import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Where a TLS endpoint finds its certificate, key and trust anchor, and how strict it is.
///
/// FedCoord speaks TLS 1.3 only, trusts only the federation's own CA (never the system store),
/// and always authenticates both sides.
public struct TLSConfiguration: Sendable {
    /// Which end of the handshake this is.
    public enum Role: Sendable {
        /// The coordinator: requires and verifies a client certificate, checks the CRL.
        case server
        /// An agent: verifies the coordinator's certificate and host name or IP address.
        case client
    }

    public var role: Role
    /// PEM file with this endpoint's certificate (and any intermediates after it).
    public var certificateChainPath: String
    /// PEM file with this endpoint's private key; must not be readable by group or others.
    public var privateKeyPath: String
    /// PEM file with the federation CA: the only trust anchor.
    public var trustRootPath: String
    /// PEM file with the federation's certificate revocation list. Required on the server side
    /// (a revoked agent must be refused); optional on the client side.
    public var revocationListPath: String?
    /// Seconds a TLS handshake may take before the connection is dropped.
    public var handshakeTimeout: Double = 10

    /// A coordinator's configuration: client certificates required and checked against the CRL.
    public static func makeServerConfiguration(
        certificateChainPath: String, privateKeyPath: String, trustRootPath: String, revocationListPath: String?
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server, certificateChainPath: certificateChainPath, privateKeyPath: privateKeyPath,
            trustRootPath: trustRootPath, revocationListPath: revocationListPath)
    }

    /// An agent's configuration: presents its certificate, verifies the coordinator's.
    public static func makeClientConfiguration(
        certificateChainPath: String, privateKeyPath: String, trustRootPath: String, revocationListPath: String? = nil
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client, certificateChainPath: certificateChainPath, privateKeyPath: privateKeyPath,
            trustRootPath: trustRootPath, revocationListPath: revocationListPath)
    }

    /// Checks that every named file exists and that the private key is private, with a message
    /// that says which file and what to do.
    public func validateFiles() throws {
        let files: [(String, String)] =
            [("certificate", certificateChainPath), ("private key", privateKeyPath), ("CA certificate", trustRootPath)]
            + (revocationListPath.map { [("certificate revocation list", $0)] } ?? [])
        for (what, path) in files {
            var info = stat()
            guard stat(path, &info) == 0 else {
                throw WireError(.configuration, "the \(what) file '\(path)' does not exist or cannot be read; "
                    + "check the path (make certs creates a development federation in certs/dev)")
            }
        }
        var keyInfo = stat()
        if stat(privateKeyPath, &keyInfo) == 0, keyInfo.st_mode & 0o077 != 0 {
            throw WireError(.configuration, "the private key '\(privateKeyPath)' is readable by other users "
                + "(mode \(String(keyInfo.st_mode & 0o777, radix: 8))); run: chmod 600 '\(privateKeyPath)'")
        }
    }
}
