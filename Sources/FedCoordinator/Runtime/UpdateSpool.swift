import FedCore
import Foundation

/// Holds one agent's update on disk while it is pulled, so that only complete, validated
/// updates reach the accumulator and the coordinator's memory does not grow with the model
/// times the number of pulls in flight.
///
/// The file is unlinked as soon as it is created: nothing is left behind if the coordinator dies.
/// A spool is reused from pull to pull (``SpoolPool``): overwriting pages the kernel already
/// caches costs about a third of writing a fresh file and truncating it afterwards.
final class UpdateSpool {
    private let fd: Int32
    private(set) var bytesWritten = 0
    /// Bytes mapped at a time when reading back: what the read-back adds to the resident memory.
    static let windowBytes = 2 << 20

    init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var template = Array((directory + "/update-XXXXXX").utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw ModelError("cannot create a spool file in \(directory): \(String(cString: strerror(errno)))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    deinit { close(fd) }

    /// Starts a new update: what was spooled before is forgotten (its pages are overwritten).
    func rewind() { bytesWritten = 0 }

    /// Appends bytes (checked by the caller).
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + offset, bytes.count - offset, off_t(bytesWritten + offset))
            if n < 0 {
                if errno == EINTR { continue }
                throw ModelError("cannot spool an update: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        bytesWritten += bytes.count
    }

    /// Reads the spooled floats back in order, ``windowBytes`` at a time, straight from the page
    /// cache (mapped read-only: no copy into a buffer).
    func forEachSlice(_ body: (_ elementOffset: Int, _ values: UnsafeBufferPointer<Float>) throws -> Void) throws {
        try Self.forEachSlice(of: [self]) { offset, slices in try body(offset, slices[0]) }
    }

    /// Reads two spools of the same length back side by side, a window of each at a time.
    static func forEachSlice(
        _ a: UpdateSpool, _ b: UpdateSpool,
        _ body: (_ elementOffset: Int, _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) throws -> Void
    ) throws {
        guard a.bytesWritten == b.bytesWritten else { throw ModelError("two spooled updates of different sizes cannot be read together") }
        try forEachSlice(of: [a, b]) { offset, slices in try body(offset, slices[0], slices[1]) }
    }

    private static func forEachSlice(
        of spools: [UpdateSpool], _ body: (_ elementOffset: Int, _ slices: [UnsafeBufferPointer<Float>]) throws -> Void
    ) throws {
        let total = spools[0].bytesWritten - spools[0].bytesWritten % 4
        var offset = 0
        while offset < total {
            let length = min(windowBytes, total - offset)
            var windows: [UnsafeMutableRawPointer] = []
            defer { for window in windows { munmap(window, length) } }
            for spool in spools {
                guard let window = mmap(nil, length, PROT_READ, MAP_SHARED | MAP_POPULATE, spool.fd, off_t(offset)), window != MAP_FAILED else {
                    throw ModelError("cannot read a spooled update back: \(String(cString: strerror(errno)))")
                }
                windows.append(window)
            }
            try body(offset / 4, windows.map { UnsafeBufferPointer(start: $0.assumingMemoryBound(to: Float.self), count: length / 4) })
            offset += length
        }
    }
}

/// Spool files kept open between pulls, so that each pull overwrites cached pages instead of
/// allocating and truncating a model's worth of them. Holds at most `idleLimit` idle files
/// (each one model's size in the page cache, not in the coordinator's resident memory).
final class SpoolPool: @unchecked Sendable {
    // @unchecked: `idle` is guarded by `lock`.
    private let directory: String
    private let idleLimit: Int
    private let lock = NSLock()
    private var idle: [UpdateSpool] = []

    init(directory: String, idleLimit: Int) {
        self.directory = directory
        self.idleLimit = max(1, idleLimit)
    }

    /// An empty spool: an idle one rewound, or a new file.
    func take() throws -> UpdateSpool {
        if let spool = lock.withLock({ idle.popLast() }) {
            spool.rewind()
            return spool
        }
        return try UpdateSpool(directory: directory)
    }

    /// Gives a spool back once its update has been added or dropped.
    func give(_ spool: UpdateSpool) {
        lock.withLock { if idle.count < idleLimit { idle.append(spool) } }
    }
}
