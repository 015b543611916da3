import FedHashing
import FedWire
import Foundation

/// The tamper-evident round log: JSON Lines, append-only, each record carrying the SHA-256 of
/// the previous line, each append fsynced before it returns.
///
/// Opening a log whose last line is incomplete (the process died mid-write) truncates that
/// line: it was never committed. The log is read as a stream, a line at a time, and never held
/// in memory. Not thread-safe: the coordinator appends from one place.
public final class RoundLog {
    public let path: String
    private let handle: FileHandle
    /// SHA-256 (hex) of the last line: the chain head.
    public private(set) var lastHash: String
    /// The chain head as 32 bytes (empty before the first record).
    public var lastHashBytes: [UInt8] { count == 0 ? [] : [UInt8](hexString: lastHash) ?? [] }
    /// Records in the log (the last one's seq).
    public private(set) var count: UInt64

    /// Bytes of an incomplete last line (a write a crash or a full disk interrupted) that opening
    /// the log removed; 0 when the log ended with a complete record.
    public private(set) var removedTailBytes: UInt64 = 0

    public static let genesisHash = String(repeating: "0", count: 64)
    /// The longest line read back (a round record of thousands of agents is well below it).
    public static let maxLineBytes = 16 << 20

    /// Opens (creating if needed) the log at `path`, handing every record to `visit` in order.
    ///
    /// - Throws: ``RoundLogError`` if an existing record does not verify: the coordinator refuses
    ///   to append to a log that has been edited.
    public init(path: String, visit: (RoundLogRecord) throws -> Void = { _ in }) throws {
        self.path = path
        let manager = FileManager.default
        if !manager.fileExists(atPath: path) {
            guard manager.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]) else {
                throw RoundLogError(line: 0, message: "cannot create the round log '\(path)'")
            }
        }
        let scanned = try RoundLog.scan(path: path, visit: visit)
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw RoundLogError(line: 0, message: "cannot open the round log '\(path)' for writing")
        }
        if scanned.incompleteTail {
            removedTailBytes = try handle.seekToEnd() - scanned.completeBytes
            try handle.truncate(atOffset: scanned.completeBytes)
            try handle.synchronize()
        }
        lastHash = scanned.lastHash
        count = scanned.count
        self.handle = handle
        try handle.seekToEnd()
    }

    deinit { try? handle.close() }

    /// Appends a record (its seq, time and prev hash are filled in; its free text cleaned and
    /// capped) and fsyncs it.
    @discardableResult
    public func append(_ record: RoundLogRecord) throws -> RoundLogRecord {
        var record = record
        record.seq = count + 1
        if record.time.isEmpty { record.time = RoundLog.timestamp() }
        record.prevSHA256 = lastHash
        record.event = record.event.cleaningSiteText()
        var line = try Self.line(record)
        let hash = line.withUnsafeBytes { SHA256Hasher.hash($0) }.hexString
        line.append(0x0A)
        try handle.write(contentsOf: line)
        try handle.synchronize()
        lastHash = hash
        count += 1
        return record
    }

    /// A record's line, without its newline: one JSON object, keys sorted, slashes unescaped.
    static func line(_ record: RoundLogRecord) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(record)
    }

    /// ISO 8601 UTC with milliseconds.
    public static func timestamp(_ date: Date = Date()) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

    /// Checks the hash chain of a whole log file and returns its records (for small logs and
    /// tests; ``scan(path:visit:)`` streams).
    ///
    /// - Throws: ``RoundLogError`` naming the first bad line (1-based) and what is wrong.
    public static func verify(path: String) throws -> [RoundLogRecord] {
        var records: [RoundLogRecord] = []
        let scanned = try scan(path: path) { records.append($0) }
        if scanned.incompleteTail {
            throw RoundLogError(line: Int(scanned.count) + 1, message: "incomplete last record (interrupted write): line "
                + "\(scanned.count + 1) was cut short when the coordinator stopped while writing it (a full disk, a crash); it was "
                + "never committed, and the next `fedcoord serve` removes it", kind: .incompleteTail)
        }
        return records
    }

    /// What a scan found.
    public struct Scan: Sendable {
        /// Complete, verified records.
        public var count: UInt64
        /// The chain head: SHA-256 (hex) of the last complete line.
        public var lastHash: String
        /// Bytes of the complete lines.
        public var completeBytes: UInt64
        /// Whether the file ends in a line without its newline (a write cut short).
        public var incompleteTail: Bool
    }

    /// Reads the log a line at a time, checking the chain, and hands each record to `visit`.
    /// Memory: one read buffer and the longest line.
    ///
    /// - Throws: ``RoundLogError`` naming the first bad line (1-based) and what is wrong.
    @discardableResult
    public static func scan(path: String, visit: (RoundLogRecord) throws -> Void) throws -> Scan {
        try scan(path: path) { record, _ in try visit(record) }
    }

    /// ``scan(path:visit:)`` with each record's line hash (SHA-256, hex): the chain head after it.
    @discardableResult
    public static func scan(path: String, visit: (_ record: RoundLogRecord, _ lineSHA256: String) throws -> Void) throws -> Scan {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RoundLogError(line: 0, message: "cannot read the round log '\(path)': \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var previous = genesisHash
        var count: UInt64 = 0
        var completeBytes: UInt64 = 0
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let decoder = JSONDecoder()
        func take(_ line: ArraySlice<UInt8>) throws {
            let lineNumber = Int(count) + 1
            if line.isEmpty {
                throw RoundLogError(line: lineNumber, message: "line \(lineNumber) is empty: a record was removed or the file was edited")
            }
            let data = Data(line)
            let record: RoundLogRecord
            do {
                record = try decoder.decode(RoundLogRecord.self, from: data)
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
            previous = data.withUnsafeBytes { SHA256Hasher.hash($0) }.hexString
            count += 1
            completeBytes += UInt64(line.count + 1)
            try visit(record, previous)
        }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw RoundLogError(line: Int(count) + 1, message: "cannot read the round log '\(path)': \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            var start = 0
            let chunk = buffer[0..<n]
            while let newline = chunk[start...].firstIndex(of: 0x0A) {
                if pending.isEmpty {
                    try take(chunk[start..<newline])
                } else {
                    pending.append(contentsOf: chunk[start..<newline])
                    try take(pending[...])
                    pending.removeAll(keepingCapacity: false)
                }
                start = newline + 1
            }
            pending.append(contentsOf: chunk[start...])
            guard pending.count <= maxLineBytes else {
                throw RoundLogError(line: Int(count) + 1, message: "line \(count + 1) is longer than \(maxLineBytes) bytes: not a record of this log")
            }
        }
        return Scan(count: count, lastHash: previous, completeBytes: completeBytes, incompleteTail: !pending.isEmpty)
    }
}

/// A round log that does not verify.
public struct RoundLogError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable {
        /// A record was edited, removed, inserted or reordered, or a line is not a record.
        case broken
        /// The last line lacks its newline: a write cut short, never committed.
        case incompleteTail
    }

    /// The first bad line, 1-based (0 when the file itself is the problem).
    public var line: Int
    public var message: String
    public var kind: Kind
    public init(line: Int, message: String, kind: Kind = .broken) {
        self.line = line
        self.message = message
        self.kind = kind
    }
    public var description: String { message }
}
