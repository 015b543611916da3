import FedAgent
@testable import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// The robust strategies over real loopback mTLS: four honest sites and one that sends its
/// update scaled 2,500 times. The mean is dragged away; the median, the trimmed mean and Krum
/// are not, and each equals its direct computation.
@Suite("Robust strategies end to end", .serialized)
struct RobustStrategyEndToEndTests {
    static let steps: [String: Float] = [
        "hospital-a": 0.001, "hospital-b": 0.002, "hospital-c": 0.003, "hospital-d": 0.002, "hospital-e": 5,
    ]

    /// The delta each strategy should give, as a multiple of the trainers' pattern (1 + i mod 7).
    static func expectedFactor(_ strategy: AggregationStrategy) -> Double {
        switch strategy {
        case .mean: (0.001 + 0.002 + 0.003 + 0.002 + 5) / 5  // equal example counts
        case .median: 0.002
        case .trimmedMean: (0.002 + 0.002 + 0.003) / 3  // trim_fraction 0.2 of 5: one value off each end
        case .krum: 0.002  // b and d tie as closest to their neighbours; b is first by name
        }
    }

    @Test("One hostile site: the mean moves 500× too far, median / trimmed mean / Krum do not",
          arguments: AggregationStrategy.allCases)
    func hostileSiteOutvoted(strategy: AggregationStrategy) throws {
        let federation = try Federation()
        let configuration = try federation.coordinatorConfiguration(rounds: 1, selection: [
            "target": 5, "min_available": 5, "min_updates": 5, "round_deadline_seconds": 20, "selection_timeout_seconds": 0.2,
        ], extra: ["strategy": strategy.rawValue, "robust": ["trim_fraction": 0.2, "krum_f": 1, "krum_m": 1]])
        let trainers = Self.steps.mapValues { BenchmarkTrainer(step: $0, exampleCount: 100) as any LocalTrainer }
        #expect(try federation.runToCompletion(configuration, trainers: trainers, seconds: 60), "the round did not finish")
        let store = try CheckpointStore(directory: configuration.stateDir)
        let initial = try configuration.initialModel()
        let committed = try store.readModel(version: 1)
        let factor = Self.expectedFactor(strategy)
        var worst = 0.0
        for i in 0..<initial.values.count {
            let delta = Double(committed.values[i]) - Double(initial.values[i])
            let want = factor * Double(1 + i % 7)
            worst = max(worst, abs(delta - want) / want)
        }
        // Float32 model values around 1 hold a delta of 0.002 to about 1e-4 relative.
        #expect(worst < 2e-3, "\(strategy): worst relative error \(worst)")
        let round = try #require(try RoundLog.verify(path: store.logPath).committedRounds.last)
        if strategy.isRobust {
            #expect(round.strategy == strategy.rawValue)
            #expect(round.combined == (strategy == .krum ? ["hospital-b"] : Self.steps.keys.sorted()))
        } else {
            #expect(round.strategy == nil && round.combined == nil)
        }
    }

    @Test("Refused at start, with the reason: a robust strategy under secure aggregation; Krum with too few updates")
    func refusedConfigurations() throws {
        let federation = try Federation()
        let selection: [String: Any] = ["target": 5, "min_available": 5, "min_updates": 4]
        let secure = #expect(throws: (any Error).self) {
            _ = try federation.coordinatorConfiguration(rounds: 1, selection: selection,
                                                        extra: ["strategy": "median", "secure_aggregation": ["enabled": true]])
        }
        #expect("\(secure!)".contains("secure aggregation hides"), "\(secure!)")
        let krum = #expect(throws: (any Error).self) {
            _ = try federation.coordinatorConfiguration(rounds: 1, selection: selection, extra: ["strategy": "krum", "robust": ["krum_f": 1]])
        }
        #expect("\(krum!)".contains("at least 5 updates (2f + 3)"), "\(krum!)")
        let unknown = #expect(throws: (any Error).self) {
            _ = try federation.coordinatorConfiguration(rounds: 1, selection: selection, extra: ["strategy": "bulyan"])
        }
        #expect("\(unknown!)".contains("\"mean\", \"median\", \"trimmed_mean\" or \"krum\", not \"bulyan\""), "\(unknown!)")
    }
}
