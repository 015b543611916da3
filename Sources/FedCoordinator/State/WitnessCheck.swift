import Foundation

/// Checks a round log against the chain heads sites were shown (their witness files, written by
/// each agent as it receives tasks): every head a site saw must still be in the log, at its seq,
/// with its hash. A log cut after a site saw a head, or rewritten (even with every later hash
/// recomputed), fails. Streams the log; holds the witnessed heads only.
public enum WitnessCheck {
    /// One head as a witness file holds it.
    struct Head: Decodable {
        var seq: UInt64
        var sha256: String
    }

    /// What the check found.
    public struct Report: Sendable {
        /// Distinct heads checked, from all the files.
        public var heads: Int
        /// The problems, one line each (empty: the log holds every head).
        public var problems: [String]
    }

    /// - Throws: ``RoundLogError`` when the log itself does not verify; a ``StateFolderError``
    ///   naming a witness file that cannot be read.
    public static func check(logPath: String, witnessPaths: [String]) throws -> Report {
        var wanted: [UInt64: (sha256: String, file: String)] = [:]
        var problems: [String] = []
        let decoder = JSONDecoder()
        for path in witnessPaths {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw StateFolderError(.witnessUnreadable, "cannot read the witness file '\(path)'; pass the file the site's agent wrote (its witness_file)")
            }
            for (index, line) in data.split(separator: 0x0A).enumerated() {
                guard let head = try? decoder.decode(Head.self, from: Data(line)), head.sha256.count == 64 else {
                    problems.append("\(path) line \(index + 1) is not a chain head")
                    continue
                }
                if let other = wanted[head.seq], other.sha256 != head.sha256 {
                    problems.append("record \(head.seq) was shown with two hashes (\(other.file), \(path)): the coordinator showed sites different histories")
                }
                wanted[head.seq] = (head.sha256, path)
            }
        }
        let scan = try RoundLog.scan(path: logPath) { record, lineSHA256 in
            guard let want = wanted[record.seq] else { return }
            if want.sha256 != lineSHA256 {
                problems.append("record \(record.seq) is not the one \(want.file) saw (its hash was \(want.sha256.prefix(16))…, now "
                    + "\(lineSHA256.prefix(16))…): the log was rewritten from there on")
            }
        }
        for (seq, want) in wanted.sorted(by: { $0.key < $1.key }) where seq > scan.count {
            problems.append("\(want.file) saw record \(seq), but the log ends at record \(scan.count): records were removed from its end")
            break
        }
        return Report(heads: wanted.count, problems: problems)
    }
}
