/// Per-feature count, mean and sum of squared deviations from the mean (M2), in Float64: what a
/// site contributes to federated standardization. Two sites' statistics merge exactly (Chan,
/// Golub and LeVeque's pairwise update), so the federation's mean and variance are those of the
/// pooled data without pooling it.
public struct FeatureStatistics: Sendable, Equatable {
    public var counts: [UInt64]
    public var means: [Double]
    public var m2: [Double]

    public init(featureCount: Int) {
        counts = Array(repeating: 0, count: featureCount)
        means = Array(repeating: 0, count: featureCount)
        m2 = Array(repeating: 0, count: featureCount)
    }

    public init(counts: [UInt64], means: [Double], m2: [Double]) throws {
        guard counts.count == means.count, means.count == m2.count else {
            throw LearnError(.invalidModel, "statistics hold \(counts.count) counts, \(means.count) means and \(m2.count) sums of squares")
        }
        guard means.allSatisfy(\.isFinite), m2.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw LearnError(.invalidModel, "statistics hold a non-finite mean or a negative or non-finite sum of squares")
        }
        self.counts = counts
        self.means = means
        self.m2 = m2
    }

    public var featureCount: Int { counts.count }

    /// Adds one value (Welford's update).
    public mutating func add(_ value: Double, feature: Int) {
        counts[feature] += 1
        let delta = value - means[feature]
        means[feature] += delta / Double(counts[feature])
        m2[feature] += delta * (value - means[feature])
    }

    /// Merges another site's statistics into these.
    public mutating func merge(_ other: FeatureStatistics) {
        precondition(other.featureCount == featureCount, "statistics of different feature counts")
        for feature in 0..<featureCount where other.counts[feature] > 0 {
            let a = Double(counts[feature]), b = Double(other.counts[feature])
            let total = a + b
            let delta = other.means[feature] - means[feature]
            means[feature] += delta * b / total
            m2[feature] += other.m2[feature] + delta * delta * a * b / total
            counts[feature] += other.counts[feature]
        }
    }

    /// The frozen standardization: means and population standard deviations (1 where a feature
    /// is constant or was never seen).
    public func standardization() -> Standardization {
        let scales = (0..<featureCount).map { feature -> Double in
            guard counts[feature] > 0 else { return 1 }
            let deviation = (m2[feature] / Double(counts[feature])).squareRoot()
            return deviation > 1e-12 && deviation.isFinite ? deviation : 1
        }
        return Standardization(means: means, scales: scales)
    }
}

/// The federation's feature means and scales, frozen with the model before round 1; every agent
/// applies `(x − mean) / scale`.
public struct Standardization: Codable, Sendable, Equatable {
    public var means: [Double]
    public var scales: [Double]

    public init(means: [Double], scales: [Double]) {
        self.means = means
        self.scales = scales
    }

    /// Checks it fits `featureCount` features and holds usable numbers.
    public func validate(featureCount: Int) throws {
        guard means.count == featureCount, scales.count == featureCount else {
            throw LearnError(.invalidModel, "the standardization has \(means.count) means and \(scales.count) scales; the model has \(featureCount) features")
        }
        guard means.allSatisfy(\.isFinite), scales.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw LearnError(.invalidModel, "the standardization holds a non-finite mean or a scale that is not positive")
        }
    }
}
