import Foundation

/// Rényi-DP accountant for the sampled Gaussian mechanism (Mironov, Talwar & Zhang 2019,
/// "Rényi Differential Privacy of the Sampled Gaussian Mechanism"), composed over rounds, and
/// converted to (ε, δ) with the conversion of Canonne, Kamath & Steinke / Balle et al. 2020 as
/// Google's `dp_accounting` does. The unit of privacy is one site per round: its update is
/// clipped to L2 norm `C`, the summed noise has standard deviation `z · C`.
///
/// With sampling rate `q < 1` only integer orders are used (the closed form of Mironov et al.);
/// with `q = 1` every order has the Gaussian's exact `α / (2 z²)`.
public struct PrivacyAccountant: Sendable, Equatable {
    public static let defaultOrders: [Double] = [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5] + (5...64).map(Double.init) + [128, 256, 512]

    public let orders: [Double]
    /// Accumulated RDP at each order.
    public private(set) var rdp: [Double]

    public init(orders: [Double] = PrivacyAccountant.defaultOrders) {
        self.orders = orders
        rdp = Array(repeating: 0, count: orders.count)
    }

    /// RDP at `order` of one application of the Gaussian mechanism with noise multiplier `z`,
    /// Poisson-sampled with probability `q` (∞ where the closed form does not apply).
    public static func sampledGaussianRDP(q: Double, noiseMultiplier z: Double, order α: Double) -> Double {
        if q <= 0 { return 0 }
        if z <= 0 { return .infinity }
        if q >= 1 { return α / (2 * z * z) }
        guard α == α.rounded(), α >= 2 else { return .infinity }
        let n = Int(α)
        var logA = -Double.infinity
        for i in 0...n {
            let logBinomial = lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1))
            let term = logBinomial + Double(i) * log(q) + Double(n - i) * log1p(-q) + Double(i * i - i) / (2 * z * z)
            logA = logAddExp(logA, term)
        }
        return logA / (α - 1)
    }

    static func logAddExp(_ a: Double, _ b: Double) -> Double {
        if a == -.infinity { return b }
        if b == -.infinity { return a }
        let m = max(a, b)
        return m + log1p(exp(-abs(a - b)))
    }

    /// Adds `count` rounds of the sampled Gaussian mechanism.
    public mutating func compose(q: Double, noiseMultiplier z: Double, count: Int = 1) {
        for (index, order) in orders.enumerated() {
            rdp[index] += Double(count) * Self.sampledGaussianRDP(q: q, noiseMultiplier: z, order: order)
        }
    }

    /// The smallest ε over the orders for which the composition is (ε, δ)-DP, and that order.
    public func epsilon(delta: Double) -> (epsilon: Double, order: Double) {
        Self.epsilon(orders: orders, rdp: rdp, delta: delta)
    }

    /// `ε = rdp + log(1 − 1/α) − log(δ · α) / (α − 1)`, minimized over α (0 where the KL bound
    /// already gives δ).
    public static func epsilon(orders: [Double], rdp: [Double], delta: Double) -> (epsilon: Double, order: Double) {
        var best = (Double.infinity, orders.first ?? 0)
        for (α, r) in zip(orders, rdp) where r.isFinite {
            let ε: Double
            if delta * delta + expm1(-r) > 0 {
                ε = 0
            } else if α > 1.01 {
                ε = r + log1p(-1 / α) - log(delta * α) / (α - 1)
            } else {
                continue
            }
            if ε < best.0 { best = (ε, α) }
        }
        return (max(0, best.0), best.1)
    }
}
