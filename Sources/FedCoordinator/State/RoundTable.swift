import Foundation

/// The round table researchers read: one line per committed or failed round attempt.
public enum RoundTable {
    /// Renders the `round` and `attempt_failed` records of a log as a fixed-width table; a
    /// round's `evaluation` record supplies its accuracy and AUC (the global model after the
    /// round, on the sites' holdouts; AUC is the example-weighted mean of the sites' AUCs).
    public static func render(_ records: [RoundLogRecord]) -> String {
        let rows = records.compactMap { record in record.committedRound.map { ($0, committed: true) } ?? record.failedAttempt.map { ($0, committed: false) } }
        var evaluations: [UInt64: RoundLogEvent.Evaluation] = [:]
        for evaluation in records.events(RoundLogEvent.Evaluation.self) { evaluations[evaluation.round] = evaluation }
        let secure = records.committedRounds.contains { $0.secureAggregation == true }
        let privacy = rows.contains { $0.0.dpEpsilon != nil }
        let widths = [6, 10, 9, 9, 5, 7, 9, 10, 11, 9, 7] + (secure ? [10, 10] : []) + (privacy ? [8] : [])
        func line(_ cells: [String]) -> String {
            zip(cells, widths).enumerated().map { index, pair in
                let (cell, width) = pair
                let padding = String(repeating: " ", count: max(0, width - cell.count))
                return index < 2 ? cell + padding : padding + cell
            }.joined(separator: " ")
        }
        var lines = [line(["round", "status", "selected", "reported", "late", "failed", "duration", "bytes", "train loss", "accuracy", "AUC"]
            + (secure ? ["survivors", "recovered"] : []) + (privacy ? ["ε"] : []))]
        for (record, committed) in rows {
            let evaluation = committed ? evaluations[record.round] : nil
            let roundText = "\(record.round)" + (record.attempt > 0 ? ".\(record.attempt)" : "")
            var cells: [String] = [
                roundText, record.status, "\(record.selected.count)", "\(record.reported.count)",
                "\(record.late.count)", "\(record.failed.count)", String(format: "%.2fs", record.durationSeconds),
                formatBytes(record.totalBytes), record.trainLoss.map { String(format: "%.4f", $0) } ?? "-",
            ]
            cells.append(evaluation?.evalAccuracy.map { String(format: "%.3f", $0) } ?? "-")
            cells.append(evaluation?.evalAUC.map { String(format: "%.3f", $0) } ?? "-")
            if secure {
                cells.append(record.survivors.map { "\($0.count)" } ?? "-")
                cells.append(record.recoveredDropouts.map { "\($0.count)" } ?? "-")
            }
            if privacy { cells.append(record.dpEpsilon.map { String(format: "%.3f", $0) } ?? "-") }
            lines.append(line(cells))
            if let recovered = record.recoveredDropouts, !recovered.isEmpty {
                lines.append("       masks recovered for \(recovered.joined(separator: ", ")) (dropped after sharing keys)")
            }
            for (agent, reason) in record.failed.sorted(by: { $0.key < $1.key }) { lines.append("       failed \(agent): \(reason)") }
            if !committed, let reason = record.reason { lines.append("       \(reason)") }
        }
        return lines.joined(separator: "\n")
    }

    static func formatBytes(_ bytes: UInt64) -> String {
        let value = Double(bytes)
        if value >= 1e9 { return String(format: "%.2f GB", value / 1e9) }
        if value >= 1e6 { return String(format: "%.1f MB", value / 1e6) }
        if value >= 1e3 { return String(format: "%.1f kB", value / 1e3) }
        return "\(bytes) B"
    }
}
