/// Combines a round's updates so that a minority of hostile sites cannot drag the result: the
/// coordinate-wise median, the coordinate-wise trimmed mean, or Krum / multi-Krum's choice of
/// the updates closest to their neighbours (Blanchard et al., NeurIPS 2017).
///
/// Pure functions over slices of the updates, with no I/O: callers hand in the same range of
/// every update at a time (block by block, from their spools), so memory stays one block per
/// update whatever the model's size. Every site counts once in the median and trimmed mean: an
/// example-count weight would let one site that claims many examples move them.
public enum RobustCombiner {
    /// The median of each coordinate over `slices` (the mean of the two middle values for an
    /// even count), written to `out`. O(count × n²) comparisons for n updates (n is small).
    public static func median(_ slices: [UnsafeBufferPointer<Float>], into out: UnsafeMutableBufferPointer<Double>) {
        trimmedMean(slices, trim: (slices.count - 1) / 2, into: out)
    }

    /// The mean of each coordinate over `slices` after dropping its `trim` smallest and `trim`
    /// largest values, written to `out`. Requires `2 × trim < slices.count`.
    public static func trimmedMean(_ slices: [UnsafeBufferPointer<Float>], trim: Int, into out: UnsafeMutableBufferPointer<Double>) {
        let n = slices.count
        precondition(n > 0 && trim >= 0 && 2 * trim < n, "cannot trim \(trim) from each end of \(n) values")
        precondition(slices.allSatisfy { $0.count == out.count }, "a slice does not cover the range")
        let kept = Double(n - 2 * trim)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { column in
            for i in 0..<out.count {
                for j in 0..<n { column[j] = slices[j][i] }
                insertionSort(column)
                var sum = 0.0
                for j in trim..<(n - trim) { sum += Double(column[j]) }
                out[i] = sum / kept
            }
        }
    }

    /// How many values to trim from each end of `count` for a trimmed mean of fraction `beta`.
    public static func trimCount(beta: Double, count: Int) -> Int {
        min((count - 1) / 2, Int((beta * Double(count)).rounded(.down)))
    }

    private static func insertionSort(_ values: UnsafeMutableBufferPointer<Float>) {
        for i in 1..<max(1, values.count) {
            let value = values[i]
            var j = i - 1
            while j >= 0 && values[j] > value {
                values[j + 1] = values[j]
                j -= 1
            }
            values[j + 1] = value
        }
    }
}

/// Krum's pairwise distances, summed block by block over n updates, and the choice they give.
///
/// Memory: n² Float64. Feed every block of the updates to ``add(_:)`` (in any order, each once),
/// then ask ``select(byzantine:keep:)``.
public struct KrumScores: Sendable {
    public let count: Int
    /// Squared Euclidean distances, row-major n × n (symmetric, zero diagonal).
    private var distances: [Double]

    public init(count: Int) {
        self.count = count
        distances = [Double](repeating: 0, count: count * count)
    }

    /// Adds the squared distances between the updates over one range (one slice per update, in
    /// the same order each time).
    public mutating func add(_ slices: [UnsafeBufferPointer<Float>]) {
        precondition(slices.count == count, "Krum was set up for \(count) updates, not \(slices.count)")
        for a in 0..<count {
            for b in (a + 1)..<max(a + 1, count) {
                let x = slices[a], y = slices[b]
                var sum = 0.0
                for i in 0..<x.count {
                    let d = Double(x[i]) - Double(y[i])
                    sum += d * d
                }
                distances[a * count + b] += sum
                distances[b * count + a] += sum
            }
        }
    }

    /// The squared distance between updates `a` and `b` over what has been added.
    public func distance(_ a: Int, _ b: Int) -> Double { distances[a * count + b] }

    /// Each update's Krum score: the sum of its squared distances to its n − f − 2 nearest others.
    public func scores(byzantine f: Int) -> [Double] {
        let neighbours = max(0, count - f - 2)
        return (0..<count).map { a in
            let others = (0..<count).filter { $0 != a }.map { distance(a, $0) }.sorted()
            return others.prefix(neighbours).reduce(0, +)
        }
    }

    /// The `keep` updates with the lowest scores, tolerating `f` Byzantine updates (Krum for
    /// keep 1, multi-Krum above), in increasing order of score; ties go to the lower index, so
    /// the choice is deterministic for inputs in a deterministic order. Requires n ≥ 2f + 3.
    public func select(byzantine f: Int, keep: Int) -> [Int] {
        precondition(count >= 2 * f + 3, "Krum needs at least 2f + 3 updates (f \(f), n \(count))")
        let scored = scores(byzantine: f)
        let order = (0..<count).sorted { scored[$0] != scored[$1] ? scored[$0] < scored[$1] : $0 < $1 }
        return Array(order.prefix(min(keep, count - f)))
    }
}
