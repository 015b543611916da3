import FedAgent
import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// A hostile peer from outside the project (Tests/Hostile/hostile_client.py: Google's protobuf
/// runtime over Python's TLS) attacks the real `fedcoord` while an honest federation trains: each
/// attack must be refused, and the honest rounds go on with the coordinator's descriptors and
/// memory bounded.
@Suite("Hostile client from outside", .serialized)
struct HostileClientEndToEndTests {
    static var repository: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    static func processFigure(_ pid: Int32) -> (rssMB: Double, descriptors: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
        return (rss / 1024, descriptors)
    }

    @Test("Every attack of the outside client is refused; the honest rounds go on; descriptors and memory stay bounded")
    func outsideClient() throws {
        let python = Self.repository + "/.test/venv/bin/python"
        try #require(FileManager.default.isExecutableFile(atPath: python), "run `make test-venv` (make test does) for the Python protobuf runtime")
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let port = try freePort()
        let config = try ProcessEndToEndTests.writeConfiguration(
            federation, port: port, rounds: 0,
            extra: #", "limits": {"join_timeout_seconds": 2}"#)
        // Three honest sites make a round; the hostile hospital-d is invited too (target 3 of 4).
        var json = try String(contentsOfFile: config, encoding: .utf8)
        json = json.replacingOccurrences(of: #""target": 5, "min_available": 5, "min_updates": 5"#,
                                          with: #""target": 3, "overselect": 1.34, "min_available": 3, "min_updates": 3"#)
        try json.write(toFile: config, atomically: true, encoding: .utf8)
        let coordinator = Process()
        coordinator.executableURL = URL(fileURLWithPath: fedcoord)
        coordinator.arguments = ["serve", "--config", config, "--log-level", "error"]
        coordinator.standardError = FileHandle.nullDevice
        try coordinator.run()
        defer { coordinator.terminate(); coordinator.waitUntilExit() }
        let honest = ["hospital-a", "hospital-b", "hospital-c"]
        let agents = try RunningAgents(federation, port: port, trainers: Dictionary(uniqueKeysWithValues: honest.map {
            ($0, BenchmarkTrainer(step: 0.001, exampleCount: 10, delaySeconds: 0.05))
        }))
        defer { _ = agents }
        func committed() -> Int { ProcessEndToEndTests.committedRounds(federation.stateDir).count }
        #expect(eventually(30) { committed() >= 3 })
        // Before: ten seconds of honest rounds.
        let before = (rounds: committed(), figure: Self.processFigure(coordinator.processIdentifier), at: Deadline.now)
        usleep(10_000_000)
        let quietRate = Double(committed() - before.rounds) / 10 * 60
        // The attack.
        let attackStart = (rounds: committed(), at: Deadline.now)
        let client = Process()
        client.executableURL = URL(fileURLWithPath: python)
        client.arguments = [Self.repository + "/Tests/Hostile/hostile_client.py", "--host", "127.0.0.1", "--port", "\(port)",
                            "--ca", federation.files.caCertificate, "--cert", federation.files.agentCertificate("hospital-d"),
                            "--key", federation.files.agentKey("hospital-d"), "--proto", Self.repository + "/proto"]
        let output = Pipe()
        client.standardOutput = output
        client.standardError = FileHandle.nullDevice
        try client.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        client.waitUntilExit()
        let attackSeconds = -attackStart.at.remainingSeconds
        let attackRate = Double(committed() - attackStart.rounds) / attackSeconds * 60
        usleep(3_000_000)
        let after = Self.processFigure(coordinator.processIdentifier)
        #expect(coordinator.isRunning, "the coordinator is still up")
        let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(String(decoding: data, as: UTF8.self))")
        let results = try #require(report["results"] as? [[String: Any]], "\(report)")
        #expect(results.count >= 12, "\(report)")
        for result in results { #expect(result["held"] as? Bool == true, "\(result)") }
        print("hostile client: \(results.count) attacks held in \(String(format: "%.1f", attackSeconds)) s; rounds/min quiet "
            + "\(String(format: "%.0f", quietRate)), under attack \(String(format: "%.0f", attackRate)); coordinator RSS "
            + "\(String(format: "%.0f", before.figure.rssMB)) → \(String(format: "%.0f", after.rssMB)) MB, descriptors "
            + "\(before.figure.descriptors) → \(after.descriptors)")
        #expect(attackRate > 0, "honest rounds went on during the attack")
        #expect(after.descriptors <= before.figure.descriptors + 16)
        // AddressSanitizer's quarantine and shadow memory make RSS meaningless under `make sanitize`.
        if ProcessInfo.processInfo.environment["FEDCOORD_SANITIZER"] != "address" {
            #expect(after.rssMB <= before.figure.rssMB + 100)
        }
        let refusals = try RoundLog.verify(path: federation.stateDir + "/rounds.jsonl").events(RoundLogEvent.AgentRefused.self)
        #expect(refusals.count < 50, "refusal records are rate-limited: \(refusals.count)")
    }
}
