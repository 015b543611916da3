import FedAgent
import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// `fedcoord serve` never starts over a state folder whose history is gone or cut short, never
/// deletes a trained checkpoint, and `fedcoord state repair` makes the folder consistent again.
@Suite("State folder safety", .serialized)
struct StateSafetyEndToEndTests {
    static func serve(_ fedcoord: String, _ config: String, rounds: Int) throws -> (Int32, String) {
        try runProcess(fedcoord, ["serve", "--config", config, "--rounds", "\(rounds)", "--log-level", "warning"], timeout: 60)
    }

    static func checkpoints(_ stateDir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: stateDir + "/checkpoints")) ?? []).filter { $0.hasPrefix("model-") }.sorted()
    }

    /// Removes every record after round `round`'s (as someone hiding the last rounds would).
    static func cutAfterRound(_ path: String, _ round: UInt64) throws {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        let records = try RoundLog.verify(path: path)
        let keep = try #require(records.firstIndex { $0.committedRound?.round == round }) + 1
        try (lines.prefix(keep).joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test("A missing or shortened log stops serve with what to do; repair resumes from the last round a checkpoint agrees with")
    func missingAndShortenedLog() throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let port = try freePort()
        let config = try ProcessEndToEndTests.writeConfiguration(federation, port: port, rounds: 6)
        let trainers: [String: any LocalTrainer] = Dictionary(uniqueKeysWithValues: federation.agents.map {
            ($0, BenchmarkTrainer(step: 0.001, exampleCount: 10))
        })
        let agents = try RunningAgents(federation, port: port, trainers: trainers)
        defer { _ = agents }
        let state = federation.stateDir
        let log = state + "/rounds.jsonl"
        let (first, firstErrors) = try Self.serve(fedcoord, config, rounds: 6)
        #expect(first == 0, "\(firstErrors)")
        let trained = Self.checkpoints(state)
        #expect(trained.last == "model-000006.safetensors")
        let original = try Data(contentsOf: URL(fileURLWithPath: log))

        // The last two rounds' records removed: serve and verify refuse, nothing is deleted.
        try Self.cutAfterRound(log, 4)
        let (status, errors) = try Self.serve(fedcoord, config, rounds: 8)
        #expect(status != 0 && errors.contains("state repair"), "\(errors)")
        #expect(Self.checkpoints(state) == trained)
        let (verify, verifyErrors) = try runProcess(fedcoord, ["rounds", "verify", "--state", state])
        #expect(verify == 1 && verifyErrors.contains("TRUNCATED"), "\(verifyErrors)")

        // The log deleted: the same, and the checkpoints stay.
        try FileManager.default.removeItem(atPath: log)
        let (missing, missingErrors) = try Self.serve(fedcoord, config, rounds: 8)
        #expect(missing != 0 && missingErrors.contains("missing or empty") && missingErrors.contains("--new"), "\(missingErrors)")
        #expect(Self.checkpoints(state) == trained)

        // Repair of the missing log adopts checkpoint 6; serve goes on to round 8.
        #expect(try runProcess(fedcoord, ["state", "repair", "--state", state]).0 == 0)
        #expect(try Self.serve(fedcoord, config, rounds: 8).0 == 0)
        let repaired = try RoundLog.verify(path: log)
        let record = try #require(repaired.events(RoundLogEvent.StateRepaired.self).first)
        #expect(record.modelVersion == 6)
        #expect(repaired.committedRounds.map(\.round) == [7, 8])

        // The shortened log again: repair cuts to the last round a checkpoint agrees with, sets
        // the newer checkpoints aside (not deleted), and serve resumes from there.
        try? FileManager.default.removeItem(atPath: log)
        try original.write(to: URL(fileURLWithPath: log))
        for version in [7, 8] {
            try? FileManager.default.removeItem(atPath: state + String(format: "/checkpoints/model-%06d.safetensors", version))
        }
        try Self.cutAfterRound(log, 4)
        let before: UInt64 = 4
        #expect(try runProcess(fedcoord, ["state", "repair", "--state", state]).0 == 0)
        let aside = try FileManager.default.contentsOfDirectory(atPath: state + "/checkpoints").filter { $0.hasPrefix("set-aside-") }
        #expect(aside.count == 1)
        #expect(try runProcess(fedcoord, ["rounds", "verify", "--state", state]).0 == 0)
        #expect(try Self.serve(fedcoord, config, rounds: Int(before) + 1).0 == 0)
        let rounds = try RoundLog.verify(path: log).committedRounds.map(\.round)
        #expect(rounds.last == before + 1)

        // --new sets everything aside; serve starts a new federation.
        #expect(try runProcess(fedcoord, ["state", "repair", "--state", state, "--new"]).0 == 0)
        let archives = try FileManager.default.contentsOfDirectory(atPath: state).filter { $0.hasPrefix("archive-") }
        #expect(archives.count == 1)
        #expect(try Self.serve(fedcoord, config, rounds: 1).0 == 0)
        #expect(try RoundLog.verify(path: log).committedRounds.map(\.round) == [1])
    }
}
