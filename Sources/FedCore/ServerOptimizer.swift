import Foundation

/// The server-side optimizer applied to the weighted-mean update Δ (the mean of the agents'
/// `local − global` deltas), following Reddi et al., "Adaptive Federated Optimization"
/// (ICLR 2021), Algorithm 2:
///
/// - FedAvg:     x ← x + η Δ
/// - FedAvgM:    m ← β m + Δ;                      x ← x + η m
/// - FedAdagrad: m ← β1 m + (1−β1) Δ;  v ← v + Δ²;  x ← x + η m / (√v + τ)
/// - FedAdam:    m as above;  v ← β2 v + (1−β2) Δ²;  x ← x + η m / (√v + τ)
/// - FedYogi:    m as above;  v ← v − (1−β2) Δ² sign(v − Δ²);  x ← x + η m / (√v + τ)
///
/// m starts at 0 and v at τ² (the paper's v₋₁ ≥ τ²); no bias correction, as in the paper.
/// Memory: FedAvg none; FedAvgM one model-sized buffer; the adaptive ones two.
public struct ServerOptimizer: Sendable, Equatable {
    public enum Kind: String, ConfigurationChoice {
        case fedavg, fedavgm, fedadagrad, fedadam, fedyogi
    }

    public struct Settings: ConfigurationSection, Sendable, Equatable {
        public var kind: Kind = .fedavg
        /// Server learning rate η.
        public var learningRate: Double = 1.0
        /// FedAvgM momentum β.
        public var momentum: Double = 0.9
        public var beta1: Double = 0.9
        public var beta2: Double = 0.99
        /// Adaptivity τ.
        public var tau: Double = 1e-3

        public init(kind: Kind = .fedavg, learningRate: Double = 1.0, momentum: Double = 0.9,
                    beta1: Double = 0.9, beta2: Double = 0.99, tau: Double = 1e-3) {
            self.kind = kind
            self.learningRate = learningRate
            self.momentum = momentum
            self.beta1 = beta1
            self.beta2 = beta2
            self.tau = tau
        }

        public init() { self.init(kind: .fedavg) }

        public static var fields: [ConfigurationField<Settings>] {
            [.field("kind", \.kind), .field("learning_rate", \.learningRate), .field("momentum", \.momentum), .field("beta1", \.beta1),
             .field("beta2", \.beta2), .field("tau", \.tau)]
        }

        /// Refuses impossible values with a message that says what to fix.
        public func validate() throws {
            guard learningRate > 0, learningRate.isFinite else { throw ModelError("server learning_rate must be positive, not \(learningRate)") }
            guard (0..<1).contains(momentum) else { throw ModelError("server momentum must be in [0, 1), not \(momentum)") }
            guard (0..<1).contains(beta1), (0..<1).contains(beta2) else {
                throw ModelError("beta1 and beta2 must be in [0, 1); got \(beta1) and \(beta2)")
            }
            guard tau > 0 else { throw ModelError("tau must be positive, not \(tau)") }
        }
    }

    public let settings: Settings
    /// First moment (FedAvgM's momentum buffer, or the adaptive methods' m); empty until used.
    public private(set) var firstMoment: [Float]
    /// Second moment v; empty until used.
    public private(set) var secondMoment: [Float]

    public init(settings: Settings, firstMoment: [Float] = [], secondMoment: [Float] = []) {
        self.settings = settings
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
    }

    /// Applies one round's mean delta to `model` in place.
    public mutating func step(model: inout [Float], meanDelta delta: [Float]) {
        precondition(model.count == delta.count, "delta does not match the model")
        step(model: &model) { range, out in
            for (k, i) in range.enumerated() { out[k] = Double(delta[i]) }
        }
    }

    /// Elements per block of ``step(model:meanDelta:)-swift.method``: 64 KiB of Float64 scratch.
    static let blockSize = 8192

    /// Applies one round's mean delta, which `meanDelta` writes block by block: given a range of
    /// elements it fills a buffer of `range.count` Float64s (so that the mean never needs a
    /// model-sized buffer of its own). Cost: one vectorizable pass over the model and moments.
    public mutating func step(
        model: inout [Float], meanDelta fill: (_ range: Range<Int>, _ out: UnsafeMutableBufferPointer<Double>) -> Void
    ) {
        model.withUnsafeMutableBufferPointer { step(model: $0, meanDelta: fill) }
    }

    /// ``step(model:meanDelta:)-swift.method`` on a model the caller holds in place. Blocks are
    /// stepped in order, and `meanDelta` is asked for a block only once every element before it has
    /// its final value: a reader may follow the step (to hash the model while it is written).
    public mutating func step(
        model x: UnsafeMutableBufferPointer<Float>,
        meanDelta fill: (_ range: Range<Int>, _ out: UnsafeMutableBufferPointer<Double>) -> Void
    ) {
        step(model: x, parts: 1) { _, range, out in fill(range, out) } stepped: { _, _ in }
    }

    /// ``step(model:meanDelta:)-swift.method`` split over `parts` threads, each stepping one
    /// contiguous share of the model block by block: the same result, element for element (the
    /// rule is element-wise), in about 1/`parts` of the time where the cores are free. `meanDelta`
    /// and `stepped` are called concurrently from the parts for disjoint ranges, in order within a
    /// part (its index is passed); `stepped` gets each block once its elements are final, to read
    /// it while it is in cache. Costs `parts` scratch blocks of 64 KiB.
    public mutating func step(
        model x: UnsafeMutableBufferPointer<Float>, parts: Int,
        meanDelta fill: (_ part: Int, _ range: Range<Int>, _ out: UnsafeMutableBufferPointer<Double>) -> Void,
        stepped: (_ part: Int, _ range: Range<Int>) -> Void
    ) {
        let count = x.count
        prepareMoments(count: count)
        let settings = settings
        let share = ((count + parts - 1) / max(parts, 1) + Self.blockSize - 1) / Self.blockSize * Self.blockSize
        firstMoment.withUnsafeMutableBufferPointer { m in
            secondMoment.withUnsafeMutableBufferPointer { v in
                // The parts write disjoint ranges of the model and moments, and the callbacks
                // promise to be safe for disjoint ranges: nothing is shared unsafely.
                withoutActuallyEscaping(fill) { fill in
                withoutActuallyEscaping(stepped) { stepped in
                nonisolated(unsafe) let (x, m, v, fill, stepped) = (x, m, v, fill, stepped)
                ParallelParts.run(max(parts, 1)) { part in
                    let scratch = UnsafeMutableBufferPointer<Double>.allocate(capacity: Self.blockSize)
                    defer { scratch.deallocate() }
                    var start = min(part * share, count)
                    let stop = min(start + share, count)
                    while start < stop {
                        let end = min(start + Self.blockSize, stop)
                        let d = UnsafeMutableBufferPointer(rebasing: scratch[0..<(end - start)])
                        fill(part, start..<end, d)
                        Self.apply(
                            settings, delta: UnsafeBufferPointer(d), model: UnsafeMutableBufferPointer(rebasing: x[start..<end]),
                            first: m.isEmpty ? m : UnsafeMutableBufferPointer(rebasing: m[start..<end]),
                            second: v.isEmpty ? v : UnsafeMutableBufferPointer(rebasing: v[start..<end]))
                        stepped(part, start..<end)
                        start = end
                    }
                }
                }
                }
            }
        }
    }

    /// Allocates the moments the kind needs for a model of `count` parameters (m = 0, v = τ²).
    private mutating func prepareMoments(count: Int) {
        if settings.kind != .fedavg, firstMoment.count != count { firstMoment = [Float](repeating: 0, count: count) }
        if [.fedadagrad, .fedadam, .fedyogi].contains(settings.kind), secondMoment.count != count {
            secondMoment = [Float](repeating: Float(settings.tau * settings.tau), count: count)
        }
    }

    /// One block of the update rule (the moments are empty when the kind has none).
    private static func apply(
        _ settings: Settings, delta: UnsafeBufferPointer<Double>, model: UnsafeMutableBufferPointer<Float>,
        first: UnsafeMutableBufferPointer<Float>, second: UnsafeMutableBufferPointer<Float>
    ) {
        let eta = settings.learningRate
        switch settings.kind {
        case .fedavg:
            for i in 0..<delta.count { model[i] = Float(Double(model[i]) + eta * delta[i]) }
        case .fedavgm:
            let beta = settings.momentum
            for i in 0..<delta.count {
                let m = beta * Double(first[i]) + delta[i]
                first[i] = Float(m)
                model[i] = Float(Double(model[i]) + eta * m)
            }
        case .fedadagrad, .fedadam, .fedyogi:
            let tau = settings.tau
            let b1 = settings.beta1
            let b2 = settings.beta2
            for i in 0..<delta.count {
                let d = delta[i]
                let d2 = d * d
                let m = b1 * Double(first[i]) + (1 - b1) * d
                let vPrevious = Double(second[i])
                let v: Double
                switch settings.kind {
                case .fedadagrad: v = vPrevious + d2
                case .fedadam: v = b2 * vPrevious + (1 - b2) * d2
                default: v = vPrevious - (1 - b2) * d2 * (vPrevious - d2 > 0 ? 1 : (vPrevious - d2 < 0 ? -1 : 0))
                }
                first[i] = Float(m)
                second[i] = Float(v)
                model[i] = Float(Double(model[i]) + eta * m / (v.squareRoot() + tau))
            }
        }
    }
}
