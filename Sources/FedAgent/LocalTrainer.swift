import FedCore
import FedLearn
import FedProtocol
import FedWire

/// What a site trains with. The agent calls it from dedicated threads:
///
/// 1. ``prepare(schema:)`` after each Join whose Welcome carries the federation's model schema:
///    check the local data against it;
/// 2. ``statistics()`` once, before round 1, for federated standardization;
/// 3. ``train(task:global:cancellation:)`` per round: the update is the `local − global` delta;
/// 4. ``evaluate(request:model:)`` every `eval_every` rounds, on the local holdout.
///
/// Only aggregates leave the trainer: the update, example counts, losses and metrics.
public protocol LocalTrainer: Sendable {
    /// Checks the site's data against `schema`; returns what was found (rows and columns).
    /// - Throws: an error naming the file, line and column when the data does not match.
    func prepare(schema: ModelSchema) throws -> DataSchemaSummary
    /// Count, mean and sum of squared deviations per feature of the training rows.
    func statistics() throws -> FeatureStatistics
    /// Trains from `global`. Must return promptly with ``TrainingCancelled`` once `cancellation`
    /// is cancelled; may take as long as it needs otherwise (heartbeats flow).
    func train(task: TrainTask, global: ModelParameters, cancellation: Cancellation) throws -> TrainingResult
    /// Evaluates `model` on the local holdout.
    func evaluate(request: EvaluationRequest, model: ModelParameters) throws -> EvaluationMetrics
}

extension LocalTrainer {
    public func prepare(schema: ModelSchema) throws -> DataSchemaSummary {
        let message = "this agent runs the benchmark trainer, which has no data; configure trainer.kind \"local\" with data.csv"
        throw LearnError(.schemaMismatch, message, shareable: message)
    }
    public func statistics() throws -> FeatureStatistics {
        throw LearnError(.schemaMismatch, "this agent's trainer has no data to take statistics of")
    }
    public func evaluate(request: EvaluationRequest, model: ModelParameters) throws -> EvaluationMetrics {
        throw RPCError(.unimplemented, "this agent's trainer has no holdout to evaluate on")
    }
}

public struct TrainingResult: Sendable {
    /// `local − global`, one value per parameter, in layout order.
    public var delta: [Float]
    /// Training examples used: the update's weight in the aggregate. Must be positive.
    public var exampleCount: UInt64
    public var loss: Double

    public init(delta: [Float], exampleCount: UInt64, loss: Double = 0) {
        self.delta = delta
        self.exampleCount = exampleCount
        self.loss = loss
    }
}

/// Thrown by a trainer that stopped because its task was cancelled.
public struct TrainingCancelled: Error {
    public init() {}
}
