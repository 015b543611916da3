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
    /// Total weight (examples) added so far; saturates at `UInt64.max` instead of trapping (the
    /// coordinator caps each weight at 2^32, so it never gets there).
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
        add([WeightedSlice(values, weight: weight)], at: offset)
    }

    /// Adds several updates' slices at once, `Σ weight × values` (same length, same offset): one
    /// pass over the 8-byte sums, the pass that dominates a round's adds, however many updates
    /// (they are taken four at a time over each cache-sized block of the sums).
    ///
    /// Call it for consecutive slices of the updates, then ``finishUpdate(weight:)`` for each.
    public mutating func add(_ slices: [WeightedSlice], at offset: Int) {
        guard let count = slices.first?.values.count else { return }
        precondition(slices.allSatisfy { $0.values.count == count }, "the slices differ in length")
        withSlice(at: offset, count: count) { base, first in
            Self.accumulate(slices, into: base, count: count, overwrite: first)
        }
    }

    /// Elements of `out` worked on at a time: 64 KiB of sums, which stay in the first-level cache
    /// while every group of four updates is added to them.
    static let blockElements = 8192

    /// `out = Σ weight × values` (or `out += …` unless `overwrite`), four updates per pass over a
    /// cache-sized block of `out`, block after block: more than four updates cost one trip of the
    /// sums through memory, not one per four.
    private static func accumulate(_ slices: [WeightedSlice], into out: UnsafeMutablePointer<Double>, count: Int, overwrite: Bool) {
        var start = 0
        while start < count {
            let length = min(blockElements, count - start)
            var overwrite = overwrite
            var next = 0
            while next < slices.count {
                let group = min(4, slices.count - next)
                accumulate(group: slices[next..<(next + group)], from: start, into: out + start, count: length, overwrite: overwrite)
                overwrite = false
                next += group
            }
            start += length
        }
    }

    /// `out = Σ weight × values[from...]` (or `out += …`) for one to four updates.
    private static func accumulate(
        group: ArraySlice<WeightedSlice>, from start: Int, into out: UnsafeMutablePointer<Double>, count: Int, overwrite: Bool
    ) {
        let first = group.startIndex
        let a = group[first].values.baseAddress! + start, wa = Double(group[first].weight)
        switch group.count {
        case 1:
            if overwrite {
                for i in 0..<count { out[i] = wa * Double(a[i]) }
            } else {
                for i in 0..<count { out[i] += wa * Double(a[i]) }
            }
        case 2:
            let b = group[first + 1].values.baseAddress! + start, wb = Double(group[first + 1].weight)
            if overwrite {
                for i in 0..<count { out[i] = wa * Double(a[i]) + wb * Double(b[i]) }
            } else {
                for i in 0..<count { out[i] += wa * Double(a[i]) + wb * Double(b[i]) }
            }
        case 3:
            let b = group[first + 1].values.baseAddress! + start, wb = Double(group[first + 1].weight)
            let c = group[first + 2].values.baseAddress! + start, wc = Double(group[first + 2].weight)
            if overwrite {
                for i in 0..<count { out[i] = wa * Double(a[i]) + wb * Double(b[i]) + wc * Double(c[i]) }
            } else {
                for i in 0..<count { out[i] += wa * Double(a[i]) + wb * Double(b[i]) + wc * Double(c[i]) }
            }
        default:
            let b = group[first + 1].values.baseAddress! + start, wb = Double(group[first + 1].weight)
            let c = group[first + 2].values.baseAddress! + start, wc = Double(group[first + 2].weight)
            let d = group[first + 3].values.baseAddress! + start, wd = Double(group[first + 3].weight)
            if overwrite {
                for i in 0..<count { out[i] = wa * Double(a[i]) + wb * Double(b[i]) + wc * Double(c[i]) + wd * Double(d[i]) }
            } else {
                for i in 0..<count { out[i] += wa * Double(a[i]) + wb * Double(b[i]) + wc * Double(c[i]) + wd * Double(d[i]) }
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
        let (sum, overflow) = totalWeight.addingReportingOverflow(weight)
        totalWeight = overflow ? .max : sum
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
    ///
    /// - Parameter pending: updates not added to the sums that count in the mean all the same,
    ///   each slice covering `range` (a round's last updates go straight into the mean at its
    ///   close: one pass over them and the sums instead of an add that writes the sums and a mean
    ///   that reads them again). Pass the same updates, with the same weights, for every range.
    public func mean(_ range: Range<Int>, into out: UnsafeMutableBufferPointer<Double>, pending: [WeightedSlice] = []) {
        precondition(out.count == range.count, "the buffer does not fit the range")
        precondition(pending.allSatisfy { $0.values.count == range.count }, "a pending slice does not cover the range")
        let hasSums = !sums.isEmpty && updateCount > 0
        let total = pending.reduce(hasSums ? Double(totalWeight) : 0) { $0 + Double($1.weight) }
        guard total > 0, let base = out.baseAddress else {
            out.update(repeating: 0)
            return
        }
        if hasSums {
            sums.withUnsafeBufferPointer { sums in
                let from = sums.baseAddress! + range.lowerBound
                for k in 0..<out.count { out[k] = from[k] }
            }
        }
        Self.accumulate(pending, into: base, count: out.count, overwrite: !hasSums)
        for k in 0..<out.count { out[k] /= total }
    }

    /// Forgets everything added (the buffer is kept; the next update overwrites it). O(1).
    public mutating func reset() {
        totalWeight = 0
        updateCount = 0
        firstUpdateElements = 0
    }
}

/// One update's values over a slice of the model, and its weight (its example count).
public struct WeightedSlice {
    public var values: UnsafeBufferPointer<Float>
    public var weight: UInt64

    public init(_ values: UnsafeBufferPointer<Float>, weight: UInt64) {
        self.values = values
        self.weight = weight
    }
}
