import FedAgent
@testable import FedCoordinator
import FedCore
import FedWire
import Foundation
import Logging

/// A development federation in a temporary folder, with helpers to run a coordinator and agents
/// in this process over real loopback mTLS.
final class Federation: @unchecked Sendable {
    let directory: String
    let files: DevelopmentFederation.Files
    let agents: [String]

    init(agents: [String] = DevelopmentFederation.defaultAgents) throws {
        WireProcess.ignoreBrokenPipeSignal()
        directory = NSTemporaryDirectory() + "fedcoord-e2e-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        files = try DevelopmentFederation.create(in: directory + "/certs", agents: agents)
        self.agents = agents
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    var stateDir: String { directory + "/state" }

    /// A coordinator configuration as JSON, with `selection` and top-level fields merged in.
    func coordinatorConfiguration(
        tensors: [TensorSpec] = [TensorSpec(name: "layer0.weight", shape: [256, 512]), TensorSpec(name: "layer0.bias", shape: [512])],
        rounds: Int, selection: [String: Any], extra: [String: Any] = [:]
    ) throws -> CoordinatorConfiguration {
        var json: [String: Any] = [
            "listen": ["host": "127.0.0.1", "port": 0],
            "tls": ["certificate": files.coordinatorCertificate, "private_key": files.coordinatorKey, "ca": files.caCertificate,
                    "crl": files.revocationList],
            "state_dir": stateDir,
            "federation": "e2e",
            "model": ["tensors": tensors.map { ["name": $0.name, "shape": $0.shape] }, "init": "seeded", "seed": 3],
            "rounds": rounds,
            "selection": selection,
            "heartbeat_interval_seconds": 0.5,
            // Plaintext unless a test turns secure aggregation on (it is on by default in the product).
            "secure_aggregation": ["enabled": false],
        ]
        for (key, value) in extra { json[key] = value }
        let path = directory + "/coordinator.json"
        try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted]).write(to: URL(fileURLWithPath: path))
        return try CoordinatorConfiguration.load(path: path)
    }

    func agentConfiguration(_ name: String, port: UInt16) -> AgentConfiguration {
        var configuration = AgentConfiguration(
            coordinator: .init(host: "localhost", port: port),
            tls: .init(certificate: files.agentCertificate(name), privateKey: files.agentKey(name), ca: files.caCertificate))
        configuration.heartbeatIntervalSeconds = 0.5
        configuration.reconnectInitialSeconds = 0.1
        configuration.reconnectMaxSeconds = 0.5
        configuration.witnessFile = witnessPath(name)
        return configuration
    }

    /// Where agent `name` keeps the round-log heads it was shown.
    func witnessPath(_ name: String) -> String { directory + "/witness-\(name).jsonl" }

    /// Runs a coordinator with `configuration` and in-process agents with `trainers` until the
    /// coordinator stops by itself (its rounds committed); false when it did not within `seconds`.
    func runToCompletion(_ configuration: CoordinatorConfiguration, trainers: [String: any LocalTrainer], seconds: Double,
                         smallRoundUpdates: Int = Coordinator.defaultSmallRoundUpdates) throws -> Bool {
        let coordinator = try RunningCoordinator(configuration, smallRoundUpdates: smallRoundUpdates)
        let agents = try RunningAgents(self, port: coordinator.port, trainers: trainers)
        defer { _ = agents }
        return coordinator.waitUntilFinished(seconds: seconds)
    }

    /// Silent, unless FEDCOORD_TEST_LOG is set (then everything goes to standard error).
    static let quiet: Logger = {
        if ProcessInfo.processInfo.environment["FEDCOORD_TEST_LOG"] != nil {
            var logger = Logger(label: "e2e") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = .debug
            return logger
        }
        return Logger(label: "e2e") { _ in SwiftLogNoOpLogHandler() }
    }()
}

/// Runs a blocking `run()` on its own thread.
func startThread(_ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.stackSize = 1 << 20
    thread.start()
}

/// Waits until `condition` holds, up to `seconds`.
func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Deadline.after(seconds: seconds)
    while !deadline.hasPassed {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// A running coordinator (stopped on deinit).
final class RunningCoordinator: @unchecked Sendable {
    let coordinator: Coordinator
    let done = DispatchSemaphore(value: 0)
    /// What ``Coordinator/run()`` threw, once it has returned.
    var runError: (any Error)? { lock.withLock { thrown } }
    private let lock = NSLock()
    private var thrown: (any Error)?  // lock

    /// - Parameter smallRoundUpdates: fewer than the default to add updates into the sums during a
    ///   small round (by default a round of up to eight goes straight into the mean at its close).
    init(_ configuration: CoordinatorConfiguration, logger: Logger = Federation.quiet,
         smallRoundUpdates: Int = Coordinator.defaultSmallRoundUpdates) throws {
        coordinator = try Coordinator(configuration: configuration, logger: logger, smallRoundUpdates: smallRoundUpdates)
        let coordinator = self.coordinator
        let done = self.done
        startThread { [self] in
            do { try coordinator.run() } catch { lock.withLock { thrown = error } }
            done.signal()
        }
        guard eventually(10, { coordinator.port != 0 }) else { throw WireError(.connectFailed, "coordinator did not start") }
    }

    deinit { coordinator.stop() }

    var port: UInt16 { coordinator.port }

    /// Waits until the coordinator stops by itself (its configured rounds are committed).
    func waitUntilFinished(seconds: Double) -> Bool { done.wait(timeout: .now() + seconds) == .success }
}

/// Agents running in this process (stopped on deinit).
final class RunningAgents: @unchecked Sendable {
    let agents: [String: Agent]

    /// Starts one agent per trainer; `prepare` runs on each before it dials (so that, for example,
    /// a planned dropout is in place before the first round can start).
    init(_ federation: Federation, port: UInt16, trainers: [String: any LocalTrainer],
         prepare: (String, Agent) -> Void = { _, _ in }) throws {
        var agents: [String: Agent] = [:]
        for (name, trainer) in trainers {
            let agent = try Agent(configuration: federation.agentConfiguration(name, port: port), trainer: trainer, logger: Federation.quiet)
            prepare(name, agent)
            agents[name] = agent
        }
        for agent in agents.values { startThread { agent.run() } }
        self.agents = agents
    }

    deinit { for agent in agents.values { agent.stop() } }
}
