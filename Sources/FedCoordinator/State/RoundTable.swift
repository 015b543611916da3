import Foundation

/// The round table researchers read: one line per committed or failed round attempt.
public enum RoundTable {
    /// Renders the `round` and `attempt_failed` records of a log as a fixed-width table; a
    /// round's `evaluation` record supplies its accuracy and AUC (the global model after the
    /// round, on the sites' holdouts; AUC is the example-weighted mean of the sites' AUCs).
    public static func render(_ records: [RoundLogRecord]) -> String {
        let rows = records.filter { $0.type == "round" || $0.type == "attempt_failed" }
        var evaluations: [UInt64: RoundLogRecord] = [:]
        for record in records where record.type == "evaluation" { if let round = record.round { evaluations[round] = record } }
        let secure = records.contains { $0.secureAggregation == true && $0.type == "round" }
        let privacy = records.contains { $0.dpEpsilon != nil }
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
        for record in rows {
            let bytes = (record.bytesSent?.values.reduce(0, +) ?? 0) + (record.bytesReceived?.values.reduce(0, +) ?? 0)
            let evaluation = record.type == "round" ? record.round.flatMap { evaluations[$0] } : nil
            let roundText = "\(record.round ?? 0)" + ((record.attempt ?? 0) > 0 ? ".\(record.attempt ?? 0)" : "")
            var cells: [String] = [
                roundText, record.status ?? record.type, "\(record.selected?.count ?? 0)", "\(record.reported?.count ?? 0)",
                "\(record.late?.count ?? 0)", "\(record.failed?.count ?? 0)", String(format: "%.2fs", record.durationSeconds ?? 0),
                formatBytes(bytes), record.trainLoss.map { String(format: "%.4f", $0) } ?? "-",
            ]
            cells.append((evaluation?.evalAccuracy ?? record.evalAccuracy).map { String(format: "%.3f", $0) } ?? "-")
            cells.append((evaluation?.evalAUC ?? record.evalAUC).map { String(format: "%.3f", $0) } ?? "-")
            if secure {
                cells.append(record.survivors.map { "\($0.count)" } ?? "-")
                cells.append(record.recoveredDropouts.map { "\($0.count)" } ?? "-")
            }
            if privacy { cells.append(record.dpEpsilon.map { String(format: "%.3f", $0) } ?? "-") }
            lines.append(line(cells))
            if let recovered = record.recoveredDropouts, !recovered.isEmpty {
                lines.append("       masks recovered for \(recovered.joined(separator: ", ")) (dropped after sharing keys)")
            }
            if let failed = record.failed, !failed.isEmpty {
                for (agent, reason) in failed.sorted(by: { $0.key < $1.key }) { lines.append("       failed \(agent): \(reason)") }
            }
            if record.type == "attempt_failed", let reason = record.reason { lines.append("       \(reason)") }
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
