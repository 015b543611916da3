import COpenSSL
import FedProtocol
import Foundation
import Logging
import Testing
@testable import FedWire

/// The mTLS handshake matrix over real loopback TLS: every refusal with the right reason seen on
/// both sides, and logged by the coordinator with the peer address.
@Suite("mTLS handshake")
struct HandshakeTests {
    @Test("A valid agent joins; both sides see each other's certificate identity")
    func validAgentJoins() throws {
        let server = try TestServer()
        let (connection, welcome) = try server.connect("hospital-a")
        defer { connection.close() }
        #expect(welcome.agentID == "hospital-a")
        #expect(welcome.federation == "test-federation")
        #expect(welcome.protocolVersion == fedcoordProtocolVersion)
        #expect(connection.peer.commonName == "coordinator")
        #expect(connection.peer.ipAddresses.contains("127.0.0.1"))
        #expect(connection.peer.dnsNames == ["localhost"])
        #expect(server.eventually { server.delegate.joined.count == 1 })
        let agentSide = try #require(server.delegate.joined.first)
        #expect(agentSide.peer.commonName == "hospital-a")
        #expect(agentSide.peer.dnsNames == ["hospital-a"])
        #expect(server.delegate.refusals.isEmpty)
    }

    @Test("IPv6 loopback and a DNS name both verify the coordinator's certificate")
    func ipv6AndHostName() throws {
        let server6 = try TestServer(host: "::1")
        let (c6, w6) = try server6.connect("hospital-a", host: "::1")
        #expect(w6.agentID == "hospital-a")
        c6.close()
        let server = try TestServer(host: "127.0.0.1")
        let (c4, w4) = try server.connect("hospital-b", host: "localhost")
        #expect(w4.agentID == "hospital-b")
        c4.close()
    }

    struct RefusalCase: Sendable, CustomStringConvertible {
        var agent: String
        var serverReason: String
        var clientReason: String
        var description: String { agent }
    }

    @Test("Bad agent certificates are refused, with the reason on both sides", arguments: [
        RefusalCase(agent: "expired", serverReason: "certificate has expired", clientReason: "certificate expired"),
        RefusalCase(agent: "notYetValid", serverReason: "certificate is not yet valid", clientReason: "bad certificate"),
        RefusalCase(agent: "otherCA", serverReason: "unable to get local issuer certificate", clientReason: "unknown ca"),
        RefusalCase(agent: "revoked", serverReason: "certificate revoked", clientReason: "certificate revoked"),
        RefusalCase(agent: "serverAsClient", serverReason: "unsuitable certificate purpose", clientReason: "unsupported certificate"),
    ])
    func badCertificateRefused(_ testCase: RefusalCase) throws {
        let server = try TestServer()
        let error = #expect(throws: WireError.self) { try server.connect(testCase.agent) }
        #expect(error?.code == .handshakeFailed)
        #expect(error?.message.contains(testCase.clientReason) == true, "client saw: \(error?.message ?? "nothing")")
        #expect(server.eventually { server.delegate.refusals.count == 1 })
        let refusal = try #require(server.delegate.refusals.first)
        #expect(refusal.stage == .handshake)
        #expect(refusal.reason.contains(testCase.serverReason), "server saw: \(refusal.reason)")
        #expect(refusal.address?.host == "127.0.0.1")
        let logged = server.logs.records.first { $0.message == "Connection refused" }
        #expect(logged?.metadata["refusal.reason"]?.contains(testCase.serverReason) == true)
        #expect(logged?.metadata["peer.address"]?.hasPrefix("127.0.0.1:") == true)
        #expect(server.delegate.joined.isEmpty)
    }

    @Test("A client offering only TLS 1.2 is refused")
    func tls12Refused() throws {
        let server = try TestServer()
        let context = try TLSContext(configuration: sharedFederation.clientTLS("hospital-a"), maximumProtocolVersionForTesting: TLS1_2_VERSION)
        let error = #expect(throws: WireError.self) {
            try WireClient.connect(host: "127.0.0.1", port: server.port, context: context, hello: Hello(), options: ConnectionOptions(),
                                   logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() }, handler: { _ in })
        }
        #expect(error?.code == .handshakeFailed)
        #expect(error?.message.contains("protocol version") == true, "client saw: \(error?.message ?? "nothing")")
        #expect(server.eventually { server.delegate.refusals.count == 1 })
        #expect(server.delegate.refusals.first?.reason.contains("unsupported protocol") == true, "\(server.delegate.refusals)")
    }

    @Test("An agent without a certificate is refused")
    func noClientCertificate() throws {
        let server = try TestServer()
        let context = try TLSContext(configuration: sharedFederation.clientTLS("hospital-a"), presentsCertificate: false)
        let error = #expect(throws: WireError.self) {
            try WireClient.connect(host: "127.0.0.1", port: server.port, context: context, hello: Hello(), options: ConnectionOptions(),
                                   logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() }, handler: { _ in })
        }
        #expect(error?.message.contains("certificate required") == true, "client saw: \(error?.message ?? "nothing")")
        #expect(server.eventually { server.delegate.refusals.count == 1 })
        #expect(server.delegate.refusals.first?.reason.contains("peer did not return a certificate") == true)
    }

    @Test("The agent refuses a coordinator whose certificate does not name the address it dialled")
    func hostNameMismatch() throws {
        let federation = try TestFederation()
        let (misnamed, key) = try federation.ca.issue(
            commonName: "coordinator", usage: .server(dnsNames: ["coordinator.example"], ipAddresses: []))
        try misnamed.write(to: federation.path("coordinator.crt"))
        try key.write(to: federation.path("coordinator.key"))
        let server = try TestServer(federation: federation)
        let error = #expect(throws: WireError.self) { try server.connect("hospital-a", host: "127.0.0.1") }
        #expect(error?.message.contains("IP address mismatch") == true, "client saw: \(error?.message ?? "nothing")")
        let named = #expect(throws: WireError.self) { try server.connect("hospital-a", host: "localhost") }
        #expect(named?.message.contains("hostname mismatch") == true, "client saw: \(named?.message ?? "nothing")")
        #expect(server.eventually { server.delegate.refusals.count == 2 })
        #expect(server.delegate.refusals.allSatisfy { $0.reason.contains("bad certificate") }, "\(server.delegate.refusals)")
    }

    @Test("An agent trusting another CA refuses the coordinator")
    func agentTrustsOtherCA() throws {
        let server = try TestServer()
        let error = #expect(throws: WireError.self) {
            try WireClient.connect(host: "127.0.0.1", port: server.port, context: try sharedFederation.clientContext("hospital-a", trusting: "other-ca.crt"),
                                   hello: Hello(), options: ConnectionOptions(), logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() },
                                   handler: { _ in })
        }
        #expect(error?.message.contains("certificate verify failed") == true, "client saw: \(error?.message ?? "nothing")")
    }

    @Test("A certificate revoked while the listener runs is refused after the CRL is reloaded")
    func crlReloadWithoutRestart() throws {
        let federation = try TestFederation()
        try federation.issueAgent("late-revoked", kind: .valid)
        let server = try TestServer(federation: federation)
        let (first, _) = try server.connect("late-revoked")
        first.close()
        try federation.revoke("late-revoked")
        try server.server.reloadRevocationList()
        let error = #expect(throws: WireError.self) { try server.connect("late-revoked") }
        #expect(error?.message.contains("certificate revoked") == true)
        #expect(server.eventually { server.delegate.refusals.contains { $0.reason.contains("certificate revoked") } })
        // Others are still served by the same listener.
        let (other, _) = try server.connect("hospital-a")
        other.close()
    }

    @Test("An incompatible protocol version gets FAILED_PRECONDITION naming both versions")
    func protocolVersionMismatch() throws {
        let server = try TestServer()
        let error = #expect(throws: RPCError.self) { try server.connect("hospital-a", hello: Hello(protocolVersion: 7)) }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("protocol 7") == true && error?.message.contains("protocol 1") == true,
                "got: \(error?.message ?? "")")
        #expect(server.eventually { server.delegate.refusals.first?.stage == .join })
    }

    @Test("Calls before Join are refused with FAILED_PRECONDITION")
    func callBeforeJoin() throws {
        let server = try TestServer()
        let tls = try server.rawConnection()
        defer { tls.close() }
        var buffer: [UInt8] = []
        let length = try Envelope(callID: 1, method: Methods.announceUpdate, endOfStream: true, body: .updateReady(UpdateReady()))
            .encodeFrame(into: &buffer, maxFrameBytes: 1 << 20)
        try tls.writeAll(Array(buffer[..<length]))
        let status = tls.readStatus(callID: 1)
        #expect(status?.code == .failedPrecondition)
    }

    @Test("A port already in use is reported as such, with what to do")
    func portInUse() throws {
        let server = try TestServer()
        let error = #expect(throws: WireError.self) { try Socket.listen(host: "127.0.0.1", port: server.port) }
        #expect(error?.message.contains("already in use") == true, "\(error?.message ?? "")")
    }

    @Test("A private key readable by others is refused at start with the chmod to run")
    func looseKeyPermissions() throws {
        let federation = try TestFederation()
        chmod(federation.path("hospital-a.key"), 0o644)
        let error = #expect(throws: WireError.self) { try federation.clientContext("hospital-a") }
        #expect(error?.message.contains("chmod 600") == true)
        let missing = #expect(throws: WireError.self) {
            try TLSContext(configuration: .makeClientConfiguration(certificateChainPath: "/nonexistent.crt", privateKeyPath: "/x", trustRootPath: "/y"))
        }
        #expect(missing?.message.contains("/nonexistent.crt") == true)
    }
}
