import CProtobufC
import FedHashing
import FedWire
#if canImport(Glibc)
import Glibc
#endif

/// Owns the small C allocations (strings, nested structs, short arrays) a protobuf-c message
/// being packed points at, and frees them all at once when it goes away.
///
/// Large payloads (tensor chunks) are never copied into it: they are borrowed for the duration
/// of the pack.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { for pointer in allocations { free(pointer) } }

    private func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        guard let pointer = malloc(max(bytes, 1)) else { fatalError("out of memory allocating \(bytes) bytes") }
        allocations.append(pointer)
        return pointer
    }

    /// A NUL-terminated copy of `string`.
    func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(string.utf8)
        let pointer = allocate(utf8.count + 1).bindMemory(to: CChar.self, capacity: utf8.count + 1)
        utf8.withUnsafeBytes { UnsafeMutableRawPointer(pointer).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        pointer[utf8.count] = 0
        return pointer
    }

    /// A heap copy of a C struct.
    func box<T>(_ value: T) -> UnsafeMutablePointer<T> {
        let pointer = allocate(MemoryLayout<T>.stride).bindMemory(to: T.self, capacity: 1)
        pointer.initialize(to: value)
        return pointer
    }

    /// A heap copy of an array (nil when empty).
    func copy<T>(_ array: [T]) -> UnsafeMutablePointer<T>? {
        if array.isEmpty { return nil }
        let pointer = allocate(MemoryLayout<T>.stride * array.count).bindMemory(to: T.self, capacity: array.count)
        _ = UnsafeMutableBufferPointer(start: pointer, count: array.count).initialize(from: array)
        return pointer
    }

    /// protobuf-c `bytes` holding a copy of `array`.
    func bytes(_ array: [UInt8]) -> ProtobufCBinaryData {
        ProtobufCBinaryData(len: array.count, data: copy(array))
    }
}
