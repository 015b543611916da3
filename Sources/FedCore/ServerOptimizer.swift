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
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case fedavg, fedavgm, fedadagrad, fedadam, fedyogi
    }

    public struct Settings: Codable, Sendable, Equatable {
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

        enum CodingKeys: String, CodingKey {
            case kind, momentum, beta1, beta2, tau
            case learningRate = "learning_rate"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Settings()
            kind = try c.decodeIfPresent(Kind.self, forKey: .kind) ?? d.kind
            learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? d.learningRate
            momentum = try c.decodeIfPresent(Double.self, forKey: .momentum) ?? d.momentum
            beta1 = try c.decodeIfPresent(Double.self, forKey: .beta1) ?? d.beta1
            beta2 = try c.decodeIfPresent(Double.self, forKey: .beta2) ?? d.beta2
            tau = try c.decodeIfPresent(Double.self, forKey: .tau) ?? d.tau
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
        step(model: &model) { Double(delta[$0]) }
    }

    /// Applies one round's mean delta, read element by element from `delta` (so that the mean
    /// never needs a model-sized buffer of its own).
    public mutating func step(model: inout [Float], meanDelta delta: (Int) -> Double) {
        let eta = settings.learningRate
        switch settings.kind {
        case .fedavg:
            for i in model.indices { model[i] = Float(Double(model[i]) + eta * delta(i)) }
        case .fedavgm:
            if firstMoment.count != model.count { firstMoment = [Float](repeating: 0, count: model.count) }
            let beta = settings.momentum
            for i in model.indices {
                let m = beta * Double(firstMoment[i]) + delta(i)
                firstMoment[i] = Float(m)
                model[i] = Float(Double(model[i]) + eta * m)
            }
        case .fedadagrad, .fedadam, .fedyogi:
            let tau = settings.tau
            if firstMoment.count != model.count { firstMoment = [Float](repeating: 0, count: model.count) }
            if secondMoment.count != model.count { secondMoment = [Float](repeating: Float(tau * tau), count: model.count) }
            let b1 = settings.beta1
            let b2 = settings.beta2
            for i in model.indices {
                let d = delta(i)
                let d2 = d * d
                let m = b1 * Double(firstMoment[i]) + (1 - b1) * d
                let vPrevious = Double(secondMoment[i])
                let v: Double
                switch settings.kind {
                case .fedadagrad: v = vPrevious + d2
                case .fedadam: v = b2 * vPrevious + (1 - b2) * d2
                default: v = vPrevious - (1 - b2) * d2 * (vPrevious - d2 > 0 ? 1 : (vPrevious - d2 < 0 ? -1 : 0))
                }
                firstMoment[i] = Float(m)
                secondMoment[i] = Float(v)
                model[i] = Float(Double(model[i]) + eta * m / (v.squareRoot() + tau))
            }
        }
    }
}
