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

    /// A federation of five benchmark agents whose real `fedcoord serve` has committed `rounds`
    /// rounds; the agents stay running for the next serve.
    static func served(rounds: Int) throws -> (fedcoord: String, federation: Federation, config: String, agents: RunningAgents) {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let port = try freePort()
        let config = try ProcessEndToEndTests.writeConfiguration(federation, port: port, rounds: rounds)
        let trainers: [String: any LocalTrainer] = Dictionary(uniqueKeysWithValues: federation.agents.map {
            ($0, BenchmarkTrainer(step: 0.001, exampleCount: 10))
        })
        let agents = try RunningAgents(federation, port: port, trainers: trainers)
        let (status, errors) = try serve(fedcoord, config, rounds: rounds)
        #expect(status == 0, "\(errors)")
        return (fedcoord, federation, config, agents)
    }

    @Test("A last record cut short by an interrupted write is not called tampering; serve removes it, says so, and goes on")
    func interruptedWrite() throws {
        let (fedcoord, federation, config, agents) = try Self.served(rounds: 2)
        defer { _ = agents }
        let state = federation.stateDir
        let log = state + "/rounds.jsonl"
        // What a full disk leaves: the first bytes of the next record, no newline.
        let handle = try #require(FileHandle(forWritingAtPath: log))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"agent":"hospital-a","prev_sha256":"3f"#.utf8))
        try handle.close()
        let (verify, verifyErrors) = try runProcess(fedcoord, ["rounds", "verify", "--state", state])
        #expect(verify == 0 && verifyErrors.contains("incomplete last record (interrupted write)") && !verifyErrors.contains("TAMPERED"),
                "\(verifyErrors)")
        let (second, secondErrors) = try Self.serve(fedcoord, config, rounds: 3)
        #expect(second == 0, "\(secondErrors)")
        let records = try RoundLog.verify(path: log)
        #expect(records.committedRounds.map(\.round) == [1, 2, 3])
        let repair = try #require(records.events(RoundLogEvent.StateRepaired.self).first)
        #expect(repair.reason.contains("incomplete last record (interrupted write)") && repair.repaired.first?.contains("39 bytes") == true,
                "\(repair)")
    }

    @Test("A missing or shortened log stops serve with what to do; repair resumes from the last round a checkpoint agrees with")
    func missingAndShortenedLog() throws {
        let (fedcoord, federation, config, agents) = try Self.served(rounds: 6)
        defer { _ = agents }
        let state = federation.stateDir
        let log = state + "/rounds.jsonl"
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
