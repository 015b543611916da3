import FedCore
import FedHashing
import FedWire
import Foundation

/// Hashes a model while it is being written: each tensor's CRC-32C (for the broadcasts) and, when
/// asked, the model's digest (``ModelDigest``: SHA-256 per tensor, combined), on a thread of its
/// own that follows the writer's progress.
///
/// At a secure round's close (a plaintext close steps on both cores and takes each block's CRC
/// itself: ``PartChecksums``) the server optimizer writes the new model block by block, in order; the
/// fingerprinter reads every element once it is final, so hashing (≈ 30 ms for 10M parameters)
/// overlaps the step (≈ 15 ms) on the other core instead of following it. The writer reports
/// progress with ``advance(to:)`` and collects the result with ``finish()``; `values` must stay
/// valid and must not change below the reported progress until ``finish()`` returns.
final class ModelFingerprinter: @unchecked Sendable {
    // @unchecked: `final_`/`result` are guarded by `condition`; `values` is read below `final_` only.
    struct Fingerprint {
        /// Nil when not asked for.
        var digest: [UInt8]?
        var tensorCRCs: [UInt32]
        /// Whether every value is finite (checked in the CRC's pass).
        var allFinite: Bool
    }

    private let values: UnsafeBufferPointer<Float>
    private let ranges: [Range<Int>]
    private let sha256: Bool
    private let condition = NSCondition()
    /// Elements below this are final.
    private var final_ = 0
    private var result: Fingerprint?
    /// Progress is published in steps of at least this many elements (1 MiB), to keep the two
    /// threads from trading a lock per block.
    private static let publishElements = 1 << 18
    private var published = 0

    /// Starts hashing `values` (laid out as `layout`) as it becomes final; the SHA-256 digest too
    /// when `sha256`.
    init(values: UnsafeBufferPointer<Float>, layout: ModelLayout, sha256: Bool) {
        self.values = values
        self.sha256 = sha256
        ranges = layout.ranges
        let thread = Thread { [self] in run() }
        thread.name = "fedcoord-hash"
        thread.start()
    }

    /// Every element below `element` has its final value.
    func advance(to element: Int) {
        guard element - published >= Self.publishElements else { return }
        published = element
        condition.lock()
        final_ = element
        condition.signal()
        condition.unlock()
    }

    /// Marks the whole model final and waits for its fingerprint.
    func finish() -> Fingerprint {
        condition.lock()
        defer { condition.unlock() }
        final_ = values.count
        condition.signal()
        while result == nil { condition.wait() }
        return result!
    }

    private func run() {
        var digests: [[UInt8]] = []
        var crcs: [UInt32] = []
        var allFinite = true
        var position = 0
        for range in ranges {
            let hasher = sha256 ? SHA256Hasher() : nil
            var crc = CRC32C()
            while position < range.upperBound {
                condition.lock()
                while final_ <= position { condition.wait() }
                let available = final_
                condition.unlock()
                // In pieces that stay in cache between the two checks.
                var start = position
                let end = min(available, range.upperBound)
                while start < end {
                    let piece = UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: values[start..<min(start + Self.publishElements, end)]))
                    hasher?.update(piece)
                    if crc.update(floats: piece) != nil { allFinite = false }
                    start += piece.count / 4
                }
                position = end
            }
            if let hasher { digests.append(hasher.finalize()) }
            crcs.append(crc.value)
        }
        condition.lock()
        result = Fingerprint(digest: sha256 ? ModelDigest.combine(digests) : nil, tensorCRCs: crcs, allFinite: allFinite)
        condition.broadcast()
        condition.unlock()
    }
}
