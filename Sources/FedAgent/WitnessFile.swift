import FedHashing
import FedWire
import Foundation
import Logging

/// The site's own record of the coordinator's history: each round-log chain head a task showed
/// (the last record's seq and its line's SHA-256), appended as a JSON line and fsynced.
/// `fedcoord rounds verify --witness FILE` checks the coordinator's log against it: a log cut
/// or re-chained after this site saw a head no longer holds that head.
///
/// Thread-safe; one instance per agent. A head that goes back (a smaller seq, or the same seq
/// with another hash) is still recorded, and warned about: the site's IT should tell the
/// federation's operator.
public final class WitnessFile: @unchecked Sendable {
    // @unchecked: `lastSeq`/`lastHash` guarded by `lock`.
    public struct Head: Codable, Sendable, Equatable {
        public var seq: UInt64
        public var sha256: String
        public var round: UInt64
        public var time: String
    }

    public let path: String
    private let lock = NSLock()
    private var lastSeq: UInt64 = 0
    private var lastHash = ""

    /// Opens (creating) the file at `path`, reading the last head it holds.
    public init(path: String) throws {
        self.path = path
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]) else {
                throw WireError(.configuration, "cannot create the witness file '\(path)'; check witness_file and the folder's permissions")
            }
        }
        if let last = try Self.read(path: path).last {
            lastSeq = last.seq
            lastHash = last.sha256
        }
    }

    /// Every head in a witness file, in order.
    ///
    /// - Throws: ``WireError`` naming the line that is not a head.
    public static func read(path: String) throws -> [Head] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WireError(.configuration, "cannot read the witness file '\(path)'")
        }
        let decoder = JSONDecoder()
        var heads: [Head] = []
        for (index, line) in data.split(separator: 0x0A).enumerated() {
            guard let head = try? decoder.decode(Head.self, from: Data(line)), head.sha256.count == 64 else {
                throw WireError(.configuration, "line \(index + 1) of the witness file '\(path)' is not a chain head")
            }
            heads.append(head)
        }
        return heads
    }

    /// Records the head a task showed (nothing when it is the last one recorded, or empty).
    /// Returns a warning when the head went back.
    @discardableResult
    public func record(seq: UInt64, sha256: [UInt8], round: UInt64, logger: Logger) throws -> String? {
        guard seq > 0, sha256.count == 32 else { return nil }
        let hash = sha256.hexString
        let (isNew, warning): (Bool, String?) = lock.withLock {
            if seq == lastSeq && hash == lastHash { return (false, nil) }
            var warning: String?
            if seq < lastSeq || (seq == lastSeq && hash != lastHash) {
                warning = "the coordinator's round log went back: it showed record \(seq) after record \(lastSeq); "
                    + "its history may have been cut or rewritten. Tell the federation's operator (fedcoord rounds verify --witness \(path))"
            }
            lastSeq = seq
            lastHash = hash
            return (true, warning)
        }
        guard isNew else { return nil }
        let head = Head(seq: seq, sha256: hash, round: round, time: ISO8601DateFormatter().string(from: Date()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var line = try encoder.encode(head)
        line.append(0x0A)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        try handle.synchronize()
        if let warning { logger.error("Round log went back", metadata: ["witness": "\(path)", "problem": "\(warning)"]) }
        return warning
    }
}
