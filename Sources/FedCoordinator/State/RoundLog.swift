import FedWire
import Foundation

/// The tamper-evident round log: JSON Lines, append-only, each record carrying the SHA-256 of
/// the previous line, each append fsynced before it returns.
///
/// Opening a log whose last line is incomplete (the process died mid-write) truncates that
/// line: it was never committed. Not thread-safe: the coordinator appends from one place.
public final class RoundLog {
    public let path: String
    private let handle: FileHandle
    private var lastHash: String
    private var nextSeq: UInt64
    /// Records read at open (for resuming).
    public private(set) var records: [RoundLogRecord]

    public static let genesisHash = String(repeating: "0", count: 64)

    /// Opens (creating if needed) the log at `path`.
    ///
    /// - Throws: ``RoundLogError`` if an existing record does not verify: the coordinator refuses
    ///   to append to a log that has been edited.
    public init(path: String) throws {
        self.path = path
        let manager = FileManager.default
        if !manager.fileExists(atPath: path) {
            guard manager.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]) else {
                throw RoundLogError(line: 0, message: "cannot create the round log '\(path)'")
            }
        }
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        if let lastNewline = data.lastIndex(of: 0x0A), lastNewline != data.count - 1 {
            data = data.prefix(lastNewline + 1)
            try data.write(to: URL(fileURLWithPath: path))
        } else if !data.isEmpty && data.last != 0x0A {
            data = Data()
            try data.write(to: URL(fileURLWithPath: path))
        }
        let verified = try RoundLog.verify(data: data)
        records = verified.records
        lastHash = verified.lastHash
        nextSeq = UInt64(verified.records.count) + 1
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw RoundLogError(line: 0, message: "cannot open the round log '\(path)' for writing")
        }
        self.handle = handle
        try handle.seekToEnd()
    }

    deinit { try? handle.close() }

    /// Appends a record (its seq, time and prev hash are filled in) and fsyncs it.
    @discardableResult
    public func append(_ record: RoundLogRecord) throws -> RoundLogRecord {
        var record = record
        record.seq = nextSeq
        if record.time.isEmpty { record.time = RoundLog.timestamp() }
        record.prevSHA256 = lastHash
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var line = try encoder.encode(record)
        lastHash = line.withUnsafeBytes { SHA256Hasher.hash($0) }.hexString
        line.append(0x0A)
        try handle.write(contentsOf: line)
        try handle.synchronize()
        nextSeq += 1
        records.append(record)
        return record
    }

    /// ISO 8601 UTC with milliseconds.
    public static func timestamp(_ date: Date = Date()) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

    /// Checks the hash chain of a whole log file.
    ///
    /// - Throws: ``RoundLogError`` naming the first bad line (1-based) and what is wrong.
    public static func verify(path: String) throws -> [RoundLogRecord] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RoundLogError(line: 0, message: "cannot read the round log '\(path)'")
        }
        return try verify(data: data).records
    }

    static func verify(data: Data) throws -> (records: [RoundLogRecord], lastHash: String) {
        var previous = genesisHash
        var records: [RoundLogRecord] = []
        let decoder = JSONDecoder()
        var lines = data.split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        var lineNumber = 0
        for line in lines {
            lineNumber += 1
            if line.isEmpty {
                throw RoundLogError(line: lineNumber, message: "line \(lineNumber) is empty: a record was removed or the file was edited")
            }
            let record: RoundLogRecord
            do {
                record = try decoder.decode(RoundLogRecord.self, from: Data(line))
            } catch {
                throw RoundLogError(line: lineNumber, message: "line \(lineNumber) is not a valid record: \(error)")
            }
            guard record.prevSHA256 == previous else {
                throw RoundLogError(line: lineNumber, message: "record \(lineNumber) (seq \(record.seq), \(record.type)) does not chain to the "
                    + "record before it: prev_sha256 is \(record.prevSHA256.prefix(16))…, the previous line hashes to \(previous.prefix(16))…; "
                    + "the log was edited, or a record was inserted or deleted")
            }
            guard record.seq == UInt64(lineNumber) else {
                throw RoundLogError(line: lineNumber, message: "record \(lineNumber) has seq \(record.seq); records were reordered")
            }
            previous = Data(line).withUnsafeBytes { SHA256Hasher.hash($0) }.hexString
            records.append(record)
        }
        return (records, previous)
    }
}

/// A round log that does not verify.
public struct RoundLogError: Error, CustomStringConvertible, Sendable {
    /// The first bad line, 1-based (0 when the file itself is the problem).
    public var line: Int
    public var message: String
    public var description: String { message }
}
