import CKernels
import COpenSSL
import FedCore
import Foundation

/// The FLSECAGG-v1 PRG (§3.7): a 32-byte seed → a stream of `uint32` elements in `Z_{2^32}`,
/// AES-128-CTR keystream (key = seed[0..16), initial counter block = seed[16..32), 128-bit
/// big-endian counter) read as little-endian `uint32`s.
///
/// Masks are never materialized whole: ``apply(to:count:subtract:)`` folds the next elements
/// into a caller's buffer through a 256 KiB keystream scratch. One generator per thread; cost:
/// AES-CTR over 4 bytes per element plus one add.
public final class MaskGenerator {
    nonisolated(unsafe) private static let cipher: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-128-CTR", nil)
    /// Read-only zeros: CTR "encrypts" them into pure keystream.
    nonisolated(unsafe) private static let zeros = UnsafeMutableRawPointer(calloc(1, scratchBytes)!)
    static let scratchBytes = 16 << 10

    private let context: OpaquePointer
    fileprivate let scratch: UnsafeMutableRawPointer
    /// Keystream bytes generated but not yet consumed (fewer than 16, after a seek).
    fileprivate var pending: [UInt8] = []

    /// Starts the stream of `seed` at element `startElement` (counter block `IV + start/4`).
    public init(seed: [UInt8], startElement: UInt64 = 0) throws {
        guard seed.count == 32, let cipher = Self.cipher, let context = EVP_CIPHER_CTX_new() else {
            throw SecAggError(.internalError, "the mask generator needs a 32-byte seed and AES-128-CTR")
        }
        self.context = context
        scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchBytes, alignment: 64)
        var counter = Array(seed[16..<32])
        // 128-bit big-endian add of start/4 blocks.
        var carry = startElement / 4
        for index in stride(from: 15, through: 0, by: -1) where carry > 0 {
            let sum = UInt64(counter[index]) + (carry & 0xFF)
            counter[index] = UInt8(sum & 0xFF)
            carry = (carry >> 8) + (sum >> 8)
        }
        guard EVP_EncryptInit_ex2(context, cipher, Array(seed[0..<16]), counter, nil) == 1 else {
            EVP_CIPHER_CTX_free(context)
            scratch.deallocate()
            throw SecAggError(.internalError, "AES-128-CTR initialisation failed")
        }
        let skip = Int(startElement % 4) * 4
        if skip > 0 {
            var block = [UInt8](repeating: 0, count: 16)
            keystream(into: &block, count: 16)
            pending = Array(block[skip...])
        }
    }

    deinit {
        EVP_CIPHER_CTX_free(context)
        scratch.deallocate()
    }

    private func keystream(into buffer: UnsafeMutableRawPointer, count: Int) {
        var length: Int32 = 0
        let ok = EVP_EncryptUpdate(context, buffer.assumingMemoryBound(to: UInt8.self), &length,
                                   Self.zeros.assumingMemoryBound(to: UInt8.self), Int32(count))
        precondition(ok == 1 && Int(length) == count, "AES-128-CTR keystream failed")
    }

    private func keystream(into bytes: inout [UInt8], count: Int) {
        bytes.withUnsafeMutableBytes { keystream(into: $0.baseAddress!, count: count) }
    }

    /// Adds (or subtracts) the next `count` mask elements into `target`, wrapping mod 2^32.
    public func apply(to target: UnsafeMutablePointer<UInt32>, count: Int, subtract: Bool = false) {
        var done = 0
        while done < count && !pending.isEmpty {
            let value = pending.prefix(4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
            pending.removeFirst(4)
            target[done] = subtract ? target[done] &- value : target[done] &+ value
            done += 1
        }
        while done < count {
            let elements = min(count - done, Self.scratchBytes / 4)
            keystream(into: scratch, count: elements * 4)
            var stream: UnsafePointer<UInt32>? = UnsafePointer(scratch.assumingMemoryBound(to: UInt32.self))
            var sign = Int32(subtract ? 1 : 0)
            fed_fold_u32(target + done, &stream, &sign, 1, elements)
            done += elements
        }
    }

    /// Adds (or subtracts) the next `count` elements of every generator into `target` in one
    /// pass: slice by slice, every generator writes its keystream into its own cache-resident
    /// scratch, then one vector loop folds them all into the target, so a vector masked `k + 1`
    /// times is read and written from memory once, not `k + 1` times.
    public static func apply(_ generators: [(generator: MaskGenerator, subtract: Bool)], to target: UnsafeMutablePointer<UInt32>, count: Int) {
        guard !generators.isEmpty else { return }
        if generators.contains(where: { !$0.generator.pending.isEmpty }) {
            for (generator, subtract) in generators { generator.apply(to: target, count: count, subtract: subtract) }
            return
        }
        let slice = scratchBytes / 4
        let streams = generators.map { UnsafePointer($0.generator.scratch.assumingMemoryBound(to: UInt32.self)) as UnsafePointer<UInt32>? }
        let signs = generators.map { Int32($0.subtract ? 1 : 0) }
        var done = 0
        while done < count {
            let length = min(slice, count - done)
            for (generator, _) in generators { generator.keystream(into: generator.scratch, count: length * 4) }
            streams.withUnsafeBufferPointer { s in
                signs.withUnsafeBufferPointer { fed_fold_u32(target + done, s.baseAddress, $0.baseAddress, Int32(generators.count), length) }
            }
            done += length
        }
    }

    /// ``apply(_:to:count:)`` for masks given by their seeds, split over `threads` element ranges
    /// (each range seeks its own generators to its first element, §3.7): the coordinator's
    /// unmasking uses every core.
    public static func apply(seeds: [(seed: [UInt8], subtract: Bool)], to target: UnsafeMutablePointer<UInt32>, count: Int, threads: Int) throws {
        guard !seeds.isEmpty, count > 0 else { return }
        let parts = max(1, min(threads, count / (1 << 16)))
        let size = (count / parts + 3) & ~3
        nonisolated(unsafe) let base = target
        let failure = UnsafeMutablePointer<Bool>.allocate(capacity: parts)
        failure.initialize(repeating: false, count: parts)
        defer { failure.deallocate() }
        nonisolated(unsafe) let failed = failure
        ParallelParts.run(parts) { part in
            let start = part * size
            let length = min(size, count - start)
            guard length > 0 else { return }
            guard let generators = try? seeds.map({ (generator: try MaskGenerator(seed: $0.seed, startElement: UInt64(start)), subtract: $0.subtract) })
            else {
                failed[part] = true
                return
            }
            apply(generators, to: base + start, count: length)
        }
        if (0..<parts).contains(where: { failure[$0] }) { throw SecAggError(.internalError, "a mask generator could not be set up") }
    }

    /// Writes (not adds) the next `count` elements into `target`: the raw keystream, directly.
    public func fill(_ target: UnsafeMutablePointer<UInt32>, count: Int) {
        guard pending.isEmpty else {
            target.update(repeating: 0, count: count)
            apply(to: target, count: count)
            return
        }
        // The zero input is one scratch long: encrypt it slice by slice.
        var done = 0
        while done < count {
            let elements = min(count - done, Self.scratchBytes / 4)
            keystream(into: UnsafeMutableRawPointer(target + done), count: elements * 4)
            done += elements
        }
    }

    /// The next `count` elements, as an array (tests, and small vectors).
    public func next(_ count: Int) -> [UInt32] {
        var out = [UInt32](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { apply(to: $0.baseAddress!, count: count) }
        return out
    }

    /// The next `count` raw keystream bytes (Shamir coefficient draws in tests).
    public func nextBytes(_ count: Int) -> [UInt8] {
        precondition(pending.isEmpty, "nextBytes after a mid-block seek")
        var out = [UInt8](repeating: 0, count: count)
        keystream(into: &out, count: count)
        return out
    }
}
