import Foundation
import Testing
@testable import FedCore

@Suite("Privacy accountant (Rényi DP)")
struct PrivacyAccountantTests {
    @Test("Sampled Gaussian RDP matches Google dp_accounting's published test values (q = 0.01, z = 2.5, 50 rounds) within 1e-4")
    func sampledGaussian() {
        // google/differential-privacy, python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py,
        // test_compute_rdp_poisson_sampled_gaussian: orders 5, 50, 100 → 2.18075656e-03, 2.38460375e-02, 1.67416308e02.
        var accountant = PrivacyAccountant(orders: [5, 50, 100])
        accountant.compose(q: 0.01, noiseMultiplier: 2.5, count: 50)
        for (got, want) in zip(accountant.rdp, [2.18075656e-03, 2.38460375e-02, 1.67416308e02]) {
            #expect(abs(got - want) <= 1e-4 * want, "\(got) vs \(want)")
        }
    }

    @Test("The (ε, δ) conversion reproduces dp_accounting's reference values within 1 %")
    func conversion() {
        // test_compute_epsilon_delta_pure_dp: RDP 1.1 at orders 2…32, δ = 1e-5 → ε = 1.32783806176 at order 32.
        let (epsilon, order) = PrivacyAccountant.epsilon(orders: (2...32).map(Double.init), rdp: Array(repeating: 1.1, count: 31), delta: 1e-5)
        #expect(abs(epsilon - 1.32783806176) < 1e-9 && order == 32)
        // test_compute_epsilon_delta_gaussian: the Gaussian with z = 4.530877117 is exactly (1, 1e-6)-DP (fine orders 1…100).
        var gaussian = PrivacyAccountant(orders: (1000..<100_000).map { 0.001 * Double($0) })
        gaussian.compose(q: 1, noiseMultiplier: 4.530877117)
        #expect(abs(gaussian.epsilon(delta: 1e-6).epsilon - 1) < 0.01)
        // With this project's default orders the same mechanism stays within 1 % of 1.
        var coarse = PrivacyAccountant()
        coarse.compose(q: 1, noiseMultiplier: 4.530877117)
        #expect(abs(coarse.epsilon(delta: 1e-6).epsilon - 1) < 0.01, "\(coarse.epsilon(delta: 1e-6))")
    }

    @Test("ε grows with rounds, shrinks with noise and with sampling")
    func monotone() {
        func ε(_ q: Double, _ z: Double, _ rounds: Int) -> Double {
            var accountant = PrivacyAccountant()
            accountant.compose(q: q, noiseMultiplier: z, count: rounds)
            return accountant.epsilon(delta: 1e-5).epsilon
        }
        #expect(ε(1, 1, 10) < ε(1, 1, 20))
        #expect(ε(1, 2, 10) < ε(1, 1, 10))
        #expect(ε(0.5, 1, 10) < ε(1, 1, 10))
    }
}
