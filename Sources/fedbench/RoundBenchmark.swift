import FedCoordinator
import FedWire
import Foundation

/// The round benchmark: a real `fedcoord` process and N real `fedagent` processes on loopback
/// with the benchmark trainer and P Float32 parameters; per grid point the median round time,
/// bytes moved, the wire limit (bytes ÷ the TLS throughput measured in the same run, just before
/// and just after the point) and the coordinator's peak RSS (VmHWM).
final class RoundBenchmark {
    struct Point {
        var parameters: Int
        var agents: Int
        /// Secure aggregation on.
        var secure = false
        /// Agents (the last ones) that drop out after the others have masked with them, every round.
        var dropouts = 0
        /// How the coordinator combines the updates (plaintext only, unless `mean`).
        var strategy = AggregationStrategy.mean
    }

    struct Result {
        var point: Point
        var medianRoundSeconds: Double
        var bytesPerRound: UInt64
        var peakRSS: Int
        /// Median seconds the coordinator spent recovering the dropped agents' masks.
        var recoverySeconds: Double?
        /// The TLS stream throughput measured around this point (median of 3 before and 3 after), GB/s.
        var tlsGBps = 0.0
        var error: String?
    }

    let binDirectory: String
    let rounds: Int

    init(binDirectory: String, rounds: Int) {
        self.binDirectory = binDirectory
        self.rounds = rounds
    }

    /// Flower 1.42 on this machine (gRPC, no TLS), seconds per round, from the issue.
    static let flower: [String: String] = [
        "1000000x2": "0.09", "1000000x8": "0.33", "1000000x32": "1.29", "10000000x2": "2.1", "10000000x8": "7.5",
        "10000000x32": "OOM", "50000000x8": "OOM",
    ]

    func run(_ point: Point) -> Result {
        var result = Result(point: point, medianRoundSeconds: 0, bytesPerRound: 0, peakRSS: 0)
        let directory = NSTemporaryDirectory() + "fedbench-rounds-\(getpid())-\(point.parameters)-\(point.agents)-\(point.secure)-\(point.dropouts)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var processes: [Process] = []
        defer {
            for process in processes where process.isRunning { kill(process.processIdentifier, SIGTERM) }
            for process in processes { process.waitUntilExit() }
        }
        do {
            let names = (1...point.agents).map { String(format: "agent-%02d", $0) }
            let files = try DevelopmentFederation.create(in: directory + "/certs", agents: names)
            let listener = try Socket.listen(host: "127.0.0.1", port: 0)
            let port = listener.localAddress?.port ?? 0
            listener.close()
            let width = 1000
            let rows = point.parameters / width
            let coordinatorJSON = """
                {"listen": {"host": "127.0.0.1", "port": \(port)},
                 "tls": {"certificate": "\(files.coordinatorCertificate)", "private_key": "\(files.coordinatorKey)",
                         "ca": "\(files.caCertificate)", "crl": "\(files.revocationList)"},
                 "state_dir": "\(directory)/state", "keep_checkpoints": 1,
                 "model": {"tensors": [{"name": "w", "shape": [\(rows), \(width)]}]},
                 "rounds": \(rounds + 1),
                 "selection": {"target": \(point.agents), "min_available": \(point.agents), "min_updates": \(point.agents - point.dropouts),
                               "round_deadline_seconds": 600, "selection_timeout_seconds": 0.1, "collect_grace_seconds": 600,
                               "failure_backoff_seconds": 0.01},
                 "secure_aggregation": {"enabled": \(point.secure), "max_dropout_fraction": 0.25, "keys_timeout_seconds": 60,
                                        "unmask_timeout_seconds": 120},
                 "strategy": "\(point.strategy.rawValue)", "robust": {"krum_f": \(max(0, min(1, (point.agents - 3) / 2)))},
                 "heartbeat_interval_seconds": 5}
                """
            try coordinatorJSON.write(toFile: directory + "/coordinator.json", atomically: true, encoding: .utf8)
            let coordinator = try launch("fedcoord", ["serve", "--config", directory + "/coordinator.json", "--log-level", "error"])
            processes.append(coordinator)
            for (index, name) in names.enumerated() {
                let json = """
                    {"coordinator": {"host": "127.0.0.1", "port": \(port)},
                     "tls": {"certificate": "\(files.agentCertificate(name))", "private_key": "\(files.agentKey(name))", "ca": "\(files.caCertificate)"},
                     "trainer": {"kind": "benchmark", "examples": 100},
                     "drill": \(index >= point.agents - point.dropouts ? "{\"secure_dropout_stage\": \"masked_input\"}" : "{}"),
                     "heartbeat_interval_seconds": 5, "reconnect_initial_seconds": 0.2, "reconnect_max_seconds": 1}
                    """
                let path = directory + "/\(name).json"
                try json.write(toFile: path, atomically: true, encoding: .utf8)
                processes.append(try launch("fedagent", ["run", "--config", path, "--log-level", "error"]))
            }
            // VmHWM only grows: the last reading before the coordinator exits is its peak.
            while coordinator.isRunning {
                result.peakRSS = max(result.peakRSS, Self.peakRSS(pid: coordinator.processIdentifier))
                usleep(100_000)
            }
            guard coordinator.terminationStatus == 0 else {
                result.error = "coordinator exited with \(coordinator.terminationStatus)"
                return result
            }
            let records = try RoundLog.verify(path: directory + "/state/rounds.jsonl").filter { $0.committedRound != nil }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let times = records.compactMap { formatter.date(from: $0.time) }
            // Round 1 includes start-up and connections; the measured rounds are 2…rounds+1,
            // each from the previous commit to its own commit.
            let durations = zip(times.dropFirst(), times).map { $0.timeIntervalSince($1) }.sorted()
            result.medianRoundSeconds = durations.isEmpty ? 0 : durations[durations.count / 2]
            let recoveries = records.dropFirst().compactMap(\.committedRound?.recoverySeconds).sorted()
            if !recoveries.isEmpty { result.recoverySeconds = recoveries[recoveries.count / 2] }
            if let last = records.last {
                result.bytesPerRound = last.committedRound?.totalBytes ?? 0
            }
        } catch {
            result.error = "\(error)"
        }
        return result
    }

    private func launch(_ name: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binDirectory + "/" + name)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func peakRSS(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    func printTable(_ results: [Result]) {
        let strategies = Set(results.map(\.point.strategy.rawValue)).sorted().joined(separator: ", ")
        print("Rounds: fedcoord + N fedagent processes on loopback, mTLS, benchmark trainer, FedAvg after \(strategies); median of \(rounds) rounds")
        print("wire limit = bytes moved per round ÷ TLS throughput (median of 6 × 1 GiB, 3 measured just before the point and")
        print("             3 just after, shown as TLS GB/s: the machine is shared and its speed drifts)")
        print("")
        print("      P    N   round s   TLS GB/s   wire limit s   ratio   bytes/round   coord. peak RSS   RSS target   Flower 1.42 (no TLS)")
        for result in results {
            let p = result.point
            let modelBytes = Double(p.parameters * 4)
            let target = 3 * modelBytes + 64 * 1048576
            let label = p.parameters >= 1_000_000 ? "\(p.parameters / 1_000_000)M" : "\(p.parameters)"
            if let error = result.error {
                print(String(format: "%7@ %4d   failed: %@", label as NSString, p.agents, error as NSString))
                continue
            }
            let wire = Double(result.bytesPerRound) / (max(result.tlsGBps, 1e-9) * 1e9)
            print(String(
                format: "%7@ %4d %9.2f %10.2f %14.2f %7.2f %10.1f MB %14.0f MB %9.0f MB %@ %@",
                label as NSString, p.agents, result.medianRoundSeconds, result.tlsGBps, wire, result.medianRoundSeconds / max(wire, 1e-9),
                Double(result.bytesPerRound) / 1e6, Double(result.peakRSS) / 1048576, target / 1048576,
                (result.peakRSS <= Int(target) ? "ok  " : "OVER") as NSString,
                (Self.flower["\(p.parameters)x\(p.agents)"] ?? "-") as NSString))
        }
    }
}
