import FedCore
import FedWire

/// What a site trains with. Gets the global model and the task; returns the update (the
/// `local − global` delta, in the model's layout) and how many examples it learned from.
///
/// Called on a dedicated thread; may take as long as it needs (heartbeats keep flowing).
/// Must return promptly with ``TrainingCancelled`` once `isCancelled()` turns true.
public protocol LocalTrainer: Sendable {
    func train(task: TrainTask, global: ModelParameters, isCancelled: () -> Bool) throws -> TrainingResult
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
