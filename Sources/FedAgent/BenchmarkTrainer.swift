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
    /// Extra delay, uniform in [0, jitter), drawn per task from the task's seed: a straggler in
    /// some rounds and not others.
    public var delayJitterSeconds: Double

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

    public func train(task: TrainTask, global: ModelParameters, isCancelled: () -> Bool) throws -> TrainingResult {
        var jitter = SplitMix64(seed: task.seed ^ UInt64(task.roundID) &* 0x9E37_79B9)
        let extra = delayJitterSeconds > 0 ? Double(jitter.next() >> 11) / Double(1 << 53) * delayJitterSeconds : 0
        let until = Deadline.after(seconds: delaySeconds + extra)
        while !until.hasPassed {
            if isCancelled() { throw TrainingCancelled() }
            usleep(10_000)
        }
        if isCancelled() { throw TrainingCancelled() }
        return TrainingResult(delta: Self.delta(count: global.layout.parameterCount, step: step), exampleCount: exampleCount, loss: Double(step))
    }
}

/// SplitMix64, for the benchmark trainer's reproducible delays.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
