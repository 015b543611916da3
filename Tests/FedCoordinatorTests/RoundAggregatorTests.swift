import FedCore
import Foundation
import Testing

@testable import FedCoordinator

/// The plaintext aggregators on real spool files, without a coordinator: what each close does to
/// the model, against the same combination computed element by element here.
@Suite("Round aggregators")
struct RoundAggregatorTests {
    /// Two tensors, long enough to cross the close's 256 KiB mapping windows and the optimizer's
    /// blocks, and odd-sized so that neither divides evenly.
    static let layout = try! ModelLayout([TensorSpec(name: "w", shape: [301, 313]), TensorSpec(name: "b", shape: [77])])

    /// A deterministic update: element `i` of site `site`.
    static func delta(site: Int, _ i: Int) -> Float { Float(sin(Double(i) * 0.001 + Double(site))) * Float(site + 1) }

    struct Bench {
        let directory = RoundLogTests.temporaryDirectory()
        let pool: SpoolPool
        let start: [Float]

        init() {
            pool = SpoolPool(directory: directory, idleLimit: 4)
            start = (0..<RoundAggregatorTests.layout.parameterCount).map { Float($0 % 97) / 97 }
        }

        func model() throws -> GlobalModel {
            GlobalModel(parameters: try ModelParameters(layout: RoundAggregatorTests.layout, values: start),
                        optimizer: ServerOptimizer(settings: .init(kind: .fedavg, learningRate: 1)))
        }

        func update(_ agent: String, site: Int, weight: UInt64, values: [Float]? = nil) throws -> AcceptedUpdate {
            let spool = try pool.take()
            let values = values ?? (0..<start.count).map { RoundAggregatorTests.delta(site: site, $0) }
            try values.withUnsafeBytes { try spool.append($0) }
            return AcceptedUpdate(agent: agent, spool: spool, weight: weight)
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    @Test("The mean steps the model by the example-weighted mean, whether updates are added during the round or all at the close",
          arguments: [false, true])
    func weightedMean(addsDuringRound: Bool) throws {
        let bench = Bench()
        defer { bench.remove() }
        let aggregator = MeanAggregator(layout: Self.layout, spools: bench.pool, addsDuringRound: addsDuringRound)
        let weights: [UInt64] = [10, 3, 7, 1, 250, 42]
        for (site, weight) in weights.enumerated() {
            try aggregator.add(try bench.update("site-\(site)", site: site, weight: weight), closesRound: site == weights.count - 1)
        }
        var model = try bench.model()
        let combination = try aggregator.close(into: &model)
        let total = Double(weights.reduce(0, +))
        var worst = 0.0
        for i in stride(from: 0, to: bench.start.count, by: 7) {
            let mean = weights.enumerated().reduce(0.0) { $0 + Double($1.element) * Double(Self.delta(site: $1.offset, i)) } / total
            worst = max(worst, abs(Double(model.parameters.values[i]) - (Double(bench.start[i]) + mean)))
        }
        #expect(worst < 1e-5, "largest difference from the weighted mean: \(worst)")
        #expect(combination.fingerprint.allFinite)
        #expect(combination.fingerprint.tensorCRCs == GlobalModel.tensorCRCs(model.parameters), "the CRCs are the stepped model's")
        #expect(combination.combined == nil && combination.unmasked == nil)
        #expect(model.tensorCRCs == GlobalModel.tensorCRCs(try ModelParameters(layout: Self.layout, values: bench.start)),
                "the model keeps its committed CRCs until the caller adopts the step's")
    }

    @Test("A reset forgets every update added, in the sums or parked; the next close sees only the updates after it")
    func resetForgets() throws {
        let bench = Bench()
        defer { bench.remove() }
        let aggregator = MeanAggregator(layout: Self.layout, spools: bench.pool, addsDuringRound: true)
        for site in 0..<5 { try aggregator.add(try bench.update("old-\(site)", site: site, weight: 1000), closesRound: false) }
        aggregator.reset()
        try aggregator.add(try bench.update("new", site: 9, weight: 2), closesRound: true)
        var model = try bench.model()
        _ = try aggregator.close(into: &model)
        for i in stride(from: 0, to: bench.start.count, by: 101) {
            #expect(abs(model.parameters.values[i] - (bench.start[i] + Self.delta(site: 9, i))) < 1e-6)
        }
    }

    @Test("The median ignores a hostile site's huge update; Krum rejects it and names the site it kept")
    func robust() throws {
        let bench = Bench()
        defer { bench.remove() }
        let count = bench.start.count
        // Four honest sites near 0.01 apart and one sending 1000 everywhere.
        let honest: [[Float]] = (0..<4).map { site in (0..<count).map { Float(site) * 0.01 + Self.delta(site: 0, $0) } }
        let hostile = [Float](repeating: 1000, count: count)

        let median = RobustAggregator(strategy: .median, settings: RobustSettings(), spools: bench.pool)
        for (site, values) in honest.enumerated() { try median.add(try bench.update("h\(site)", site: site, weight: 5, values: values), closesRound: false) }
        try median.add(try bench.update("attacker", site: 9, weight: 1_000_000, values: hostile), closesRound: true)
        var model = try bench.model()
        let byMedian = try median.close(into: &model)
        #expect(byMedian.combined == ["attacker", "h0", "h1", "h2", "h3"], "every site is combined, in name order")
        for i in stride(from: 0, to: count, by: 53) {
            // Sorted: h0 h1 h2 h3 attacker; the middle one is h2.
            #expect(abs(model.parameters.values[i] - (bench.start[i] + honest[2][i])) < 1e-6)
        }

        var settings = RobustSettings()
        settings.krumF = 1
        settings.krumM = 1
        let krum = RobustAggregator(strategy: .krum, settings: settings, spools: bench.pool)
        for (site, values) in honest.enumerated() { try krum.add(try bench.update("h\(site)", site: site, weight: 5, values: values), closesRound: false) }
        try krum.add(try bench.update("attacker", site: 9, weight: 1_000_000, values: hostile), closesRound: true)
        model = try bench.model()
        let byKrum = try krum.close(into: &model)
        let kept = try #require(byKrum.combined)
        #expect(kept.count == 1 && kept != ["attacker"], "Krum kept \(kept)")
        let site = Int(kept[0].dropFirst())!
        for i in stride(from: 0, to: count, by: 53) {
            #expect(abs(model.parameters.values[i] - (bench.start[i] + honest[site][i])) < 1e-6)
        }
    }
}
