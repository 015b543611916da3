import FedHashing
import Foundation
import Testing
@testable import FedCoordinator

@Suite("Round-log events")
struct RoundLogEventTests {
    /// A log of every kind of record, written by the code before records became typed events
    /// (one struct of optionals), hash chain included.
    static let everyKind = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path
        + "/Fixtures/round-log-every-kind.jsonl"

    @Test("An older log of every kind verifies, and each record encodes back to exactly its line")
    func olderLogRoundTrips() throws {
        let records = try RoundLog.verify(path: Self.everyKind)
        #expect(Set(records.map(\.event.kind)) == Set(RoundLogEvent.Kind.allCases))
        let lines = try String(contentsOfFile: Self.everyKind, encoding: .utf8).split(separator: "\n")
        for (record, line) in zip(records, lines) {
            #expect(String(decoding: try RoundLog.line(record), as: UTF8.self) == line)
        }
        let committed = records.committedRounds
        #expect(committed.map(\.round) == [4, 5] && committed[0].combined == ["hospital-a"] && committed[1].examples == nil)
        #expect(records.compactMap(\.failedAttempt).map(\.reason) == ["min_updates not met (1 of 2); retrying with a fresh selection"])
        #expect(records.events(RoundLogEvent.AgentRefused.self).map(\.count) == [12, nil])
        #expect(records.events(RoundLogEvent.RoundClosed.self).count == 3, "committed rounds and failed attempts alike")

        var history = LogHistory()
        for record in records { history.take(record) }
        #expect(history.starts == 1 && history.standardization?.rows == 455)
        #expect(history.resumeVersion == 3, "the last state_repaired with a version comes after the rounds")
        #expect(history.privacySpend.map(\.noiseMultiplier) == [1.1])

        let table = RoundTable.render(records)
        #expect(table.contains("4.1") && table.contains("failed hospital-d: exited with status 3"))
        #expect(table.contains("masks recovered for hospital-d"))
        #expect(table.contains("0.957"), "round 5's evaluation gives its accuracy:\n\(table)")
    }

    @Test("A record carries only its kind's fields; the type comes from the case")
    func payloadFields() throws {
        let record = RoundLogRecord(.updateRefused(.init(agent: "hospital-d", round: 7, reason: "wrong shape")))
        let object = try #require(try JSONSerialization.jsonObject(with: try RoundLog.line(record)) as? [String: Any])
        #expect(Set(object.keys) == ["seq", "type", "time", "prev_sha256", "agent", "round", "reason"])
        #expect(object["type"] as? String == "update_refused")
    }

    @Test("Site text in reasons and failure messages is cleaned and capped as it is appended")
    func siteTextCleaned() throws {
        let path = RoundLogTests.temporaryDirectory() + "/rounds.jsonl"
        let log = try RoundLog(path: path)
        let hostile = "line one\nline two\u{1B}[31m" + String(repeating: "x", count: 8 << 10)
        var attempt = RoundLogEvent.RoundClosed(round: 1, attempt: 0, status: "failed")
        attempt.failed = ["hospital-d": hostile]
        attempt.reason = hostile
        try log.append(RoundLogRecord(.attemptFailed(attempt)))
        try log.append(RoundLogRecord(.agentIneligible(.init(agent: "hospital-b", reason: hostile))))
        try log.append(RoundLogRecord(.evaluation(.init(round: 1, modelVersion: 1, reported: [], failed: ["hospital-c": hostile], examples: [:]))))
        let records = try RoundLog.verify(path: path)
        let texts = [records[0].failedAttempt?.reason, records[0].failedAttempt?.failed["hospital-d"]]
            + records.events(RoundLogEvent.AgentIneligible.self).map(\.reason)
            + records.events(RoundLogEvent.Evaluation.self).map { $0.failed?["hospital-c"] }
        #expect(texts.count == 4)
        for text in texts {
            let text = try #require(text)
            #expect(text.utf8.count <= SiteText.maxBytes && !text.contains("\n") && !text.contains("\u{1B}"))
        }
    }

    @Test("A record of a type this version does not know is refused, naming its line")
    func unknownType() throws {
        let path = RoundLogTests.temporaryDirectory() + "/rounds.jsonl"
        let line = #"{"prev_sha256":"\#(RoundLog.genesisHash)","seq":1,"time":"2026-12-08T01:00:00.000Z","type":"model_swapped"}"#
        try (line + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let error = #expect(throws: RoundLogError.self) { try RoundLog.verify(path: path) }
        #expect(error?.line == 1 && error?.message.contains("model_swapped") == true, "\(error?.message ?? "")")
    }
}
