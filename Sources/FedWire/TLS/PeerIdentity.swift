import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of a verified TLS connection, read from its certificate.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The certificate's subject common name ("hospital-a").
    public var commonName: String
    /// DNS names from the subjectAltName extension.
    public var dnsNames: [String]
    /// IP addresses from the subjectAltName extension, numeric ("127.0.0.1", "::1").
    public var ipAddresses: [String]
    /// The certificate's serial number, upper-case hex.
    public var serialNumber: String

    public var description: String {
        var parts = ["CN=\(commonName)"]
        if !dnsNames.isEmpty { parts.append("DNS=\(dnsNames)") }
        if !ipAddresses.isEmpty { parts.append("IP=\(ipAddresses)") }
        parts.append("serial=\(serialNumber)")
        return parts.joined(separator: " ")
    }

    /// Reads the identity of a certificate (`X509*`, borrowed).
    init(certificate: OpaquePointer) {
        commonName = PeerIdentity.commonName(of: certificate) ?? ""
        serialNumber = PeerIdentity.serialHex(of: certificate)
        var dns: [String] = []
        var ips: [String] = []
        if let raw = X509_get_ext_d2i(certificate, NID_subject_alt_name, nil, nil) {
            let names = OpaquePointer(raw)
            for index in 0..<shim_sk_GENERAL_NAME_num(names) {
                guard let name = shim_sk_GENERAL_NAME_value(names, index),
                    let value = shim_GENERAL_NAME_string(name)
                else { continue }
                let bytes = UnsafeBufferPointer(start: ASN1_STRING_get0_data(value), count: Int(ASN1_STRING_length(value)))
                switch shim_GENERAL_NAME_type(name) {
                case GEN_DNS: dns.append(String(decoding: bytes, as: UTF8.self))
                case GEN_IPADD: if let ip = PeerIdentity.numericIP(Array(bytes)) { ips.append(ip) }
                default: break
                }
            }
            GENERAL_NAMES_free(names)
        }
        dnsNames = dns
        ipAddresses = ips
    }

    static func commonName(of certificate: OpaquePointer) -> String? {
        guard let subject = X509_get_subject_name(certificate) else { return nil }
        let index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1)
        guard index >= 0, let entry = X509_NAME_get_entry(subject, index),
            let data = X509_NAME_ENTRY_get_data(entry)
        else { return nil }
        var utf8: UnsafeMutablePointer<UInt8>?
        let length = ASN1_STRING_to_UTF8(&utf8, data)
        guard length >= 0, let utf8 else { return nil }
        defer { shim_OPENSSL_free(utf8) }
        return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(length)), as: UTF8.self)
    }

    static func serialHex(of certificate: OpaquePointer) -> String {
        guard let serial = X509_get0_serialNumber(certificate), let bn = ASN1_INTEGER_to_BN(serial, nil) else {
            return ""
        }
        defer { BN_free(bn) }
        guard let hex = BN_bn2hex(bn) else { return "" }
        defer { shim_OPENSSL_free(hex) }
        return String(cString: hex)
    }

    static func numericIP(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return nil
        }
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
}
