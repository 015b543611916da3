import FedCore
import Foundation

/// A spooled update mapped read-only, read back in order range by range, straight from the page
/// cache (no copy into a buffer).
///
/// The whole file is mapped when the mapping is made, which reserves address space only: a
/// failure comes before anything has been read, so a caller that writes as it reads (the close,
/// stepping the model) never stops half-way. Pages are then populated a window at a time as the
/// reader reaches them and unmapped once it has passed them: the resident memory a mapping adds
/// stays one window, whatever the size of the update.
final class SpoolMapping {
    /// Floats in the update.
    let count: Int
    private let base: UnsafeMutableRawPointer?
    private let length: Int
    /// Bytes from `base` unmapped (behind the reader) and populated (ahead of it).
    private var released = 0
    private var populated = 0
    private let window: Int

    /// Maps `spool`'s update; `windowBytes` (a multiple of the page size) is populated at a time.
    init(_ spool: UpdateSpool, windowBytes: Int = UpdateSpool.windowBytes) throws {
        window = windowBytes
        length = spool.bytesWritten - spool.bytesWritten % 4
        count = length / 4
        guard length > 0 else {
            base = nil
            return
        }
        guard let mapped = mmap(nil, length, PROT_READ, MAP_SHARED, spool.descriptor, 0), mapped != MAP_FAILED else {
            throw ModelError("cannot read a spooled update back: \(String(cString: strerror(errno)))")
        }
        base = mapped
    }

    deinit {
        if let base, released < length { munmap(base + released, length - released) }
    }

    /// The floats in `range`. Ranges must come in increasing order: the windows before the one
    /// `range` starts in are let go of.
    func slice(_ range: Range<Int>) -> UnsafeBufferPointer<Float> {
        guard let base, !range.isEmpty else { return UnsafeBufferPointer(start: nil, count: 0) }
        let start = range.lowerBound * 4, end = range.upperBound * 4
        precondition(start >= released && end <= length, "spool ranges must come in order and inside the update")
        let behind = start / window * window
        if behind > released {
            munmap(base + released, behind - released)
            released = behind
        }
        if end > populated {
            let upTo = min(length, (end + window - 1) / window * window)
            // One call maps the window's pages instead of a fault every few pages; if the kernel
            // cannot, the pages fault in as they are read.
            _ = madvise(base + populated, upTo - populated, MADV_POPULATE_READ)
            populated = upTo
        }
        return UnsafeBufferPointer(start: (base + start).assumingMemoryBound(to: Float.self), count: range.count)
    }

    /// Reads spools of the same length side by side, ``UpdateSpool/windowBytes`` of each at a time.
    static func forEachSlice(
        of spools: [UpdateSpool], _ body: (_ elementOffset: Int, _ slices: [UnsafeBufferPointer<Float>]) throws -> Void
    ) throws {
        guard let first = spools.first else { return }
        guard spools.allSatisfy({ $0.bytesWritten == first.bytesWritten }) else {
            throw ModelError("spooled updates of different sizes cannot be read together")
        }
        let mappings = try spools.map { try SpoolMapping($0) }
        let step = UpdateSpool.windowBytes / 4
        var offset = 0
        while offset < mappings[0].count {
            let range = offset..<min(offset + step, mappings[0].count)
            try body(offset, mappings.map { $0.slice(range) })
            offset = range.upperBound
        }
    }
}
