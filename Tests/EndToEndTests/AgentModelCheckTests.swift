import FedAgent
import FedSecAgg
import FedWire
import Foundation
import Testing

/// What the real agent checks of the model it receives: the CRC-32C of every tensor always, and
/// the model's SHA-256 when a secure round is bound to it. The coordinator side is scripted.
@Suite("Agent's model check")
struct AgentModelCheckTests {
    /// A coordinator that only welcomes agents and hands over their connections.
    final class ScriptedCoordinator: WireServerDelegate, @unchecked Sendable {
        private let lock = NSLock()
        private var joined: RPCConnection?
        func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome {
            lock.withLock { joined = connection }
            return Welcome(federation: "e2e")
        }
        func handle(_ call: ServerCall) throws { throw RPCError(.unimplemented, "scripted coordinator") }
        func connectionClosed(_ connection: RPCConnection, error: WireError?) {}
        func connectionRefused(_ refusal: ConnectionRefusal) {}
        var connection: RPCConnection? { lock.withLock { joined } }
    }

    static let weights = (0..<10_000).map { Float($0 % 101) * 0.01 }

    /// Sends a Train call with `task` and the model; returns how the agent answered.
    static func train(_ task: TrainTask, on connection: RPCConnection) -> RPCStatus.Code? {
        do {
            let call = try connection.makeCall(method: Methods.train, timeout: 10)
            defer { call.finish() }
            try call.send(.trainTask(task))
            try weights.withUnsafeBufferPointer { try TensorStream.send(name: "w", shape: [100, 100], floats: $0, to: call) }
            try call.finishSending()
            try call.expectEnd()
            return nil
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    @Test("A secure round's model is checked against its SHA-256; a plaintext round's against the CRC only")
    func modelHash() throws {
        let federation = try Federation()
        let coordinator = ScriptedCoordinator()
        var wire = WireServer.Configuration(tls: .makeServerConfiguration(
            certificateChainPath: federation.files.coordinatorCertificate, privateKeyPath: federation.files.coordinatorKey,
            trustRootPath: federation.files.caCertificate, revocationListPath: federation.files.revocationList))
        wire.host = "127.0.0.1"
        let server = try WireServer(configuration: wire, delegate: coordinator, logger: Federation.quiet)
        server.start()
        defer { server.stop() }
        let agent = try Agent(configuration: federation.agentConfiguration("hospital-a", port: server.port),
                              trainer: BenchmarkTrainer(), logger: Federation.quiet)
        startThread { agent.run() }
        defer { agent.stop() }
        #expect(eventually(10) { coordinator.connection != nil }, "the agent did not join")
        let connection = try #require(coordinator.connection)

        let actual = Self.weights.withUnsafeBytes { ModelDigest.combine([SHA256Hasher.hash($0)]) }
        let another = SecAggCrypto.sha256(Array("another model".utf8))
        func secureTask(naming hash: [UInt8]) -> TrainTask {
            var task = TrainTask()
            task.roundID = 7
            task.tensorCount = 1
            task.modelSHA256 = hash
            task.secureAggregation = SecureAggregationTask(config: SecAggConfig(
                roundID: 7, sessionNonce: SecAggCrypto.sha256([1]), roster: ["hospital-a", "hospital-b"], neighborDegree: 1, threshold: 2,
                minSurvivors: 2, graphSeed: SecAggCrypto.sha256([2]), vectorLength: UInt64(Self.weights.count + 2),
                scaleExponent: 20, clip: 1, maxWeight: 1000, modelSHA256: hash), index: 1)
            return task
        }
        // A coordinator that names one model (in the task and the round) and streams another, as in
        // a model-inconsistency attack: refused as corrupted, before anything else.
        #expect(Self.train(secureTask(naming: another), on: connection) == .dataLoss)
        // The right hash passes the check and reaches the next one: this round was never set up here.
        #expect(Self.train(secureTask(naming: actual), on: connection) == .failedPrecondition)
        // A plaintext round does not hash the model: a wrong announced hash does not matter.
        var plaintext = TrainTask()
        plaintext.roundID = 8
        plaintext.tensorCount = 1
        plaintext.modelSHA256 = another
        #expect(Self.train(plaintext, on: connection) == nil)
        _ = federation
    }
}
