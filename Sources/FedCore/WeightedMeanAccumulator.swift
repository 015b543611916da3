/// Sums updates weighted by their example counts in Float64, one update at a time, and gives
/// their weighted mean.
///
/// Memory: 8 bytes per parameter, whatever the number of updates, allocated on the first add (a
/// coordinator running secure aggregation sums masked integers instead and never pays for it).
/// Callers add an update only
/// once it is complete and validated (see the coordinator's update spooling), so a broken upload
/// never touches the sum.
///
/// The first update after a ``reset()`` is written over the sums rather than added to them, so a
/// reset costs nothing and a round makes one pass fewer over the 8-byte sums.
public struct WeightedMeanAccumulator: Sendable {
    public let layout: ModelLayout
    private var sums: [Double] = []
    /// Total weight (examples) added so far.
    public private(set) var totalWeight: UInt64 = 0
    /// Updates added so far.
    public private(set) var updateCount = 0
    /// Elements of the first update written so far (its slices come in order).
    private var firstUpdateElements = 0

    public init(layout: ModelLayout) {
        self.layout = layout
    }

    /// Adds `weight × values` for the slice of the model starting at element `offset`.
    ///
    /// Call it for consecutive slices of one update, in order, then ``finishUpdate(weight:)``.
    public mutating func add(_ values: UnsafeBufferPointer<Float>, at offset: Int, weight: UInt64) {
        let w = Double(weight)
        withSlice(at: offset, count: values.count) { base, first in
            if first {
                for index in 0..<values.count { base[index] = w * Double(values[index]) }
            } else {
                for index in 0..<values.count { base[index] += w * Double(values[index]) }
            }
        }
    }

    /// Adds two updates' slices at once, `weightA × a + weightB × b` (same length, same offset):
    /// one pass over the 8-byte sums for two updates, the pass that dominates a round's adds.
    ///
    /// Call it for consecutive slices of the two updates, then ``finishUpdate(weight:)`` for each.
    public mutating func add(
        _ a: UnsafeBufferPointer<Float>, weight weightA: UInt64, _ b: UnsafeBufferPointer<Float>, weight weightB: UInt64, at offset: Int
    ) {
        precondition(a.count == b.count, "the two slices differ in length")
        let wa = Double(weightA), wb = Double(weightB)
        withSlice(at: offset, count: a.count) { base, first in
            if first {
                for index in 0..<a.count { base[index] = wa * Double(a[index]) + wb * Double(b[index]) }
            } else {
                for index in 0..<a.count { base[index] += wa * Double(a[index]) + wb * Double(b[index]) }
            }
        }
    }

    /// The sums from `offset` on, and whether they belong to the first update since the reset
    /// (to be overwritten rather than added to).
    private mutating func withSlice(at offset: Int, count: Int, _ body: (UnsafeMutablePointer<Double>, _ first: Bool) -> Void) {
        if sums.isEmpty { sums = [Double](repeating: 0, count: layout.parameterCount) }
        precondition(offset >= 0 && offset + count <= sums.count, "slice outside the model")
        let first = updateCount == 0
        if first {
            precondition(offset == firstUpdateElements, "the first update's slices must come in order")
            firstUpdateElements += count
        }
        sums.withUnsafeMutableBufferPointer { body($0.baseAddress! + offset, first) }
    }

    /// Records that an update of `weight` examples has been added in full.
    public mutating func finishUpdate(weight: UInt64) {
        if updateCount == 0, firstUpdateElements < sums.count {
            // A first update that did not cover the model: the rest of it counts as zero.
            sums.withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(rebasing: $0[firstUpdateElements...]).update(repeating: 0) }
        }
        totalWeight += weight
        updateCount += 1
    }

    /// Adds a whole update held in memory.
    public mutating func add(_ update: [Float], weight: UInt64) {
        precondition(update.count == layout.parameterCount, "update does not match the layout")
        update.withUnsafeBufferPointer { add($0, at: 0, weight: weight) }
        finishUpdate(weight: weight)
    }

    /// The weighted mean, as Float32, or nil when nothing was added.
    public func mean() -> [Float]? {
        guard totalWeight > 0, updateCount > 0 else { return nil }
        let total = Double(totalWeight)
        return sums.map { Float($0 / total) }
    }

    /// Writes the weighted mean of the elements in `range` into `out` (`range.count` values),
    /// for a server optimizer's block-wise ``ServerOptimizer/step(model:meanDelta:)-swift.method``.
    public func mean(_ range: Range<Int>, into out: UnsafeMutableBufferPointer<Double>) {
        precondition(out.count == range.count, "the buffer does not fit the range")
        guard !sums.isEmpty, updateCount > 0 else {
            out.update(repeating: 0)
            return
        }
        let total = Double(totalWeight)
        sums.withUnsafeBufferPointer { sums in
            let base = sums.baseAddress! + range.lowerBound
            for k in 0..<out.count { out[k] = base[k] / total }
        }
    }

    /// Forgets everything added (the buffer is kept; the next update overwrites it). O(1).
    public mutating func reset() {
        totalWeight = 0
        updateCount = 0
        firstUpdateElements = 0
    }
}
