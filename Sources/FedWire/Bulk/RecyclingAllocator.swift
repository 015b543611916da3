#if canImport(Glibc)
import Glibc
#endif

/// The allocator for frames and decoded envelopes (protobuf-c unpacks with it): small
/// allocations go to malloc, large ones (tensor chunk payloads) come from a small pool of
/// recycled blocks whose pages are already mapped. Without it every 4 MiB chunk costs ~1000 fresh page faults, which halved the
/// throughput of tensor streams.
///
/// Each block carries a 64-byte header with its capacity, so that `free` knows what it got.
/// Large blocks are mapped with `mmap` rather than taken from malloc's heap: returned blocks
/// beyond the pool are unmapped at once, so chunk traffic never fragments the heap or leaves
/// its high-water mark behind. The pool keeps at most ``maxPooledBlocks`` blocks mapped.
public enum RecyclingAllocator {
    static let headerSize = 64
    static let largeThreshold = 256 * 1024
    static let maxPooledBlocks = 8

    private static let lock = SpinlessLock()
    nonisolated(unsafe) private static var pool: [UnsafeMutableRawPointer] = []

    /// A block of at least `size` bytes (nil when memory is exhausted); give it back with
    /// ``release(_:)``. Thread-safe.
    public     static func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        if size >= largeThreshold {
            let reused: UnsafeMutableRawPointer? = lock.withLock {
                guard let index = pool.firstIndex(where: { capacity(of: $0) >= size && capacity(of: $0) <= 2 * size }) else { return nil }
                return pool.remove(at: index)
            }
            if let block = reused { return block + headerSize }
            let mapped = mmap(nil, size + headerSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let block = mapped, block != MAP_FAILED else { return nil }
            block.storeBytes(of: size, as: Int.self)
            return block + headerSize
        }
        guard let block = malloc(size + headerSize) else { return nil }
        block.storeBytes(of: size, as: Int.self)
        return block + headerSize
    }

    /// Gives back a block from ``allocate(_:)`` (nil is ignored). Thread-safe.
    public static func release(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        let block = pointer - headerSize
        if capacity(of: block) >= largeThreshold {
            // Keep the most recently used blocks: when the pool is full the oldest goes, so a
            // change of chunk size (1 MiB streams, then 4 MiB ones) does not leave the pool
            // stuck with blocks nobody can use.
            let evicted: UnsafeMutableRawPointer? = lock.withLock {
                pool.append(block)
                return pool.count > maxPooledBlocks ? pool.removeFirst() : nil
            }
            if let evicted { munmap(evicted, capacity(of: evicted) + headerSize) }
            return
        }
        free(block)
    }

    private static func capacity(of block: UnsafeMutableRawPointer) -> Int { block.load(as: Int.self) }
}
