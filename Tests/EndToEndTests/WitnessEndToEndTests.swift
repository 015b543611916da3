import FedAgent
import FedCoordinator
import FedCore
import FedHashing
import FedWire
import Foundation
import Testing

/// Sites keep the round-log heads their tasks showed; `fedcoord rounds verify --witness` then
/// catches a log cut or re-chained after they saw it, which the hash chain alone cannot.
@Suite("Round log witnesses", .serialized)
struct WitnessEndToEndTests {
    /// Rewrites record `seq` with `change` and recomputes every later `prev_sha256`: an edit the
    /// chain alone cannot detect, by someone who knows how it is computed.
    static func rechain(_ path: String, editing seq: Int, _ change: (inout [String: Any]) -> Void) throws {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        var out: [String] = []
        var previous = RoundLog.genesisHash
        for (index, line) in lines.enumerated() {
            var object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            if index + 1 == seq { change(&object) }
            object["prev_sha256"] = previous
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            previous = data.withUnsafeBytes { SHA256Hasher.hash($0) }.hexString
            out.append(String(decoding: data, as: UTF8.self))
        }
        try (out.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test("The sites' witness files catch a cut and a re-chained edit that the chain alone passes")
    func witnessCatchesCutAndRechain() throws {
        let fedcoord = try executable("fedcoord")
        let federation = try Federation()
        let configuration = try federation.coordinatorConfiguration(rounds: 4, selection: [
            "target": 3, "min_available": 3, "min_updates": 3, "round_deadline_seconds": 10, "selection_timeout_seconds": 0.5,
        ])
        let names = ["hospital-a", "hospital-b", "hospital-c"]
        let trainers: [String: any LocalTrainer] = Dictionary(uniqueKeysWithValues: names.map { ($0, BenchmarkTrainer(step: 0.001, exampleCount: 10)) })
        #expect(try federation.runToCompletion(configuration, trainers: trainers, seconds: 60))
        let state = configuration.stateDir
        let log = state + "/rounds.jsonl"
        let witnesses = names.flatMap { ["--witness", federation.witnessPath($0)] }
        let heads = try WitnessFile.read(path: federation.witnessPath("hospital-a"))
        // A head per task unless no record was added since the last one (the previous round's record
        // is written while the next round starts, so a task may show the same head as the one before).
        #expect(heads.count >= 3, "heads: \(heads.map(\.seq))")
        #expect(heads.map(\.seq) == heads.map(\.seq).sorted())
        let (ok, okErrors) = try runProcess(fedcoord, ["rounds", "verify", "--state", state] + witnesses)
        #expect(ok == 0, "\(okErrors)")
        let original = try Data(contentsOf: URL(fileURLWithPath: log))

        // A re-chained edit of round 2's record: the chain verifies, the witnesses do not.
        let round2 = try #require(try RoundLog.verify(path: log).first { $0.committedRound?.round == 2 })
        try Self.rechain(log, editing: Int(round2.seq)) { $0["examples"] = ["hospital-a": 1_000_000] }
        #expect(try runProcess(fedcoord, ["rounds", "verify", "--state", state]).0 == 0, "the chain alone cannot tell")
        let (rewritten, rewrittenErrors) = try runProcess(fedcoord, ["rounds", "verify", "--state", state] + witnesses)
        #expect(rewritten == 1 && rewrittenErrors.contains("rewritten"), "\(rewrittenErrors)")

        // The log cut just before the last head the sites saw, the checkpoints of the rounds cut
        // removed too: only the witnesses can tell.
        try original.write(to: URL(fileURLWithPath: log))
        let lastSeen = try names.flatMap { try WitnessFile.read(path: federation.witnessPath($0)) }.map(\.seq).max() ?? 1
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let keptRounds = try RoundLog.verify(path: log).prefix(Int(lastSeen) - 1).committedRounds.map(\.round)
        try (lines.prefix(Int(lastSeen) - 1).joined(separator: "\n") + "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let store = try CheckpointStore(directory: state)
        for version in store.modelVersions() where version > (keptRounds.last ?? 0) {
            try FileManager.default.removeItem(atPath: store.modelPath(version: version))
        }
        #expect(try runProcess(fedcoord, ["rounds", "verify", "--state", state]).0 == 0, "the chain and checkpoints alone cannot tell")
        let (cut, cutErrors) = try runProcess(fedcoord, ["rounds", "verify", "--state", state] + witnesses)
        #expect(cut == 1 && cutErrors.contains("removed from its end"), "\(cutErrors)")
    }

    @Test("An agent warns when the coordinator's head goes back, and keeps the head")
    func headGoesBack() throws {
        let path = NSTemporaryDirectory() + "witness-\(UUID().uuidString.prefix(8)).jsonl"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let witness = try WitnessFile(path: path)
        let logger = Federation.quiet
        #expect(try witness.record(seq: 10, sha256: [UInt8](repeating: 1, count: 32), round: 3, logger: logger) == nil)
        #expect(try witness.record(seq: 10, sha256: [UInt8](repeating: 1, count: 32), round: 3, logger: logger) == nil)
        let warning = try witness.record(seq: 7, sha256: [UInt8](repeating: 2, count: 32), round: 3, logger: logger)
        #expect(warning?.contains("went back") == true)
        #expect(try WitnessFile.read(path: path).map(\.seq) == [10, 7])
        // Reopened, it knows the last head it holds.
        #expect(try WitnessFile(path: path).record(seq: 7, sha256: [UInt8](repeating: 2, count: 32), round: 3, logger: logger) == nil)
    }
}
