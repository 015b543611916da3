import FedCore
import FedProtocol
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
    /// Extra delay, uniform in [0, jitter), drawn per task from the task's seed: a straggler in
    /// some rounds and not others.
    public var delayJitterSeconds: Double
    private let cache = DeltaCache()

    public init(step: Float = 0.001, exampleCount: UInt64 = 100, delaySeconds: Double = 0, delayJitterSeconds: Double = 0) {
        self.step = step
        self.exampleCount = exampleCount
        self.delaySeconds = delaySeconds
        self.delayJitterSeconds = delayJitterSeconds
    }

    /// The delta this trainer produces for a model of `count` parameters (for tests' expected values).
    public static func delta(count: Int, step: Float) -> [Float] {
        (0..<count).map { step * Float(1 + $0 % 7) }
    }

    public func train(task: TrainTask, global: ModelParameters, cancellation: Cancellation) throws -> TrainingResult {
        try SlowedTrainer.wait(for: task, delaySeconds: delaySeconds, jitterSeconds: delayJitterSeconds, cancellation: cancellation)
        // The delta never changes for a given size: computed once, so that benchmarks measure
        // the federation rather than this stand-in.
        let delta = cache.delta(count: global.layout.parameterCount) { Self.delta(count: $0, step: step) }
        return TrainingResult(delta: delta, exampleCount: exampleCount, loss: Double(step))
    }
}

/// The benchmark trainer's last delta, shared by its tasks.
final class DeltaCache: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var cached: [Float] = []
    func delta(count: Int, make: (Int) -> [Float]) -> [Float] {
        lock.withLock {
            if cached.count != count { cached = make(count) }
            return cached
        }
    }
}
