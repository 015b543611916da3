import FedCore
import Foundation

/// Holds one agent's update on disk while it is pulled, so that only complete, validated
/// updates reach the accumulator and the coordinator's memory does not grow with the model
/// times the number of pulls in flight.
///
/// The file is unlinked as soon as it is created: nothing is left behind if the coordinator dies.
final class UpdateSpool {
    private let fd: Int32
    private(set) var bytesWritten = 0

    init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var template = Array((directory + "/update-XXXXXX").utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw ModelError("cannot create a spool file in \(directory): \(String(cString: strerror(errno)))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    deinit { close(fd) }

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

    /// Reads the spooled floats back through `buffer` (whose size is the slice size), in order.
    func forEachSlice(
        using buffer: UnsafeMutableRawBufferPointer, _ body: (_ elementOffset: Int, _ values: UnsafeBufferPointer<Float>) throws -> Void
    ) throws {
        let sliceBytes = buffer.count - buffer.count % 4
        var offset = 0
        while offset < bytesWritten {
            let want = min(sliceBytes, bytesWritten - offset)
            var got = 0
            while got < want {
                let n = pread(fd, buffer.baseAddress! + got, want - got, off_t(offset + got))
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    throw ModelError("cannot read a spooled update back")
                }
                got += n
            }
            try body(offset / 4, UnsafeBufferPointer(start: buffer.baseAddress!.assumingMemoryBound(to: Float.self), count: want / 4))
            offset += want
        }
    }
}
