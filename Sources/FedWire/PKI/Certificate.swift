import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// An X.509 certificate (`X509`). Owns its reference.
public final class Certificate: @unchecked Sendable {
    // @unchecked: immutable after creation.
    let pointer: OpaquePointer  // X509

    init(takingOwnership pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_free(pointer) }

    /// Loads the first certificate of a PEM file.
    public convenience init(pemFile path: String) throws {
        let x509 = try PEMFile.withFileBIO(path, "certificate") { bio -> OpaquePointer in
            guard let x = PEM_read_bio_X509(bio, nil, nil, nil) else {
                throw WireError(.certificate, "'\(path)' holds no readable certificate: \(OpenSSLErrorStack.describe(fallback: "bad PEM"))")
            }
            return x
        }
        self.init(takingOwnership: x509)
    }

    /// The identity the certificate carries (CN, SANs, serial).
    public var identity: PeerIdentity { PeerIdentity(certificate: pointer) }

    /// The serial number, upper-case hex.
    public var serialNumber: String { PeerIdentity.serialHex(of: pointer) }

    /// Seconds since 1970 of the end of validity.
    public var notAfter: Double { Self.seconds(of: X509_get0_notAfter(pointer)) }
    /// Seconds since 1970 of the start of validity.
    public var notBefore: Double { Self.seconds(of: X509_get0_notBefore(pointer)) }

    private static func seconds(of time: UnsafePointer<ASN1_TIME>?) -> Double {
        var broken = tm()
        guard let time, ASN1_TIME_to_tm(time, &broken) == 1 else { return 0 }
        return Double(timegm(&broken))
    }

    /// PEM text.
    public func pemBytes() throws -> [UInt8] {
        try PEMFile.withMemoryBIO("certificate") { PEM_write_bio_X509($0, pointer) }
    }

    /// Writes the certificate as PEM, mode 0644, atomically.
    public func write(to path: String) throws {
        try PEMFile.write(try pemBytes(), to: path, mode: 0o644)
    }
}
