import FedCore
import FedHashing
import FedProtocol
import FedWire
import Foundation
import Testing
@testable import FedCoordinator

/// What a site sends is checked where it enters; nothing it claims can trap, stall or poison.
@Suite("Site inputs and history, without I/O")
struct SiteInputTests {
    static func ready(examples: UInt64 = 10, trainSeconds: Double = 1, loss: Double = 0.5) -> UpdateReady {
        var ready = UpdateReady()
        ready.roundID = 1
        ready.exampleCount = examples
        ready.trainSeconds = trainSeconds
        ready.trainLoss = loss
        return ready
    }

    @Test("Train figures: NaN or absurd durations and losses, and example counts above the cap, are refused")
    func trainFigures() {
        let bounds = UpdateBounds()
        #expect(Coordinator.problem(with: Self.ready(), bounds: bounds) == nil)
        for bad in [Double.nan, .infinity, -1, 1e9] {
            #expect(Coordinator.problem(with: Self.ready(trainSeconds: bad), bounds: bounds)?.contains("train_seconds") == true, "\(bad)")
        }
        #expect(Coordinator.problem(with: Self.ready(loss: .nan), bounds: bounds)?.contains("train_loss") == true)
        for count: UInt64 in [1 << 40, 1 << 63, .max] {
            #expect(Coordinator.problem(with: Self.ready(examples: count), bounds: bounds)?.contains("max_example_count") == true)
        }
        #expect(Coordinator.problem(with: Self.ready(examples: bounds.maxExampleCount), bounds: bounds) == nil)
    }

    @Test("A site's text is stripped of control characters and cut to a kilobyte on a character boundary")
    func siteText() {
        #expect(SiteText.clean("disk full\n\u{1B}[31mred\u{0}") == "disk full  [31mred ")
        #expect(SiteText.clean("short") == "short")
        let long = String(repeating: "é", count: 4 << 20)
        let cut = SiteText.clean(long)
        #expect(cut.utf8.count <= SiteText.maxBytes && cut.hasSuffix("…") && cut.utf8.count > 1000)
        let exact = String(repeating: "a", count: SiteText.maxBytes)
        #expect(SiteText.clean(exact) == exact)
    }

    @Test("Refusals are recorded once per address and reason per interval, the next record counting those between")
    func refusalLimiter() {
        var limiter = RefusalLimiter(interval: 60, capacity: 3)
        let key = RefusalLimiter.Key(host: "10.0.0.1", reason: "handshake: no certificate")
        #expect(limiter.admit(key, now: 0) == 1)
        for t in 1...1999 { #expect(limiter.admit(key, now: Double(t) * 0.01) == nil) }
        #expect(limiter.admit(RefusalLimiter.Key(host: "10.0.0.2", reason: key.reason), now: 21) == 1)
        #expect(limiter.admit(key, now: 61) == 2000)
        // Bounded: a fourth key forgets the oldest, which then counts as new.
        for host in ["a", "b", "c"] { _ = limiter.admit(RefusalLimiter.Key(host: host, reason: "x"), now: 70) }
        #expect(limiter.admit(RefusalLimiter.Key(host: "10.0.0.2", reason: key.reason), now: 71) == 1)
    }

    @Test("Configured bounds refuse impossible values with what to fix")
    func boundsValidation() throws {
        var bounds = UpdateBounds()
        try bounds.validate()
        bounds.maxExampleCount = (1 << 32) + 1
        #expect(throws: StrictConfiguration.ConfigurationError.self) { try bounds.validate() }
        bounds = UpdateBounds()
        bounds.maxAbs = .infinity
        #expect(throws: StrictConfiguration.ConfigurationError.self) { try bounds.validate() }
        var limits = PeerLimits()
        try limits.validate()
        limits.maxCallsPerConnection = 1
        #expect(throws: StrictConfiguration.ConfigurationError.self) { try limits.validate() }
    }

    @Test("Secure round ids rise across restarts, whatever round a crash lost")
    func secureRoundIDs() {
        // Killed after announcing round R+1 at epoch e; the restart retries round R at epoch e+1.
        let seen = SecureRoundID(epoch: 7, round: 1_574, attempt: 3).wire
        let retried = SecureRoundID(epoch: 8, round: 1_573, attempt: 0).wire
        #expect(retried > seen)
        #expect(SecureRoundID(epoch: 1, round: 5, attempt: 1).wire > SecureRoundID(epoch: 1, round: 5, attempt: 0).wire)
        #expect(SecureRoundID(epoch: 1, round: 6, attempt: 0).wire > SecureRoundID(epoch: 1, round: 5, attempt: 9).wire)
        // 300 restarts: no wrap (the old layout kept the start count mod 256).
        #expect(SecureRoundID(epoch: 300, round: 1, attempt: 0).wire > SecureRoundID(epoch: 299, round: 1, attempt: 0).wire)
    }

    @Test("The start counter only rises, even when the log it counted from is cut")
    func epochs() throws {
        let store = try CheckpointStore(directory: RoundLogTests.temporaryDirectory())
        #expect(try store.nextEpoch(atLeast: 0) == 1)
        #expect(try store.nextEpoch(atLeast: 0) == 2)
        #expect(try store.nextEpoch(atLeast: 10) == 11)
        #expect(try store.nextEpoch(atLeast: 3) == 12)
    }

    @Test("The accumulator's total weight saturates instead of trapping")
    func accumulatorTotal() throws {
        var accumulator = WeightedMeanAccumulator(layout: try ModelLayout([TensorSpec(name: "w", shape: [2])]))
        accumulator.add([1, 2], weight: 1 << 63)
        accumulator.add([3, 4], weight: 1 << 63)
        accumulator.add([5, 6], weight: 1 << 63)
        #expect(accumulator.totalWeight == .max)
        #expect(accumulator.mean()?.allSatisfy(\.isFinite) == true)
    }

    @Test("Magnitude and norm checks find the first value beyond the bound at any alignment")
    func floatBounds() {
        var values = [Float](repeating: 0.5, count: 1000)
        values[777] = 2e4
        // At offset 1 of a buffer: every load unaligned.
        let raw = [0] + values.withUnsafeBytes { Array($0) }
        raw.withUnsafeBytes { whole in
            let buffer = UnsafeRawBufferPointer(rebasing: whole[1...])
            #expect(FloatBounds.firstBeyond(buffer, bound: 1e4) == 777)
            #expect(FloatBounds.firstBeyond(buffer, bound: 3e4) == nil)
            #expect(abs(FloatBounds.sumOfSquares(buffer) - (999 * 0.25 + 4e8)) < 1)
        }
        var special = [Float](repeating: 1, count: 130)
        special[129] = .nan
        special.withUnsafeBytes { #expect(FloatBounds.firstBeyond($0, bound: Float.greatestFiniteMagnitude) == 129) }
        special[100] = -.infinity
        special.withUnsafeBytes { #expect(FloatBounds.firstBeyond($0, bound: Float.greatestFiniteMagnitude) == 100) }
    }
}
