import CProtobufC
#if canImport(Glibc)
import Glibc
#endif

/// The allocator protobuf-c unpacks envelopes with: small allocations go to malloc, large ones
/// (tensor chunk payloads) come from a small pool of recycled blocks whose pages are already
/// mapped. Without it every 4 MiB chunk costs ~1000 fresh page faults, which halved the
/// throughput of tensor streams.
///
/// Each block carries a 64-byte header with its capacity, so that `free` knows what it got.
/// The pool holds at most ``maxPooledBlocks`` blocks (about 24 MiB of 4 MiB chunks).
enum RecyclingAllocator {
    static let headerSize = 64
    static let largeThreshold = 256 * 1024
    static let maxPooledBlocks = 4

    private static let lock = SpinlessLock()
    nonisolated(unsafe) private static var pool: [UnsafeMutableRawPointer] = []

    /// The ProtobufCAllocator to pass to `unpack` and `free_unpacked`; lives for the process.
    nonisolated(unsafe) static let allocator: UnsafeMutablePointer<ProtobufCAllocator> = {
        let pointer = UnsafeMutablePointer<ProtobufCAllocator>.allocate(capacity: 1)
        pointer.initialize(to: ProtobufCAllocator(
            alloc: { _, size in RecyclingAllocator.allocate(size) },
            free: { _, pointer in RecyclingAllocator.release(pointer) },
            allocator_data: nil))
        return pointer
    }()

    static func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        if size >= largeThreshold {
            let reused: UnsafeMutableRawPointer? = lock.withLock {
                guard let index = pool.firstIndex(where: { capacity(of: $0) >= size && capacity(of: $0) <= 2 * size }) else { return nil }
                return pool.remove(at: index)
            }
            if let block = reused { return block + headerSize }
        }
        guard let block = malloc(size + headerSize) else { return nil }
        block.storeBytes(of: size, as: Int.self)
        return block + headerSize
    }

    static func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        let block = pointer - headerSize
        if capacity(of: block) >= largeThreshold {
            let kept: Bool = lock.withLock {
                guard pool.count < maxPooledBlocks else { return false }
                pool.append(block)
                return true
            }
            if kept { return }
        }
        free(block)
    }

    private static func capacity(of block: UnsafeMutableRawPointer) -> Int { block.load(as: Int.self) }
}
