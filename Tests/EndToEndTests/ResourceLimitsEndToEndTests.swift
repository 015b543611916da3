import FedAgent
import FedProtocol
@testable import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// What one peer, or many, can hold of the coordinator: descriptors, threads, connections, and
/// the broadcast, over real loopback mTLS with an honest federation beside.
@Suite("Resource limits end to end", .serialized)
struct ResourceLimitsEndToEndTests {
    /// This process's descriptors for TCP sockets with `port` at either end (the listener, the
    /// coordinator's accepted connections, our own clients), from /proc: unlike the process's
    /// whole descriptor count, other suites running at the same time do not add to it.
    static func socketDescriptors(port: UInt16) -> Int {
        var inodes = Set<String>()
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9 else { continue }
                let ports = [fields[1], fields[2]].compactMap { $0.split(separator: ":").last.flatMap { UInt16($0, radix: 16) } }
                if ports.contains(port) { inodes.insert(String(fields[9])) }
            }
        }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return descriptors.filter { fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd),
                  target.hasPrefix("socket:[") else { return false }
            return inodes.contains(String(target.dropFirst("socket:[".count).dropLast()))
        }.count
    }

    static func agentContext(_ federation: Federation, _ name: String) throws -> TLSContext {
        try TLSContext(configuration: .makeClientConfiguration(
            certificateChainPath: federation.files.agentCertificate(name), privateKeyPath: federation.files.agentKey(name),
            trustRootPath: federation.files.caCertificate))
    }

    @Test("Closed and never-joined connections give their descriptors back; a connection that never joins is cut at the join deadline")
    func descriptorsAndJoinDeadline() throws {
        let federation = try Federation()
        let configuration = try federation.coordinatorConfiguration(rounds: 0, selection: ["target": 2, "min_available": 2, "min_updates": 2],
                                                                    extra: ["limits": ["join_timeout_seconds": 1]])
        let coordinator = try RunningCoordinator(configuration)
        let context = try Self.agentContext(federation, "hospital-a")
        let port = coordinator.port
        let baseline = Self.socketDescriptors(port: port)
        // 150 agents that join and close again.
        for _ in 0..<150 {
            let agent = try ScriptedAgent(federation, name: "hospital-a", port: coordinator.port, upload: .honest(0))
            agent.connection.close()
        }
        // 150 that finish the handshake and never Join.
        var silent: [TLSConnection] = []
        for _ in 0..<150 {
            let socket = try Socket.connect(host: "127.0.0.1", port: coordinator.port, deadline: .after(seconds: 5))
            let tls = try TLSConnection(socket: socket, context: context, remoteAddress: nil, expectedServerName: "localhost")
            try tls.handshake(deadline: .after(seconds: 5))
            silent.append(tls)
        }
        #expect(eventually(10) { coordinator.coordinator.openConnectionCount <= 2 },
                "open: \(coordinator.coordinator.openConnectionCount) (the silent ones are cut after 1 s)")
        for tls in silent { tls.close() }
        silent = []
        // Our own 150 sockets are closed too now: what is left open is the coordinator's.
        #expect(baseline >= 1, "the listener's own socket is counted")
        #expect(eventually(10) { Self.socketDescriptors(port: port) <= baseline + 2 },
                "sockets on port \(port): \(Self.socketDescriptors(port: port)), baseline \(baseline)")
        let records = try RoundLog.verify(path: configuration.stateDir + "/rounds.jsonl")
        let refusals = records.events(RoundLogEvent.AgentRefused.self)
        #expect(refusals.count <= 2, "refusals are rate-limited per address and reason: \(refusals.count)")
        #expect(refusals.contains { $0.reason.contains("no Join") }, "\(refusals.map(\.reason))")
    }

    @Test("Calls beyond the per-connection limit are refused RESOURCE_EXHAUSTED at once, without a thread each")
    func callsPerConnection() throws {
        let federation = try Federation()
        let configuration = try federation.coordinatorConfiguration(rounds: 0, selection: ["target": 2, "min_available": 2, "min_updates": 2],
                                                                    extra: ["limits": ["max_calls_per_connection": 16]])
        let coordinator = try RunningCoordinator(configuration)
        let agent = try ScriptedAgent(federation, name: "hospital-a", port: coordinator.port, upload: .honest(0))
        // Calls whose request never ends: each holds its handler until the connection goes.
        var calls: [ClientCall] = []
        for _ in 0..<500 {
            let call = try agent.connection.makeCall(method: Methods.announceUpdate, timeout: 30)
            try call.send(.updateReady(UpdateReady()), endOfStream: false)
            calls.append(call)
        }
        // Every call is answered: the ones beyond the limit at once, the others by their handler.
        var exhausted = 0, answered = 0
        for call in calls {
            do { _ = try call.receive() } catch let error as RPCError {
                answered += 1
                if error.code == .resourceExhausted { exhausted += 1 }
            } catch {}
        }
        #expect(answered == 500 && exhausted > 0, "answered \(answered), exhausted \(exhausted)")
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
        #expect(threads < 200, "threads in the process: \(threads)")
        // An honest agent on its own connection is not affected.
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: ["hospital-b": BenchmarkTrainer(step: 0.001, exampleCount: 10)])
        #expect(eventually(10) { coordinator.coordinator.registry.connection("hospital-b") != nil })
        _ = agents
    }

    @Test("A selected site that stops reading its model is cut at the send stall; rounds go on without waiting for it")
    func stalledReader() throws {
        let federation = try Federation()
        // 16 MiB of model: more than loopback's socket buffers hold, so the send really blocks.
        let configuration = try federation.coordinatorConfiguration(
            tensors: [TensorSpec(name: "w", shape: [4096, 1024])], rounds: 4,
            selection: ["target": 3, "overselect": 1.34, "min_available": 3, "min_updates": 3, "round_deadline_seconds": 20,
                        "selection_timeout_seconds": 1],
            extra: ["limits": ["send_stall_seconds": 2]])
        let coordinator = try RunningCoordinator(configuration)
        let staller = try ScriptedAgent(federation, name: "hospital-d", port: coordinator.port, upload: .honest(0))
        let release = DispatchSemaphore(value: 0)
        staller.stallTrain = release
        defer { for _ in 0..<8 { release.signal() } }
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: Self.honest)
        let started = Deadline.now
        #expect(coordinator.waitUntilFinished(seconds: 60), "records: \((try? RoundLog.verify(path: configuration.stateDir + "/rounds.jsonl"))?.map(\.type) ?? [])")
        let seconds = -started.remainingSeconds
        _ = agents
        let records = try RoundLog.verify(path: configuration.stateDir + "/rounds.jsonl")
        #expect(records.committedRounds.count == 4)
        // Four rounds in well under the 120 s one stalled send used to hold each commit.
        #expect(seconds < 60)
        #expect(records.events(RoundLogEvent.RoundClosed.self).contains { $0.selected.contains("hospital-d") }, "the staller was selected")
        #expect(eventually(10) { staller.connection.isClosed }, "cut at the send stall")
    }

    static let honest: [String: any LocalTrainer] = [
        "hospital-a": BenchmarkTrainer(step: 0.001, exampleCount: 100),
        "hospital-b": BenchmarkTrainer(step: 0.002, exampleCount: 200),
        "hospital-c": BenchmarkTrainer(step: 0.003, exampleCount: 300),
    ]
}
