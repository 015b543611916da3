import Foundation
@testable import FedWire

/// A throwaway PKI in a temporary folder: a federation CA with a coordinator and agents, plus
/// every kind of bad certificate the handshake tests need. Generated with the project's own
/// OpenSSL-API code, fresh for each test process.
final class TestFederation: @unchecked Sendable {
    let directory: String
    let ca: CertificateAuthority
    let otherCA: CertificateAuthority
    private(set) var revokedSerials: [String] = []

    /// The kinds of agent certificate the tests use.
    enum AgentKind: String, CaseIterable, Sendable {
        case valid, expired, notYetValid, otherCA, revoked, serverAsClient
    }

    init() throws {
        WireProcess.ignoreBrokenPipeSignal()
        directory = NSTemporaryDirectory() + "fedwire-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        ca = try CertificateAuthority.create(commonName: "Test federation CA")
        otherCA = try CertificateAuthority.create(commonName: "Some other CA")
        try ca.certificate.write(to: path("ca.crt"))
        try otherCA.certificate.write(to: path("other-ca.crt"))
        let (server, serverKey) = try ca.issue(
            commonName: "coordinator", usage: .server(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"]))
        try server.write(to: path("coordinator.crt"))
        try serverKey.write(to: path("coordinator.key"))
        for agent in ["hospital-a", "hospital-b"] {
            try issueAgent(agent, kind: .valid)
        }
        for kind in AgentKind.allCases where kind != .valid {
            try issueAgent(kind.rawValue, kind: kind)
        }
        try writeCRL()
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func path(_ name: String) -> String { directory + "/" + name }

    /// Issues `name.crt` / `name.key` of the given kind.
    func issueAgent(_ name: String, kind: AgentKind) throws {
        let certificate: Certificate
        let key: PrivateKey
        switch kind {
        case .valid:
            (certificate, key) = try ca.issue(commonName: name, usage: .client)
        case .expired:
            (certificate, key) = try ca.issue(commonName: name, usage: .client, notBefore: -30 * 86400, notAfter: -86400)
        case .notYetValid:
            (certificate, key) = try ca.issue(commonName: name, usage: .client, notBefore: 86400, notAfter: 30 * 86400)
        case .otherCA:
            (certificate, key) = try otherCA.issue(commonName: name, usage: .client)
        case .revoked:
            (certificate, key) = try ca.issue(commonName: name, usage: .client)
            revokedSerials.append(certificate.serialNumber)
        case .serverAsClient:
            (certificate, key) = try ca.issue(commonName: name, usage: .server(dnsNames: ["localhost"], ipAddresses: []))
        }
        try certificate.write(to: path("\(name).crt"))
        try key.write(to: path("\(name).key"))
    }

    /// Revokes an agent's certificate and rewrites the CRL (the server must reload it).
    func revoke(_ name: String) throws {
        revokedSerials.append(try Certificate(pemFile: path("\(name).crt")).serialNumber)
        try writeCRL()
    }

    func writeCRL() throws {
        try ca.makeRevocationList(revokedSerials: revokedSerials).write(to: path("crl.pem"))
    }

    var serverTLS: TLSConfiguration {
        .makeServerConfiguration(
            certificateChainPath: path("coordinator.crt"), privateKeyPath: path("coordinator.key"),
            trustRootPath: path("ca.crt"), revocationListPath: path("crl.pem"))
    }

    func clientTLS(_ agent: String, trusting caFile: String = "ca.crt") -> TLSConfiguration {
        .makeClientConfiguration(
            certificateChainPath: path("\(agent).crt"), privateKeyPath: path("\(agent).key"), trustRootPath: path(caFile))
    }

    func clientContext(_ agent: String, trusting caFile: String = "ca.crt") throws -> TLSContext {
        try TLSContext(configuration: clientTLS(agent, trusting: caFile))
    }
}

/// One federation per test process: key generation is cheap, but there is no need to repeat it.
let sharedFederation: TestFederation = {
    WireProcess.ignoreBrokenPipeSignal()
    return try! TestFederation()
}()
