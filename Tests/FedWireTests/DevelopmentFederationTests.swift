import FedProtocol
import Foundation
import Testing
@testable import FedWire

@Suite("Development federation")
struct DevelopmentFederationTests {
    @Test("Creates a CA, a coordinator for localhost/127.0.0.1/::1, five hospitals and an empty CRL; keys are 0600")
    func createsFiles() throws {
        let directory = NSTemporaryDirectory() + "fed-dev-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = try DevelopmentFederation.create(in: directory)
        let coordinator = try Certificate(pemFile: files.coordinatorCertificate).identity
        #expect(coordinator.commonName == "coordinator")
        #expect(coordinator.dnsNames == ["localhost"])
        #expect(coordinator.ipAddresses == ["127.0.0.1", "::1"])
        for agent in DevelopmentFederation.defaultAgents {
            let certificate = try Certificate(pemFile: files.agentCertificate(agent))
            #expect(certificate.identity.commonName == agent)
            #expect(certificate.notAfter > Date().timeIntervalSince1970 + 365 * 86400)
            let mode = try FileManager.default.attributesOfItem(atPath: files.agentKey(agent))[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        for key in [files.caKey, files.coordinatorKey] {
            #expect(try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int == 0o600)
        }
        #expect(try RevocationList(pemFile: files.revocationList).revokedSerials.isEmpty)
        // The files form a working federation: a hospital joins a coordinator built from them.
        var configuration = WireServer.Configuration(tls: .makeServerConfiguration(
            certificateChainPath: files.coordinatorCertificate, privateKeyPath: files.coordinatorKey,
            trustRootPath: files.caCertificate, revocationListPath: files.revocationList))
        configuration.host = "::1"
        let delegate = TestServerDelegate()
        let server = try WireServer(configuration: configuration, delegate: delegate, logger: LogCapture().logger)
        server.start()
        defer { server.stop() }
        let context = try TLSContext(configuration: .makeClientConfiguration(
            certificateChainPath: files.agentCertificate("hospital-c"), privateKeyPath: files.agentKey("hospital-c"),
            trustRootPath: files.caCertificate))
        let (connection, welcome) = try WireClient.connect(
            host: "::1", port: server.port, context: context, hello: Hello(), options: ConnectionOptions(), logger: LogCapture().logger,
            handler: { _ in })
        #expect(welcome.agentID == "hospital-c")
        connection.close()
    }
}
