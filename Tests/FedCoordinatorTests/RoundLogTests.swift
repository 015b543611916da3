import FedCore
import Foundation
import Testing
@testable import FedCoordinator

@Suite("Round log and checkpoints")
struct RoundLogTests {
    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "fedcoord-state-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func record(_ round: UInt64) -> RoundLogRecord {
        var record = RoundLogEvent.RoundClosed(round: round, attempt: 0, status: "committed")
        record.reported = ["hospital-a", "hospital-b"]
        record.examples = ["hospital-a": 10, "hospital-b": 20]
        return RoundLogRecord(.round(record))
    }

    @Test("Records chain by SHA-256, survive reopening, and verify")
    func chain() throws {
        let path = Self.temporaryDirectory() + "/rounds.jsonl"
        let log = try RoundLog(path: path)
        try log.append(RoundLogRecord(.coordinatorStarted(.init(modelVersion: 0, modelSHA256: "", optimizer: "fedavg"))))
        try log.append(Self.record(1))
        let reopened = try RoundLog(path: path)
        #expect(reopened.count == 2)
        try reopened.append(Self.record(2))
        let records = try RoundLog.verify(path: path)
        #expect(records.map(\.seq) == [1, 2, 3])
        #expect(records[0].prevSHA256 == RoundLog.genesisHash)
        #expect(records[2].committedRound?.round == 2)
    }

    @Test("An edited, deleted or reordered record is detected and named")
    func tampering() throws {
        let path = Self.temporaryDirectory() + "/rounds.jsonl"
        let log = try RoundLog(path: path)
        for round in 1...4 { try log.append(Self.record(UInt64(round))) }
        let original = try String(contentsOfFile: path, encoding: .utf8)
        var lines = original.split(separator: "\n").map(String.init)

        let edited = lines.enumerated().map { $0.offset == 1 ? $0.element.replacingOccurrences(of: "\"hospital-b\":20", with: "\"hospital-b\":99") : $0.element }
        try (edited.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let editError = #expect(throws: RoundLogError.self) { try RoundLog.verify(path: path) }
        #expect(editError?.line == 3, "the record after the edited one no longer chains: \(editError?.message ?? "")")

        lines.remove(at: 2)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let deleteError = #expect(throws: RoundLogError.self) { try RoundLog.verify(path: path) }
        #expect(deleteError?.line == 3)
        #expect(throws: RoundLogError.self) { try RoundLog(path: path) }
    }

    @Test("A record torn by a crash mid-write is dropped on open; the chain continues")
    func tornTail() throws {
        let path = Self.temporaryDirectory() + "/rounds.jsonl"
        let log = try RoundLog(path: path)
        try log.append(Self.record(1))
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("{\"seq\":2,\"type\":\"rou".utf8))
        try handle.close()
        let reopened = try RoundLog(path: path)
        #expect(reopened.count == 1)
        try reopened.append(Self.record(2))
        #expect(try RoundLog.verify(path: path).count == 2)
    }

    @Test("Checkpoints are written atomically and read back; old ones are pruned, newer than the last commit never")
    func checkpoints() throws {
        let store = try CheckpointStore(directory: Self.temporaryDirectory(), keep: 2)
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [3])])
        for version in 0...4 {
            try store.writeModel(try ModelParameters(layout: layout, values: [Float(version), 1, 2]), version: UInt64(version),
                                 metadata: ["round": "\(version)", "note": String(repeating: "x", count: 100)])
        }
        var optimizer = ServerOptimizer(settings: .init(kind: .fedadam))
        var model: [Float] = [0, 0, 0]
        optimizer.step(model: &model, meanDelta: [1, 2, 3])
        try store.writeOptimizer(optimizer, layout: layout, version: 3)
        #expect(store.readOptimizer(settings: optimizer.settings, version: 3) == optimizer)
        store.prune(committed: 3)
        let names = try FileManager.default.contentsOfDirectory(atPath: store.checkpointDirectory).sorted()
        // The oldest committed checkpoint pruned stays as the spare the next one is written over.
        #expect(names == [".spare-model.safetensors", "model-000002.safetensors", "model-000003.safetensors", "model-000004.safetensors",
                          "optimizer-000003.safetensors"])
        #expect(try store.readModel(version: 3).values == [3, 1, 2])
        // Written over the spare: a shorter file than the spare was (no metadata), read back whole.
        let spareBytes = try FileManager.default.attributesOfItem(atPath: store.spareModelPath)[.size] as? Int
        try store.writeModel(try ModelParameters(layout: layout, values: [4, 5, 6]), version: 4)
        #expect(!FileManager.default.fileExists(atPath: store.spareModelPath))
        #expect(try store.readModel(version: 4).values == [4, 5, 6])
        let written = try FileManager.default.attributesOfItem(atPath: store.modelPath(version: 4))[.size] as? Int
        #expect(written == (try SafeTensors.header(for: layout)).count + 12)
        #expect((spareBytes ?? 0) > (written ?? 0), "the spare was longer: the rewrite cut its tail")
    }
}
