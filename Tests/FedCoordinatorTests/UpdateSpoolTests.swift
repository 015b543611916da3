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
        try UpdateSpool.forEachSlice(a, b) { offset, x, y in
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
        #expect(throws: (any Error).self) { try UpdateSpool.forEachSlice(a, short) { _, _, _ in } }
    }
}
