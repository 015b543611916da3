import FedAgent
import FedHashing
import FedProtocol
import FedSecAgg
import FedWire
import Foundation
import Testing

/// The real agent against a scripted coordinator: what it checks of the model it receives (the
/// CRC-32C of every tensor always, the model's SHA-256 when a secure round is bound to it), and a
/// task that arrives before its join has returned.
@Suite("Agent against a scripted coordinator")
struct AgentModelCheckTests {
    /// A coordinator that only welcomes agents and hands over their connections.
    final class ScriptedCoordinator: WireServerDelegate, @unchecked Sendable {
        private let lock = NSLock()
        private var joined: RPCConnection?
        /// Runs before the Welcome is sent, while the agent still waits for its join to return.
        var beforeWelcome: (@Sendable (RPCConnection) -> Void)?
        func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome {
            beforeWelcome?(connection)
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
            _ = try weights.withUnsafeBufferPointer { try TensorStream.send(name: "w", shape: [100, 100], floats: $0, to: call) }
            try call.finishSending()
            try call.expectEnd()
            return nil
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    static func server(_ federation: Federation, _ coordinator: ScriptedCoordinator) throws -> WireServer {
        var wire = WireServer.Configuration(tls: .makeServerConfiguration(
            certificateChainPath: federation.files.coordinatorCertificate, privateKeyPath: federation.files.coordinatorKey,
            trustRootPath: federation.files.caCertificate, revocationListPath: federation.files.revocationList))
        wire.host = "127.0.0.1"
        return try WireServer(configuration: wire, delegate: coordinator, logger: Federation.quiet)
    }

    @Test("A task that arrives before the agent's join has returned is trained and announced on the connection it came on")
    func taskBeforeJoinReturns() throws {
        let federation = try Federation()
        let coordinator = ScriptedCoordinator()
        final class AgentBox: @unchecked Sendable { var agent: Agent? }
        let box = AgentBox()
        // The coordinator sends a task as soon as the agent has said Hello (as a real one may, once
        // the Welcome is on its way) and holds the Welcome until the agent has announced its update.
        // An agent that announced on the connection its join had returned (not yet set) dropped the
        // announcement silently; the round then waited for it until its deadline.
        coordinator.beforeWelcome = { connection in
            var task = TrainTask()
            task.roundID = 3
            task.tensorCount = 1
            startThread { [task] in _ = Self.train(task, on: connection) }
            _ = eventually(10) { box.agent?.announcementOutcomes[3] != nil }
        }
        let server = try Self.server(federation, coordinator)
        server.start()
        defer { server.stop() }
        let agent = try Agent(configuration: federation.agentConfiguration("hospital-a", port: server.port),
                              trainer: BenchmarkTrainer(), logger: Federation.quiet)
        box.agent = agent
        startThread { agent.run() }
        defer { agent.stop() }
        #expect(eventually(15) { coordinator.connection != nil }, "the agent did not join")
        // The announcement reached the coordinator, which refuses calls before the join completes.
        let outcome = try #require(agent.announcementOutcomes[3], "the update was never announced")
        #expect(outcome.code == .failedPrecondition && outcome.message.contains(Methods.join), "\(outcome)")
    }

    @Test("A secure round's model is checked against its SHA-256; a plaintext round's against the CRC only")
    func modelHash() throws {
        let federation = try Federation()
        let coordinator = ScriptedCoordinator()
        let server = try Self.server(federation, coordinator)
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
