import FedAgent
@testable import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// The real `fedcoord` executable, built next to this test bundle.
func executable(_ name: String) throws -> String {
    let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [directory, directory.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw WireError(.configuration, "\(name) is not built next to the tests; run `swift build --build-tests` first")
}

/// Runs a process; returns its exit status and standard error.
@discardableResult
func runProcess(_ path: String, _ arguments: [String], timeout: Double = 60) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let data = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A free loopback port (bound and released; good enough for a test).
func freePort() throws -> UInt16 {
    let socket = try Socket.listen(host: "127.0.0.1", port: 0)
    defer { socket.close() }
    return socket.localAddress?.port ?? 0
}

@Suite("Coordinator process", .serialized)
struct ProcessEndToEndTests {
    static func writeConfiguration(_ federation: Federation, port: UInt16, rounds: Int, extra: String = "", secure: Bool = false) throws -> String {
        let path = federation.directory + "/coordinator.json"
        let files = federation.files
        let json = """
            {
              "listen": {"host": "127.0.0.1", "port": \(port)},
              "tls": {"certificate": "\(files.coordinatorCertificate)", "private_key": "\(files.coordinatorKey)",
                      "ca": "\(files.caCertificate)", "crl": "\(files.revocationList)"},
              "state_dir": "\(federation.stateDir)",
              "model": {"tensors": [{"name": "w", "shape": [128, 32]}, {"name": "b", "shape": [32]}], "init": "seeded", "seed": 5},
              "rounds": \(rounds),
              "selection": {"target": 5, "min_available": 5, "min_updates": 5, "round_deadline_seconds": 20,
                            "selection_timeout_seconds": 0.2, "failure_backoff_seconds": 0.5},
              "secure_aggregation": {"enabled": \(secure)}\(extra),
              "heartbeat_interval_seconds": 0.5
            }
            """
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func committedRounds(_ stateDir: String) -> [UInt64] {
        ((try? RoundLog.verify(path: stateDir + "/rounds.jsonl")) ?? []).committedRounds.map(\.round)
    }

    @Test("SIGKILL between rounds and mid-round: restarts continue from the last committed round, agents reconnect, the log verifies",
          arguments: [false, true])
    func killAndResume(secure: Bool) throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let port = try freePort()
        let config = try Self.writeConfiguration(federation, port: port, rounds: 8, secure: secure)
        let trainers: [String: any LocalTrainer] = Dictionary(uniqueKeysWithValues: federation.agents.enumerated().map { index, name in
            (name, BenchmarkTrainer(step: 0.001 * Float(index + 1), exampleCount: UInt64(10 * (index + 1)), delaySeconds: 0.3))
        })
        let agents = try RunningAgents(federation, port: port, trainers: trainers)

        func start() throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: fedcoord)
            process.arguments = ["serve", "--config", config, "--log-level", "warning"]
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        // Between rounds: right after round 2 commits.
        var coordinator = try start()
        #expect(eventually(60) { Self.committedRounds(federation.stateDir).count >= 2 })
        kill(coordinator.processIdentifier, SIGKILL)
        coordinator.waitUntilExit()
        #expect(coordinator.terminationReason == .uncaughtSignal)
        // Mid-round: 0.15 s after round 4 commits, round 5's agents are still training.
        coordinator = try start()
        #expect(eventually(60) { Self.committedRounds(federation.stateDir).count >= 4 })
        usleep(150_000)
        kill(coordinator.processIdentifier, SIGKILL)
        coordinator.waitUntilExit()
        let beforeLast = Self.committedRounds(federation.stateDir)
        // Last start: runs to the configured 8 rounds and exits 0.
        coordinator = try start()
        coordinator.waitUntilExit()
        #expect(coordinator.terminationStatus == 0)
        _ = agents

        let rounds = Self.committedRounds(federation.stateDir)
        #expect(rounds == Array(1...8), "each round committed exactly once, in order: \(rounds) (before the last start: \(beforeLast))")
        let (status, _) = try runProcess(fedcoord, ["rounds", "verify", "--state", federation.stateDir])
        #expect(status == 0)
        for agent in agents.agents.values { #expect(agent.joinCount >= 3, "agents reconnect on their own") }
        // Nothing lost or doubled: the model is 8 rounds of the weighted mean.
        let configuration = try CoordinatorConfiguration.load(path: config)
        var expected = try configuration.initialModel().values
        let total = trainers.values.reduce(0.0) { $0 + Double(($1 as! BenchmarkTrainer).exampleCount) }
        for _ in 0..<8 {
            for index in expected.indices {
                var sum = 0.0
                for trainer in trainers.values.map({ $0 as! BenchmarkTrainer }) {
                    sum += Double(trainer.exampleCount) * Double(trainer.step * Float(1 + index % 7))
                }
                expected[index] = Float(Double(expected[index]) + sum / total)
            }
        }
        let model = try CheckpointStore(directory: federation.stateDir).readModel(version: 8)
        let error = zip(model.values, expected).map { abs(Double($0) - Double($1)) }.max() ?? 1
        // Plaintext: exact up to Float32. Secure: 8 rounds of fixed-point rounding (§3.9: about
        // W_max·√N / (2·2^e·W) per round and coordinate; 8× that allowed).
        let s = configuration.secureAggregation
        let bound = secure ? 8 * 8 * Double(s.maxWeight) * 5.0.squareRoot() / (2 * Double(1 << 27) * total) : 1e-6
        #expect(error < bound, "max abs error \(error), bound \(bound)")
    }

    @Test("SIGTERM stops the coordinator gracefully (exit 0, committed state kept)")
    func sigterm() throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let config = try Self.writeConfiguration(federation, port: try freePort(), rounds: 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: fedcoord)
        process.arguments = ["serve", "--config", config]
        process.standardError = FileHandle.nullDevice
        try process.run()
        #expect(eventually(10) { FileManager.default.fileExists(atPath: federation.stateDir + "/rounds.jsonl") })
        usleep(300_000)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0)
    }

    @Test("A configuration of only the required fields starts: the defaults (secure aggregation on) fit together")
    func defaultsStart() throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let files = federation.files
        let config = federation.directory + "/minimal.json"
        try """
            {"listen": {"port": \(try freePort())},
             "tls": {"certificate": "\(files.coordinatorCertificate)", "private_key": "\(files.coordinatorKey)",
                     "ca": "\(files.caCertificate)", "crl": "\(files.revocationList)"},
             "state_dir": "\(federation.stateDir)",
             "model": {"tensors": [{"name": "w", "shape": [4, 2]}]}}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: fedcoord)
        process.arguments = ["serve", "--config", config]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        #expect(eventually(10) { ((try? RoundLog.verify(path: federation.stateDir + "/rounds.jsonl")) ?? []).contains { $0.type == "coordinator_started" } })
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "stderr: \(stderr)")
    }

    @Test("A configuration that is not valid JSON is refused with the line and column of the mistake")
    func syntaxError() throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let config = federation.directory + "/broken.json"
        try "{\n  \"listen\": {\"port\": 7443},\n  \"tls\": }\n}\n".write(toFile: config, atomically: true, encoding: .utf8)
        let (status, errors) = try runProcess(fedcoord, ["serve", "--config", config])
        #expect(status != 0)
        #expect(errors.contains("is not valid JSON at line 3, column 10 (`\"tls\": }`)"), "stderr: \(errors)")
    }

    @Test("Bad configurations are refused at start with a message that says what to fix", arguments: [
        ("--set selection.min_updates=9", "min_updates (9) must not exceed target (5)"),
        ("--set selection.round_deadline_seconds=0", "round_deadline_seconds must be positive"),
        ("--set selection.colour=1", "unknown field 'selection.colour'"),
        ("--log-level verbose", "The value 'verbose' is invalid for '--log-level"),
        ("--set listen.host=\"10.255.255.1\"", "listen.host \"10.255.255.1\", listen.port"),
        ("--set listen.host=\"10.255.255.1\"", "it is not an address of this machine; choose one of its addresses"),
        ("--state-dir /etc/hostname/state", "cannot create the state folder '/etc/hostname/state' (state_dir): Not a directory; set state_dir"),
        ("--set secure_aggregation.dp.sigma=1", "unknown field 'secure_aggregation.dp.sigma'"),
        ("--set tls.crl=null", "required field 'tls.crl' is missing"),
        ("--set selection.target=\"five\"", "field 'selection.target' has the wrong type"),
        ("--set tls.certificate=\"/nowhere/coordinator.crt\"", "/nowhere/coordinator.crt"),
        ("--set optimizer.kind=\"sgd\"", "optimizer.kind must be \"fedavg\", \"fedavgm\", \"fedadagrad\", \"fedadam\" or \"fedyogi\", not \"sgd\""),
        ("--set model.init=\"random\"", "model.init must be \"zeros\" or \"seeded\", not \"random\""),
        ("--set secure_aggregation.graph=\"ring\"", "secure_aggregation.graph must be \"auto\", \"complete\" or \"sparse\", not \"ring\""),
        ("--set task.local_optimizer=\"rmsprop\"", "task.local_optimizer must be \"sgd\" or \"adam\", not \"rmsprop\""),
        ("--set strategy=\"mode\"", "strategy must be \"mean\", \"median\", \"trimmed_mean\" or \"krum\", not \"mode\""),
        ("--set secure_aggregation.enabled=true --set strategy=\"median\"", "needs each site's individual update, which secure aggregation hides"),
        ("--set secure_aggregation.enabled=true --set selection.min_updates=2", "secure aggregation needs at least 3 survivors"),
    ])
    func badConfiguration(override: String, message: String) throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let config = try Self.writeConfiguration(federation, port: try freePort(), rounds: 1)
        let parts = override.split(separator: " ").map(String.init)
        let (status, errors) = try runProcess(fedcoord, ["serve", "--config", config] + parts)
        #expect(status != 0)
        #expect(errors.contains(message), "stderr: \(errors)")
    }

    @Test("rounds verify exits non-zero naming the first bad record")
    func verifyTampered() throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let log = try RoundLog(path: federation.directory + "/rounds.jsonl")
        for round in 1...3 {
            try log.append(RoundLogRecord(.round(.init(round: UInt64(round), attempt: 0, status: "committed"))))
        }
        var text = try String(contentsOfFile: log.path, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"round\":2", with: "\"round\":7")
        try text.write(toFile: log.path, atomically: true, encoding: .utf8)
        let (status, errors) = try runProcess(fedcoord, ["rounds", "verify", "--state", federation.directory])
        #expect(status == 1)
        #expect(errors.contains("record 3"), "stderr: \(errors)")
    }
}
