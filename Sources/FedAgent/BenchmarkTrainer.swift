import FedCore
import FedWire
import Foundation

/// A deterministic stand-in for local training, for benchmarks and the transport's end-to-end
/// tests until real local training exists: it does not look at any data. Its update is
/// `delta[i] = step × (1 + (i mod 7)) × scale`, with `exampleCount` examples, after sleeping
/// `delaySeconds` (to play a straggler). Clearly not a model: never use it for a study.
public struct BenchmarkTrainer: LocalTrainer {
    public var step: Float
    public var exampleCount: UInt64
    public var delaySeconds: Double

    public init(step: Float = 0.001, exampleCount: UInt64 = 100, delaySeconds: Double = 0) {
        self.step = step
        self.exampleCount = exampleCount
        self.delaySeconds = delaySeconds
    }

    /// The delta this trainer produces for a model of `count` parameters (for tests' expected values).
    public static func delta(count: Int, step: Float) -> [Float] {
        (0..<count).map { step * Float(1 + $0 % 7) }
    }

    public func train(task: TrainTask, global: ModelParameters, isCancelled: () -> Bool) throws -> TrainingResult {
        let until = Deadline.after(seconds: delaySeconds)
        while !until.hasPassed {
            if isCancelled() { throw TrainingCancelled() }
            usleep(10_000)
        }
        if isCancelled() { throw TrainingCancelled() }
        return TrainingResult(delta: Self.delta(count: global.layout.parameterCount, step: step), exampleCount: exampleCount, loss: Double(step))
    }
}
