import Foundation
import Testing

@testable import FedCoordinator

@Suite("Update spool")
struct UpdateSpoolTests {
    static func read(_ spool: UpdateSpool) throws -> [Float] {
        var out: [Float] = []
        try spool.forEachSlice { offset, values in
            #expect(offset == out.count, "slices come in order")
            out.append(contentsOf: values)
        }
        return out
    }

    @Test("A reused spool reads back exactly its new update, across mapping windows, never the old one's tail")
    func reuse() throws {
        let directory = RoundLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pool = SpoolPool(directory: directory, idleLimit: 1)
        let long = (0..<(UpdateSpool.windowBytes / 4 + 12_345)).map { Float($0) }
        let spool = try pool.take()
        try long.withUnsafeBytes { bytes in
            // In uneven pieces, as chunks arrive.
            try spool.append(UnsafeRawBufferPointer(rebasing: bytes[..<40_004]))
            try spool.append(UnsafeRawBufferPointer(rebasing: bytes[40_004...]))
        }
        #expect(try Self.read(spool) == long)
        pool.give(spool)
        let again = try pool.take()
        #expect(again === spool, "the idle spool is reused")
        #expect(again.bytesWritten == 0)
        let short: [Float] = [-1, -2, -3]
        try short.withUnsafeBytes { try again.append($0) }
        #expect(try Self.read(again) == short)
        // The file was unlinked at once: nothing is left in the folder.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test("Two spools read back side by side, window by window; spools of different sizes are refused")
    func pairs() throws {
        let directory = RoundLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let count = UpdateSpool.windowBytes / 4 * 2 + 1001
        let a = try UpdateSpool(directory: directory), b = try UpdateSpool(directory: directory)
        try (0..<count).map { Float($0) }.withUnsafeBytes { try a.append($0) }
        try (0..<count).map { -Float($0) }.withUnsafeBytes { try b.append($0) }
        var seen = 0
        try SpoolMapping.forEachSlice(of: [a, b]) { offset, slices in
            let x = slices[0], y = slices[1]
            #expect(offset == seen && x.count == y.count)
            for i in 0..<x.count where x[i] != Float(offset + i) || y[i] != -Float(offset + i) {
                Issue.record("element \(offset + i)")
                break
            }
            seen += x.count
        }
        #expect(seen == count)
        let short = try UpdateSpool(directory: directory)
        try [Float(1)].withUnsafeBytes { try short.append($0) }
        #expect(throws: (any Error).self) { try SpoolMapping.forEachSlice(of: [a, short]) { _, _ in } }
    }

    /// Resident bytes of this process's mappings of files whose path contains `path` (/proc/self/smaps).
    static func mappedResidentBytes(containing path: String) -> Int {
        // Read to the end (a /proc file reports no size, and this one is large in a test process).
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps"), let data = try? handle.readToEnd() else { return 0 }
        let smaps = String(decoding: data, as: UTF8.self)
        var total = 0
        var inside = false
        for line in smaps.split(separator: "\n") {
            if let first = line.first, first.isHexDigit, line.contains("-") && !line.hasPrefix("Rss") {
                inside = line.contains(path)
            } else if inside, line.hasPrefix("Rss:") {
                total += (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
            }
        }
        return total
    }

    @Test("A mapping reads ranges in order across windows, any block size, and lets go of the windows behind")
    func mappingRanges() throws {
        let directory = RoundLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let count = UpdateSpool.windowBytes / 4 * 3 + 777
        let spool = try UpdateSpool(directory: directory)
        try (0..<count).map { Float($0) }.withUnsafeBytes { try spool.append($0) }
        for block in [8192, 100_003, count] {
            let mapping = try SpoolMapping(spool)
            #expect(mapping.count == count)
            var start = 0
            while start < count {
                let range = start..<min(start + block, count)
                let values = mapping.slice(range)
                #expect(values.count == range.count && values.first == Float(range.lowerBound) && values.last == Float(range.upperBound - 1),
                        "block \(block) at \(start)")
                start = range.upperBound
            }
        }
        // Resident memory stays about a window per mapping: after reading 3 windows' worth, the
        // spool's pages mapped in this process are at most the window being read, or the 2 MiB
        // page-cache folio it lies in (the kernel maps a large folio whole).
        for windowBytes in [UpdateSpool.windowBytes, 256 << 10] {
            let mapping = try SpoolMapping(spool, windowBytes: windowBytes)
            var start = 0
            var peak = 0
            while start < count {
                let range = start..<min(start + 8192, count)
                _ = mapping.slice(range).reduce(0, +)
                if range.lowerBound % (windowBytes / 4) == 0 || range.upperBound % (windowBytes / 4) == 0 {
                    peak = max(peak, Self.mappedResidentBytes(containing: directory))
                }
                start = range.upperBound
            }
            #expect(peak > 0 && peak <= max(windowBytes, 2 << 20), "\(peak) bytes of the spool resident through \(windowBytes)-byte windows")
        }
    }
}
