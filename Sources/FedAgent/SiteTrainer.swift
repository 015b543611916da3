import FedCore
import FedLearn
import FedProtocol
import FedWire
import Foundation

/// Local training on the site's own CSV: the data is checked against the federation's schema,
/// split into training rows and a holdout, standardized with the federation's frozen means and
/// scales, and trained with ``LocalTraining``. Nothing but aggregates leaves it.
public final class SiteTrainer: LocalTrainer, @unchecked Sendable {
    // @unchecked: `prepared` and `standardized` are guarded by `lock`.
    public struct DataFiles: Sendable {
        /// The site's data (training rows, and the holdout when no separate file is named).
        public var csv: String
        /// Fraction of `csv` held out for evaluation, when `holdoutCSV` is nil.
        public var holdoutFraction: Double
        /// A separate evaluation file, all of it held out.
        public var holdoutCSV: String?
        /// Seeds the holdout split.
        public var seed: UInt64
        public init(csv: String, holdoutFraction: Double = 0.2, holdoutCSV: String? = nil, seed: UInt64 = 1) {
            self.csv = csv
            self.holdoutFraction = holdoutFraction
            self.holdoutCSV = holdoutCSV
            self.seed = seed
        }
    }

    struct Prepared {
        var schema: ModelSchema
        var train: Dataset
        var holdout: Dataset?
        /// Counts the data checks, so that rows standardized from older data are never reused.
        var generation: Int
    }

    public let files: DataFiles
    private let lock = NSLock()
    private var prepared: Prepared?
    /// The training and holdout rows standardized last, reused while the standardization (frozen
    /// before round 1) stays the same.
    private var standardized: (generation: Int, with: Standardization?, train: [Float], holdout: [Float]?)?

    public init(files: DataFiles) {
        self.files = files
    }

    public func prepare(schema: ModelSchema) throws -> DataSchemaSummary {
        let all = try Dataset.load(csv: files.csv, schema: schema)
        var train = all, holdout: Dataset?
        if let path = files.holdoutCSV {
            holdout = try Dataset.load(csv: path, schema: schema)
        } else if files.holdoutFraction > 0 && all.rowCount > 1 {
            (train, holdout) = all.split(holdoutFraction: files.holdoutFraction, seed: files.seed)
        }
        lock.withLock {
            prepared = Prepared(schema: schema, train: train, holdout: holdout, generation: (prepared?.generation ?? 0) + 1)
            standardized = nil
        }
        return DataSchemaSummary(featureColumns: schema.features, labelColumn: schema.label, rowCount: UInt64(train.rowCount))
    }

    private func current() throws -> Prepared {
        guard let prepared = lock.withLock({ prepared }) else {
            throw LearnError(.schemaMismatch, "the local data has not been checked against the federation's schema yet")
        }
        return prepared
    }

    /// The data check's summary, for `fedagent check`.
    public func describe() throws -> String {
        let p = try current()
        return DataSummary(dataset: p.train, holdout: p.holdout, schema: p.schema, path: files.csv).text
    }

    public func statistics() throws -> FeatureStatistics {
        try current().train.statistics()
    }

    static func standardization(means: [Double], scales: [Double], schema: ModelSchema) throws -> Standardization? {
        if means.isEmpty && scales.isEmpty {
            guard !schema.standardize else {
                throw LearnError(.invalidModel, "the model schema asks for standardization but the coordinator sent none")
            }
            return nil
        }
        let standardization = Standardization(means: means, scales: scales)
        try standardization.validate(featureCount: schema.features.count)
        return standardization
    }

    public func train(task: TrainTask, global: ModelParameters, cancellation: Cancellation) throws -> TrainingResult {
        let p = try current()
        guard global.layout == p.schema.layout else {
            throw LearnError(.invalidModel, "the global model's tensors do not match the model schema")
        }
        let standardization = try Self.standardization(means: task.featureMeans, scales: task.featureScales, schema: p.schema)
        let inputs = rows(p, standardization).train
        var settings = TrainingSettings()
        settings.epochs = Int(task.localEpochs)
        settings.batchSize = Int(task.batchSize)
        settings.learningRate = task.learningRate
        guard let optimizer = LocalOptimizer.Kind(rawValue: task.localOptimizer.isEmpty ? "sgd" : task.localOptimizer) else {
            throw LearnError(.invalidModel, "the task asks for the local optimizer '\(task.localOptimizer)'; this agent knows sgd and adam")
        }
        settings.optimizer = optimizer
        settings.momentum = task.momentum
        settings.l2 = task.l2
        settings.proximalMu = task.proximalMu
        settings.seed = task.seed
        let result: LocalTrainingResult
        do {
            result = try LocalTraining.train(
                schema: p.schema, global: global.values, inputs: inputs, labels: p.train.labels, settings: settings, isCancelled: { cancellation.isCancelled })
        } catch is CancellationError {
            throw TrainingCancelled()
        }
        let delta = zip(result.parameters, global.values).map { $0 - $1 }
        return TrainingResult(delta: delta, exampleCount: UInt64(result.exampleCount), loss: result.loss)
    }

    public func evaluate(request: EvaluationRequest, model: ModelParameters) throws -> EvaluationMetrics {
        let p = try current()
        guard let holdout = p.holdout else {
            throw RPCError(.failedPrecondition, "this site has no holdout: set data.holdout_fraction above 0 or data.holdout_csv")
        }
        guard model.layout == p.schema.layout else { throw LearnError(.invalidModel, "the model's tensors do not match the model schema") }
        let standardization = try Self.standardization(means: request.featureMeans, scales: request.featureScales, schema: p.schema)
        return EvaluationMetrics.evaluate(
            schema: p.schema, parameters: model.values, inputs: rows(p, standardization).holdout ?? [], labels: holdout.labels)
    }

    /// The standardized rows, computed once per standardization.
    private func rows(_ p: Prepared, _ standardization: Standardization?) -> (train: [Float], holdout: [Float]?) {
        lock.withLock {
            if let standardized, standardized.generation == p.generation, standardized.with == standardization {
                return (standardized.train, standardized.holdout)
            }
            let rows = (train: p.train.standardized(with: standardization), holdout: p.holdout?.standardized(with: standardization))
            standardized = (p.generation, standardization, rows.train, rows.holdout)
            return rows
        }
    }
}
