import Foundation

/// Keeps the storage of the last model an agent let go of, so that the next model is received
/// into memory the process already has: a fresh model-sized buffer every round costs page faults
/// and the kernel zeroing every page (about 25 ms per 40 MB here), a recycled one neither.
///
/// Holds at most one buffer. A job hands its model back when it ends (``Agent/Job``'s deinit);
/// a buffer still shared with someone else is copied on first write, as any Swift array.
final class ModelStorageRecycler: @unchecked Sendable {
    // @unchecked: `spare` is guarded by `lock`.
    private let lock = NSLock()
    private var spare: [Float] = []

    /// The spare storage (any contents), or an empty array.
    func take() -> [Float] {
        lock.withLock {
            defer { spare = [] }
            return spare
        }
    }

    /// Offers `values`' storage for the next model; the larger of the two buffers is kept.
    func give(_ values: [Float]) {
        lock.withLock { if values.count > spare.count { spare = values } }
    }
}
