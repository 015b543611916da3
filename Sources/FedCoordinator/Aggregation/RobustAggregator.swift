import FedCore

/// A robust strategy (`median`, `trimmed_mean`, `krum`): every accepted update stays parked in
/// its spool until the close, which reads them all side by side, in the order of their sites'
/// names, block by block through small windows (Krum twice: distances first), combines them
/// with ``RobustCombiner`` and steps the model on both cores.
///
/// Memory: O(model), not O(sites × model) — two mapping windows per update at the close, and
/// Krum's n × n distances.
final class RobustAggregator: RoundAggregator {
    private let strategy: AggregationStrategy
    private let settings: RobustSettings
    private let spools: SpoolPool
    private var parked: [AcceptedUpdate] = []

    init(strategy: AggregationStrategy, settings: RobustSettings, spools: SpoolPool) {
        precondition(strategy.isRobust, "the mean is the MeanAggregator's")
        self.strategy = strategy
        self.settings = settings
        self.spools = spools
    }

    func add(_ update: AcceptedUpdate, closesRound: Bool) throws {
        parked.append(update)
    }

    func close(into model: inout GlobalModel) throws -> RoundCombination {
        defer { reset() }
        let parts = 2
        var updates = parked.sorted { $0.agent < $1.agent }
        if strategy == .krum {
            var scores = KrumScores(count: updates.count)
            try SpoolMapping.forEachSlice(of: updates.map(\.spool)) { _, slices in scores.add(slices) }
            updates = scores.select(byzantine: settings.krumF, keep: settings.krumM).sorted().map { updates[$0] }
        }
        let pending = try (0..<parts).map { _ in
            try updates.map { (mapping: try SpoolMapping($0.spool, windowBytes: MeanAggregator.closeWindowBytes), weight: $0.weight) }
        }
        let trim = RobustCombiner.trimCount(beta: settings.trimFraction, count: updates.count)
        // Krum averages the updates it kept by their examples: a mean of pending updates alone.
        let noSums = WeightedMeanAccumulator(layout: model.layout)
        let strategy = strategy
        let fingerprint = model.step(parts: parts) { part, range, out in
            let slices = pending[part].map { $0.mapping.slice(range) }
            switch strategy {
            case .median: RobustCombiner.median(slices, into: out)
            case .trimmedMean: RobustCombiner.trimmedMean(slices, trim: trim, into: out)
            case .krum, .mean: noSums.mean(range, into: out, pending: zip(slices, pending[part]).map { WeightedSlice($0, weight: $1.weight) })
            }
        }
        return RoundCombination(fingerprint: fingerprint, combined: updates.map(\.agent))
    }

    func reset() {
        for update in parked { spools.give(update.spool) }
        parked = []
    }
}
