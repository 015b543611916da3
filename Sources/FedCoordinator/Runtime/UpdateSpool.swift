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
    /// The open (unlinked) file; ``SpoolMapping`` maps it.
    let descriptor: Int32
    private(set) var bytesWritten = 0
    /// Bytes mapped at a time when reading back (``SpoolMapping``'s default window): what each
    /// update being read back adds to the resident memory.
    static let windowBytes = 1 << 20

    init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var template = Array((directory + "/update-XXXXXX").utf8CString)
        descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw ModelError("cannot create a spool file in \(directory): \(String(cString: strerror(errno)))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    deinit { close(descriptor) }

    /// Starts a new update: what was spooled before is forgotten (its pages are overwritten).
    func rewind() { bytesWritten = 0 }

    /// Appends bytes (checked by the caller).
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + offset, bytes.count - offset, off_t(bytesWritten + offset))
            if n < 0 {
                if errno == EINTR { continue }
                throw ModelError("cannot spool an update: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        bytesWritten += bytes.count
    }

    /// Reads the spooled floats back in order, ``windowBytes`` at a time, straight from the page
    /// cache (``SpoolMapping``).
    func forEachSlice(_ body: (_ elementOffset: Int, _ values: UnsafeBufferPointer<Float>) throws -> Void) throws {
        try SpoolMapping.forEachSlice(of: [self]) { offset, slices in try body(offset, slices[0]) }
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
