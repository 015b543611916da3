import FedCore
import Testing

/// The robust strategies against a direct computation on whole vectors.
@Suite("Robust combiners")
struct RobustCombinerTests {
    /// `n` updates of `count` values each, drawn from a fixed seed, with ties and negatives.
    static func updates(_ n: Int, count: Int, seed: UInt64) -> [[Float]] {
        var random = SplitMix64(seed: seed)
        return (0..<n).map { _ in (0..<count).map { _ in Float(Int(random.next() % 41) - 20) / 8 } }
    }

    /// Runs `combine` over `updates` in blocks of `block` values, as the coordinator's close does.
    static func blockwise(_ updates: [[Float]], block: Int,
                          _ combine: ([UnsafeBufferPointer<Float>], UnsafeMutableBufferPointer<Double>) -> Void) -> [Double] {
        let count = updates[0].count
        var out = [Double](repeating: .nan, count: count)
        var start = 0
        while start < count {
            let end = min(count, start + block)
            let slices = updates.map { update in update.withUnsafeBufferPointer { UnsafeBufferPointer(rebasing: $0[start..<end]) } }
            out.withUnsafeMutableBufferPointer { combine(slices, UnsafeMutableBufferPointer(rebasing: $0[start..<end])) }
            start = end
        }
        return out
    }

    @Test("Median and trimmed mean equal a sort of each coordinate", arguments: [1, 2, 3, 4, 5, 8, 9])
    func coordinateWise(n: Int) {
        let updates = Self.updates(n, count: 1000, seed: UInt64(n))
        let median = Self.blockwise(updates, block: 97) { RobustCombiner.median($0, into: $1) }
        let trim = RobustCombiner.trimCount(beta: 0.2, count: n)
        let trimmed = Self.blockwise(updates, block: 97) { RobustCombiner.trimmedMean($0, trim: trim, into: $1) }
        for i in 0..<1000 {
            let column = updates.map { Double($0[i]) }.sorted()
            let middle = n % 2 == 1 ? column[n / 2] : (column[n / 2 - 1] + column[n / 2]) / 2
            #expect(median[i] == middle, "coordinate \(i)")
            let kept = column[trim..<(n - trim)]
            #expect(abs(trimmed[i] - kept.reduce(0, +) / Double(kept.count)) < 1e-12, "coordinate \(i)")
        }
        #expect(RobustCombiner.trimCount(beta: 0.2, count: 5) == 1)
        #expect(RobustCombiner.trimCount(beta: 0.49, count: 2) == 0)
    }

    @Test("Krum's distances, scores and choice equal a direct computation; a far update is never chosen")
    func krum() {
        var updates = Self.updates(7, count: 500, seed: 11)
        updates[4] = updates[4].map { $0 * 50 }  // the hostile one
        var scores = KrumScores(count: updates.count)
        var start = 0
        while start < 500 {
            let end = min(500, start + 64)
            scores.add(updates.map { u in u.withUnsafeBufferPointer { UnsafeBufferPointer(rebasing: $0[start..<end]) } })
            start = end
        }
        let f = 2
        var direct: [Double] = []
        for a in 0..<7 {
            var distances: [Double] = []
            for b in 0..<7 where b != a {
                let d = zip(updates[a], updates[b]).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) }
                #expect(abs(scores.distance(a, b) - d) <= 1e-9 * max(1, d))
                distances.append(d)
            }
            direct.append(distances.sorted().prefix(7 - f - 2).reduce(0, +))
        }
        for (got, want) in zip(scores.scores(byzantine: f), direct) { #expect(abs(got - want) <= 1e-9 * max(1, want)) }
        let expectedOrder = (0..<7).sorted { direct[$0] != direct[$1] ? direct[$0] < direct[$1] : $0 < $1 }
        #expect(scores.select(byzantine: f, keep: 1) == [expectedOrder[0]])
        let multi = scores.select(byzantine: f, keep: 3)
        #expect(multi == Array(expectedOrder.prefix(3)))
        #expect(!multi.contains(4))
        // At most n − f are kept, whatever is asked.
        #expect(scores.select(byzantine: f, keep: 10).count == 5)
    }
}
