import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A complete development federation on disk: CA, coordinator certificate, agent certificates
/// and an empty CRL. For demos and local trials, never for production.
public enum DevelopmentFederation {
    /// The agents a development federation has.
    public static let defaultAgents = ["hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e"]

    /// What ``create(in:agents:)`` wrote.
    public struct Files: Sendable {
        public var directory: String
        public init(directory: String) { self.directory = directory }
        public var caCertificate: String { directory + "/ca.crt" }
        public var caKey: String { directory + "/ca.key" }
        public var revocationList: String { directory + "/crl.pem" }
        public var coordinatorCertificate: String { directory + "/coordinator.crt" }
        public var coordinatorKey: String { directory + "/coordinator.key" }
        public func agentCertificate(_ name: String) -> String { directory + "/\(name).crt" }
        public func agentKey(_ name: String) -> String { directory + "/\(name).key" }
    }

    /// Creates the federation's files in `directory` (created 0700 if missing); keys are 0600.
    ///
    /// Costs one P-256 key generation and signature per certificate: milliseconds.
    @discardableResult
    public static func create(in directory: String, agents: [String] = defaultAgents) throws -> Files {
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw WireError(.certificate, "cannot create '\(directory)': \(error.localizedDescription)")
        }
        let files = Files(directory: directory)
        let ca = try CertificateAuthority.create(commonName: "FedCoord development CA")
        try ca.key.write(to: files.caKey)
        try ca.certificate.write(to: files.caCertificate)
        let (coordinator, coordinatorKey) = try ca.issue(
            commonName: "coordinator", usage: .server(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"]))
        try coordinatorKey.write(to: files.coordinatorKey)
        try coordinator.write(to: files.coordinatorCertificate)
        for agent in agents {
            let (certificate, key) = try ca.issue(commonName: agent, usage: .client)
            try key.write(to: files.agentKey(agent))
            try certificate.write(to: files.agentCertificate(agent))
        }
        try ca.makeRevocationList(revokedSerials: []).write(to: files.revocationList)
        return files
    }
}
