import FedCore
import Foundation

/// Hyper-parameters of one site's local training for one round (most arrive with the task).
public struct TrainingSettings: Sendable, Equatable {
    public var epochs = 1
    public var batchSize = 32
    public var learningRate = 0.1
    public var optimizer = LocalOptimizer.Kind.sgd
    public var momentum = 0.0
    /// L2 penalty `l2/2 · ‖W‖²` on the weights (not the biases).
    public var l2 = 0.0
    /// FedProx: `μ/2 · ‖w − w_global‖²` on every parameter; 0 for plain FedAvg.
    public var proximalMu = 0.0
    /// Seeds the shuffling of rows each epoch: the same seed gives the same update.
    public var seed: UInt64 = 0
    public init() {}
}

/// What local training returns.
public struct LocalTrainingResult: Sendable {
    /// The trained parameters (same layout as the global model).
    public var parameters: [Float]
    /// Mean loss over the rows of the last epoch (the data term alone, as trained on).
    public var loss: Double
    public var exampleCount: Int
}

/// Mini-batch training of a ``Network`` on standardized rows.
public enum LocalTraining {
    /// Trains from `global` for `settings.epochs` epochs over `inputs` (`labels.count × features`).
    ///
    /// Deterministic for a given seed. Checks `isCancelled` between batches and throws
    /// ``CancellationError`` once it turns true. Cost: ~3 multiply-adds per parameter per row
    /// per epoch; memory: the parameters four times over plus one batch of activations.
    public static func train(
        schema: ModelSchema, global: [Float], inputs: [Float], labels: [Int32], settings: TrainingSettings,
        isCancelled: () -> Bool = { false }
    ) throws -> LocalTrainingResult {
        let featureCount = schema.features.count
        precondition(inputs.count == labels.count * featureCount, "inputs and labels disagree")
        let rows = labels.count
        let batch = max(1, min(settings.batchSize, rows))
        let network = Network(schema: schema, capacity: batch)
        precondition(global.count == network.parameterCount, "the global model does not fit the schema")
        var parameters = global
        var gradient = [Float](repeating: 0, count: global.count)
        var optimizer = LocalOptimizer(kind: settings.optimizer, learningRate: settings.learningRate, momentum: settings.momentum,
                                       parameterCount: global.count)
        var batchInputs = [Float](repeating: 0, count: batch * featureCount)
        var batchLabels = [Int32](repeating: 0, count: batch)
        var order = Array(0..<rows)
        var random = SplitMix64(seed: settings.seed)
        let weightRanges = network.weightRanges
        let l2 = Float(settings.l2), mu = Float(settings.proximalMu)
        var epochLoss = 0.0
        for _ in 0..<max(1, settings.epochs) {
            order.shuffle(using: &random)
            epochLoss = 0
            var start = 0
            while start < rows {
                if isCancelled() { throw CancellationError() }
                let count = min(batch, rows - start)
                inputs.withUnsafeBufferPointer { source in
                    batchInputs.withUnsafeMutableBufferPointer { target in
                        for (slot, row) in order[start..<start + count].enumerated() {
                            (target.baseAddress! + slot * featureCount).update(from: source.baseAddress! + row * featureCount, count: featureCount)
                            batchLabels[slot] = labels[row]
                        }
                    }
                }
                parameters.withUnsafeMutableBufferPointer { p in
                    gradient.withUnsafeMutableBufferPointer { g in
                        epochLoss += network.lossAndGradient(
                            parameters: p.baseAddress!, inputs: batchInputs, labels: batchLabels, count: count, gradient: g.baseAddress!)
                        if l2 != 0 {
                            for range in weightRanges {
                                Kernels.axpy(l2, p.baseAddress! + range.lowerBound, g.baseAddress! + range.lowerBound, range.count)
                            }
                        }
                        if mu != 0 {
                            global.withUnsafeBufferPointer { w0 in
                                for i in 0..<p.count { g[i] += mu * (p[i] - w0[i]) }
                            }
                        }
                        optimizer.step(p.baseAddress!, gradient: g.baseAddress!, count: p.count)
                    }
                }
                start += count
            }
        }
        guard parameters.allSatisfy(\.isFinite) else {
            throw LearnError(.invalidModel, "local training diverged (a parameter became NaN or infinite); lower the learning rate")
        }
        return LocalTrainingResult(parameters: parameters, loss: epochLoss / Double(rows), exampleCount: rows)
    }
}
