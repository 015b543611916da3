import FedCore
import FedLearn
import FedProtocol
import FedWire
import Foundation

/// Wraps a trainer so that each task takes `delaySeconds` (plus a per-task jitter drawn from the
/// task's seed) longer: a slow site, for demonstrations and straggler drills. The wrapped
/// trainer's work and results are unchanged.
public struct SlowedTrainer: LocalTrainer {
    public let base: any LocalTrainer
    public let delaySeconds: Double
    public let delayJitterSeconds: Double

    public init(_ base: any LocalTrainer, delaySeconds: Double, delayJitterSeconds: Double) {
        self.base = base
        self.delaySeconds = delaySeconds
        self.delayJitterSeconds = delayJitterSeconds
    }

    public func prepare(schema: ModelSchema) throws -> DataSchemaSummary { try base.prepare(schema: schema) }
    public func statistics() throws -> FeatureStatistics { try base.statistics() }
    public func evaluate(request: EvaluationRequest, model: ModelParameters) throws -> EvaluationMetrics {
        try base.evaluate(request: request, model: model)
    }

    public func train(task: TrainTask, global: ModelParameters, cancellation: Cancellation) throws -> TrainingResult {
        try Self.wait(for: task, delaySeconds: delaySeconds, jitterSeconds: delayJitterSeconds, cancellation: cancellation)
        return try base.train(task: task, global: global, cancellation: cancellation)
    }

    /// Sleeps `delaySeconds` plus a jitter in [0, jitterSeconds) drawn from the task's seed and
    /// round (a straggler in some rounds, not others); throws ``TrainingCancelled`` on cancel.
    static func wait(for task: TrainTask, delaySeconds: Double, jitterSeconds: Double, cancellation: Cancellation) throws {
        var jitter = SplitMix64(seed: task.seed ^ UInt64(task.roundID) &* 0x9E37_79B9)
        let extra = jitterSeconds > 0 ? Double(jitter.next() >> 11) / Double(1 << 53) * jitterSeconds : 0
        if cancellation.wait(until: .after(seconds: delaySeconds + extra)) { throw TrainingCancelled() }
    }
}
