import Foundation
import Testing
@testable import FedCore

@Suite("Aggregation")
struct AggregationTests {
    static let layout = try! ModelLayout([TensorSpec(name: "w", shape: [2]), TensorSpec(name: "b", shape: [1])])

    @Test("Weighted mean by example count, in Float64, one update at a time")
    func weightedMean() throws {
        var accumulator = WeightedMeanAccumulator(layout: Self.layout)
        #expect(accumulator.mean() == nil)
        accumulator.add([1, 2, 3], weight: 1)
        accumulator.add([4, 5, 6], weight: 3)
        // (1·1 + 3·4)/4 = 3.25, (2 + 15)/4 = 4.25, (3 + 18)/4 = 5.25
        #expect(accumulator.mean() == [3.25, 4.25, 5.25])
        #expect(accumulator.totalWeight == 4 && accumulator.updateCount == 2)
        accumulator.reset()
        #expect(accumulator.mean() == nil)
    }

    @Test("Float64 accumulation keeps small updates that Float32 summation would lose")
    func precision() throws {
        let layout = try ModelLayout([TensorSpec(name: "x", shape: [1])])
        var accumulator = WeightedMeanAccumulator(layout: layout)
        accumulator.add([1e8], weight: 1)
        for _ in 0..<1000 { accumulator.add([1], weight: 1) }
        // Exact: (1e8 + 1000) / 1001 = 99901.098901…; naive Float32 summation gives 1e8/1001 = 99900.1.
        let mean = try #require(accumulator.mean()?.first)
        #expect(abs(Double(mean) - (1e8 + 1000) / 1001) < 0.01)
    }

    /// Expected values computed independently (Python, float64) from Algorithm 2 of Reddi et al.
    @Test("Server optimizers match the paper's update rules", arguments: [
        (ServerOptimizer.Kind.fedavg, [1.04, -2.0100000000000002, 0.495]),
        (.fedavgm, [1.049, -2.028, 0.495]),
        (.fedadagrad, [1.0221944445264175, -2.0135118695401273, 0.49019800019996]),
        (.fedadam, [1.210052361369673, -2.1294710594477033, 0.41799336702973927]),
        (.fedyogi, [1.2099892339637486, -2.129337768829463, 0.41801960972814434]),
    ])
    func optimizers(kind: ServerOptimizer.Kind, expected: [Double]) throws {
        var optimizer = ServerOptimizer(settings: .init(kind: kind, learningRate: 0.1, momentum: 0.9, beta1: 0.9, beta2: 0.99, tau: 1e-3))
        var model: [Float] = [1.0, -2.0, 0.5]
        optimizer.step(model: &model, meanDelta: [0.1, -0.2, 0.0])
        optimizer.step(model: &model, meanDelta: [0.3, 0.1, -0.05])
        for (got, want) in zip(model, expected) {
            #expect(abs(Double(got) - want) <= 2e-6 * max(1, abs(want)), "\(kind): \(got) vs \(want)")
        }
    }

    @Test("Block-wise steps across block boundaries equal each element stepped on its own", arguments: ServerOptimizer.Kind.allCases)
    func blockBoundaries(kind: ServerOptimizer.Kind) throws {
        let settings = ServerOptimizer.Settings(kind: kind, learningRate: 0.1, momentum: 0.9, beta1: 0.9, beta2: 0.99, tau: 1e-3)
        let count = 3 * 8192 + 5
        var model = (0..<count).map { Float($0 % 13) * 0.25 - 1 }
        let deltas: [[Float]] = (0..<2).map { (round: Int) -> [Float] in
            (0..<count).map { (i: Int) -> Float in Float((i * 7 + round) % 11) * 0.01 - 0.05 }
        }
        var optimizer = ServerOptimizer(settings: settings)
        for delta in deltas { optimizer.step(model: &model, meanDelta: delta) }
        for index in [0, 8191, 8192, 16_383, 16_384, 24_575, 24_576, count - 1] {
            var single = ServerOptimizer(settings: settings)
            var element = [Float(index % 13) * 0.25 - 1]
            for delta in deltas { single.step(model: &element, meanDelta: [delta[index]]) }
            #expect(model[index] == element[0], "element \(index)")
            if kind != .fedavg { #expect(optimizer.firstMoment[index] == single.firstMoment[0]) }
        }
    }

    @Test("A step split over threads equals the one-thread step bit for bit, each block reported once",
          arguments: ServerOptimizer.Kind.allCases)
    func parallelStep(kind: ServerOptimizer.Kind) throws {
        let settings = ServerOptimizer.Settings(kind: kind, learningRate: 0.1, momentum: 0.9, beta1: 0.9, beta2: 0.99, tau: 1e-3)
        let count = 5 * 8192 + 123
        let deltas: [[Float]] = (0..<3).map { round in (0..<count).map { Float(($0 * 7 + round) % 11) * 0.01 - 0.05 } }
        var reference = (0..<count).map { Float($0 % 13) * 0.25 - 1 }
        var single = ServerOptimizer(settings: settings)
        for delta in deltas { single.step(model: &reference, meanDelta: delta) }
        for parts in [1, 2, 3, 7] {
            var model = (0..<count).map { Float($0 % 13) * 0.25 - 1 }
            var split = ServerOptimizer(settings: settings)
            let seen = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
            defer { seen.deallocate() }
            for delta in deltas {
                seen.initialize(repeating: 0)
                nonisolated(unsafe) let marks = seen
                model.withUnsafeMutableBufferPointer { values in
                    split.step(model: values, parts: parts) { _, range, out in
                        for (k, i) in range.enumerated() { out[k] = Double(delta[i]) }
                    } stepped: { _, range in
                        for i in range { marks[i] += 1 }
                    }
                }
                #expect(seen.allSatisfy { $0 == 1 }, "\(parts) parts: every element reported once")
            }
            let same = model == reference && split.firstMoment == single.firstMoment && split.secondMoment == single.secondMoment
            #expect(same, "\(kind) in \(parts) parts")
        }
    }

    @Test("The accumulator's block-wise mean equals the whole mean")
    func blockMean() throws {
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [10_000])])
        var accumulator = WeightedMeanAccumulator(layout: layout)
        accumulator.add((0..<10_000).map { Float($0) }, weight: 3)
        accumulator.add((0..<10_000).map { Float(-$0) * 0.5 }, weight: 1)
        let whole = try #require(accumulator.mean())
        var block = [Double](repeating: .nan, count: 100)
        block.withUnsafeMutableBufferPointer { accumulator.mean(9_900..<10_000, into: $0) }
        #expect(block.map { Float($0) } == Array(whole[9_900...]))
        let expected: Double = (3.0 * 9_900.0 - 0.5 * 9_900.0) / 4.0
        #expect(block[0] == expected)
    }

    @Test("After a reset (which zeroes nothing) the next round's mean is exactly a fresh accumulator's")
    func resetWithoutZeroing() throws {
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [5])])
        var reused = WeightedMeanAccumulator(layout: layout)
        reused.add([9, 9, 9, 9, 9], weight: 7)
        reused.add([-3, 1e30, 2, 0, 5], weight: 2)
        reused.reset()
        #expect(reused.mean() == nil)
        var block = [Double](repeating: .nan, count: 5)
        block.withUnsafeMutableBufferPointer { reused.mean(0..<5, into: $0) }
        #expect(block == [0, 0, 0, 0, 0], "nothing added since the reset: a zero mean")
        let first: [Float] = [1, 2, 3, 4, 5], second: [Float] = [0.5, -1, 0.25, 8, -2]
        // The first update in two ordered slices, as the coordinator adds a spooled update.
        first.withUnsafeBufferPointer {
            reused.add(UnsafeBufferPointer(rebasing: $0[0..<2]), at: 0, weight: 3)
            reused.add(UnsafeBufferPointer(rebasing: $0[2...]), at: 2, weight: 3)
        }
        reused.finishUpdate(weight: 3)
        reused.add(second, weight: 1)
        var fresh = WeightedMeanAccumulator(layout: layout)
        fresh.add(first, weight: 3)
        fresh.add(second, weight: 1)
        #expect(reused.mean() == fresh.mean())
        // A first update that stops short counts as zero beyond its last slice.
        reused.reset()
        first.withUnsafeBufferPointer { reused.add(UnsafeBufferPointer(rebasing: $0[0..<2]), at: 0, weight: 1) }
        reused.finishUpdate(weight: 1)
        #expect(reused.mean() == [1, 2, 0, 0, 0])
    }

    /// Updates whose weighted sums are exact in Float64, so that every order agrees bit for bit.
    static let exactUpdates: [([Float], UInt64)] = [
        ([1, 2, 3, 4, 5, 6], 3), ([0.5, -1, 0.25, 8, -2, 0], 1), ([-4, 4, 2, 1, 0.125, 9], 2),
        ([7, 0, -0.5, 3, 2, 1], 5), ([0, 0, 1, 1, -1, 2], 4), ([16, -8, 4, -2, 1, -0.5], 7),
    ]

    /// `body` with the updates' slices over `range`.
    static func withSlices<R>(_ updates: ArraySlice<([Float], UInt64)>, _ range: Range<Int>, _ body: ([WeightedSlice]) -> R) -> R {
        let slices = updates.map { values, weight in
            WeightedSlice(values.withUnsafeBufferPointer { UnsafeBufferPointer(rebasing: $0[range]) }, weight: weight)
        }
        return withExtendedLifetime(updates) { body(slices) }
    }

    /// An accumulator of `exactUpdates` added one by one, the reference.
    static func addedOneByOne(_ layout: ModelLayout) -> WeightedMeanAccumulator {
        var accumulator = WeightedMeanAccumulator(layout: layout)
        for (values, weight) in exactUpdates { accumulator.add(values, weight: weight) }
        return accumulator
    }

    /// An accumulator that held `garbage` and was reset (its sums are not zeroed).
    static func reset(_ layout: ModelLayout, after garbage: [Float]) -> WeightedMeanAccumulator {
        var accumulator = WeightedMeanAccumulator(layout: layout)
        accumulator.add(garbage, weight: 5)
        accumulator.reset()
        return accumulator
    }

    @Test("Up to six updates added in one call (four per pass) give the mean of adding them one by one, first after a reset or not",
          arguments: 1...6)
    func severalAtOnce(_ k: Int) throws {
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [6])])
        let updates = Self.exactUpdates
        let single = Self.addedOneByOne(layout)
        var batched = Self.reset(layout, after: [9, 9, 9, 9, 9, 9])
        // The first k in two slices, as the coordinator reads spools back window by window.
        for range in [0..<4, 4..<6] {
            Self.withSlices(updates[..<k], range) { batched.add($0, at: range.lowerBound) }
        }
        for (_, weight) in updates[..<k] { batched.finishUpdate(weight: weight) }
        for (values, weight) in updates[k...] { batched.add(values, weight: weight) }
        #expect(batched.mean() == single.mean())
        #expect(batched.totalWeight == 22 && batched.updateCount == 6)
    }

    @Test("Nine updates added in one call and nine pending in a mean, over slices that cross the sums' cache blocks, equal them added one by one")
    func manyAcrossBlocks() throws {
        let count = 2 * 8192 + 1000
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [count])])
        // Quarter-integers and small weights: every sum is exact in Float64, whatever the order.
        func values(_ u: Int) -> [Float] {
            (0..<count).map { (i: Int) -> Float in Float((i * (u + 3)) % 29 - 14) * 0.25 }
        }
        let updates: [([Float], UInt64)] = (0..<9).map { (values($0), UInt64($0 + 1)) }
        var single = WeightedMeanAccumulator(layout: layout)
        for (values, weight) in updates { single.add(values, weight: weight) }
        var batched = Self.reset(layout, after: [Float](repeating: 7, count: count))
        // Two slices, the first ending inside the second block, as windows of a spool would.
        for range in [0..<9000, 9000..<count] {
            Self.withSlices(updates[...], range) { batched.add($0, at: range.lowerBound) }
        }
        for (_, weight) in updates { batched.finishUpdate(weight: weight) }
        let same = batched.mean() == single.mean()
        #expect(same && batched.updateCount == 9)
        // The same nine straight into a mean (nothing in the sums), block by block as a close.
        let empty = WeightedMeanAccumulator(layout: layout)
        var expected = [Double](repeating: .nan, count: count)
        expected.withUnsafeMutableBufferPointer { single.mean(0..<count, into: $0) }
        var closed = [Double](repeating: .nan, count: count)
        for range in [0..<5000, 5000..<count] {
            Self.withSlices(updates[...], range) { pending in
                closed.withUnsafeMutableBufferPointer { empty.mean(range, into: UnsafeMutableBufferPointer(rebasing: $0[range]), pending: pending) }
            }
        }
        let equal = closed == expected
        #expect(equal)
    }

    @Test("A block's mean with updates still pending (not added) equals the mean of adding them first, with or without sums",
          arguments: 0...6)
    func meanWithPending(_ added: Int) throws {
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [6])])
        let updates = Self.exactUpdates
        let all = Self.addedOneByOne(layout)
        var partial = Self.reset(layout, after: [1e30, 9, 9, 9, 9, 9])
        for (values, weight) in updates[..<added] { partial.add(values, weight: weight) }
        var expected = [Double](repeating: .nan, count: 6)
        expected.withUnsafeMutableBufferPointer { all.mean(0..<6, into: $0) }
        for range in [0..<2, 2..<6] {
            var block = [Double](repeating: .nan, count: range.count)
            Self.withSlices(updates[added...], range) { pending in
                block.withUnsafeMutableBufferPointer { partial.mean(range, into: $0, pending: pending) }
            }
            #expect(block == Array(expected[range]), "range \(range)")
        }
        // The pending updates were not added: the sums still hold only the first ones.
        #expect(partial.updateCount == added)
    }

    @Test("Impossible optimizer settings are refused with what to fix")
    func settingsValidation() {
        #expect(throws: ModelError.self) { try ServerOptimizer.Settings(learningRate: 0).validate() }
        #expect(throws: ModelError.self) { try ServerOptimizer.Settings(beta2: 1).validate() }
        #expect(throws: Never.self) { try ServerOptimizer.Settings().validate() }
    }
}

@Suite("safetensors")
struct SafeTensorsTests {
    @Test("Round trip, with metadata and an 8-byte aligned header")
    func roundTrip() throws {
        let layout = try ModelLayout([TensorSpec(name: "layer0.weight", shape: [2, 3]), TensorSpec(name: "layer0.bias", shape: [3])])
        let model = try ModelParameters(layout: layout, values: (0..<9).map { Float($0) - 4.5 })
        let bytes = try SafeTensors.encode(model, metadata: ["round": "3"])
        let headerLength = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect((8 + headerLength) % 8 == 0)
        let decoded = try SafeTensors.decode(bytes)
        #expect(decoded.model == model)
        #expect(decoded.metadata == ["round": "3"])
        #expect(decoded.model.tensor(named: "layer0.bias") == [1.5, 2.5, 3.5])
    }

    @Test("Truncated or inconsistent files are refused")
    func corrupt() throws {
        let layout = try ModelLayout([TensorSpec(name: "w", shape: [4])])
        let bytes = try SafeTensors.encode(ModelParameters(zerosFor: layout))
        #expect(throws: ModelError.self) { try SafeTensors.decode(Array(bytes.dropLast(1))) }
        #expect(throws: ModelError.self) { try SafeTensors.decode([1, 2, 3]) }
        var hugeHeader = bytes
        hugeHeader[7] = 0x7F
        #expect(throws: ModelError.self) { try SafeTensors.decode(hugeHeader) }
    }

    @Test("Layouts refuse duplicate names and empty dimensions")
    func layoutValidation() {
        #expect(throws: ModelError.self) { try ModelLayout([TensorSpec(name: "a", shape: [1]), TensorSpec(name: "a", shape: [2])]) }
        #expect(throws: ModelError.self) { try ModelLayout([TensorSpec(name: "a", shape: [0])]) }
    }
}
