import FedCore
import FedLearn
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

    public func train(task: TrainTask, global: ModelParameters, isCancelled: () -> Bool) throws -> TrainingResult {
        var jitter = SplitMix64(seed: task.seed ^ UInt64(task.roundID) &* 0x9E37_79B9)
        let extra = delayJitterSeconds > 0 ? Double(jitter.next() >> 11) / Double(1 << 53) * delayJitterSeconds : 0
        let until = Deadline.after(seconds: delaySeconds + extra)
        while !until.hasPassed {
            if isCancelled() { throw TrainingCancelled() }
            usleep(10_000)
        }
        return try base.train(task: task, global: global, isCancelled: isCancelled)
    }
}
