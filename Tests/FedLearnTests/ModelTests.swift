import FedCore
import Foundation
import Testing
@testable import FedLearn

@Suite("Models, gradients, optimizers and metrics")
struct ModelTests {
    /// Central differences in Float64 around Float32 parameters: the analytic gradient must agree.
    func checkGradient(_ schema: ModelSchema, rows: Int, seed: UInt64) {
        let network = Network(schema: schema, capacity: rows)
        var random = SplitMix64(seed: seed)
        func uniform() -> Float { Float(random.next() >> 40) / Float(1 << 24) * 2 - 1 }
        var parameters = schema.initialParameters(seed: seed).values.map { $0 + 0.3 * uniform() }
        let inputs = (0..<rows * schema.features.count).map { _ in 2 * uniform() }
        let labels = (0..<rows).map { _ in Int32(random.next() % UInt64(schema.classes)) }
        var gradient = [Float](repeating: 0, count: parameters.count)
        func loss(_ p: [Float]) -> Double {
            var scratch = [Float](repeating: 0, count: p.count)
            return network.lossAndGradient(parameters: p, inputs: inputs, labels: labels, count: rows, gradient: &scratch) / Double(rows)
        }
        _ = network.lossAndGradient(parameters: parameters, inputs: inputs, labels: labels, count: rows, gradient: &gradient)
        var worst = 0.0
        for index in stride(from: 0, to: parameters.count, by: max(1, parameters.count / 60)) {
            let original = parameters[index]
            // Small enough that no ReLU changes side between the two evaluations.
            let h: Float = 1e-3
            parameters[index] = original + h
            let up = loss(parameters)
            parameters[index] = original - h
            let down = loss(parameters)
            parameters[index] = original
            let numeric = (up - down) / Double(2 * h)
            let error = abs(numeric - Double(gradient[index])) / max(1e-3, abs(numeric) + abs(Double(gradient[index])))
            worst = max(worst, error)
        }
        #expect(worst < 2e-2, "\(schema.kind) \(schema.layerSizes): worst relative gradient error \(worst)")
    }

    @Test("Gradients match central differences: logistic, softmax, MLP (binary and multiclass)")
    func gradients() {
        checkGradient(ModelSchema(kind: .logistic, features: ["a", "b", "c", "d", "e"], label: "y"), rows: 7, seed: 1)
        checkGradient(ModelSchema(kind: .softmax, features: ["a", "b", "c", "d"], label: "y", classes: 3), rows: 9, seed: 2)
        checkGradient(ModelSchema(kind: .mlp, features: (0..<11).map { "f\($0)" }, label: "y", hidden: [13, 9]), rows: 6, seed: 3)
        checkGradient(ModelSchema(kind: .mlp, features: (0..<10).map { "f\($0)" }, label: "y", classes: 4, hidden: [17]), rows: 5, seed: 4)
    }

    @Test("Tensors are named and shaped as PyTorch's nn.Linear: layer<i>.weight [out, in], layer<i>.bias [out]")
    func layout() {
        let schema = ModelSchema(kind: .mlp, features: (0..<30).map { "f\($0)" }, label: "y", hidden: [64, 64])
        #expect(schema.layout.tensors == [
            TensorSpec(name: "layer0.weight", shape: [64, 30]), TensorSpec(name: "layer0.bias", shape: [64]),
            TensorSpec(name: "layer1.weight", shape: [64, 64]), TensorSpec(name: "layer1.bias", shape: [64]),
            TensorSpec(name: "layer2.weight", shape: [1, 64]), TensorSpec(name: "layer2.bias", shape: [1]),
        ])
        #expect(ModelSchema(kind: .softmax, features: ["a"], label: "y", classes: 3).layout.tensors[0].shape == [3, 1])
        #expect(throws: LearnError.self) { try ModelSchema(kind: .logistic, features: ["a"], label: "y", classes: 3).validate() }
        #expect(throws: LearnError.self) { try ModelSchema(kind: .mlp, features: ["a"], label: "y").validate() }
        #expect(throws: LearnError.self) { try ModelSchema(kind: .logistic, features: ["a", "y"], label: "y").validate() }
    }

    @Test("Training is deterministic for a seed, and each optimizer, L2 and FedProx move the weights as they should")
    func training() throws {
        let schema = Fixtures.breastCancerSchema
        let data = try Dataset.load(csv: Fixtures.breastCancer("site4"), schema: schema)
        let inputs = data.standardized(with: data.statistics().standardization())
        let global = schema.initialParameters(seed: 1).values
        var settings = TrainingSettings()
        settings.seed = 11
        let first = try LocalTraining.train(schema: schema, global: global, inputs: inputs, labels: data.labels, settings: settings)
        let second = try LocalTraining.train(schema: schema, global: global, inputs: inputs, labels: data.labels, settings: settings)
        #expect(first.parameters == second.parameters && first.exampleCount == 257)
        settings.seed = 12
        #expect(try LocalTraining.train(schema: schema, global: global, inputs: inputs, labels: data.labels, settings: settings).parameters != first.parameters)
        func norm(_ v: [Float]) -> Double { v.reduce(0) { $0 + Double($1 * $1) }.squareRoot() }
        for kind in LocalOptimizer.Kind.allCases {
            settings.optimizer = kind
            settings.learningRate = kind == .adam ? 0.01 : 0.1
            settings.momentum = kind == .sgd ? 0.9 : 0
            settings.epochs = 5
            let result = try LocalTraining.train(schema: schema, global: global, inputs: inputs, labels: data.labels, settings: settings)
            let metrics = EvaluationMetrics.evaluate(schema: schema, parameters: result.parameters, inputs: inputs, labels: data.labels)
            #expect(metrics.accuracy > 0.9 && metrics.loss < 0.35, "\(kind): \(metrics)")
            var regularized = settings
            regularized.l2 = 1
            let shrunk = try LocalTraining.train(schema: schema, global: global, inputs: inputs, labels: data.labels, settings: regularized)
            #expect(norm(shrunk.parameters) < norm(result.parameters))
            var proximal = settings
            proximal.proximalMu = 10
            let anchored = try LocalTraining.train(schema: schema, global: global, inputs: inputs, labels: data.labels, settings: proximal)
            #expect(norm(zip(anchored.parameters, global).map { $0 - $1 }) < norm(zip(result.parameters, global).map { $0 - $1 }))
        }
    }

    @Test("ROC AUC: ties share their rank; undefined with one class")
    func auc() {
        #expect(EvaluationMetrics.rocAUC(scores: [0.1, 0.4, 0.35, 0.8], positives: [false, false, true, true]) == 0.75)
        #expect(EvaluationMetrics.rocAUC(scores: [0.5, 0.5], positives: [false, true]) == 0.5)
        #expect(EvaluationMetrics.rocAUC(scores: [0.2, 0.9], positives: [true, true]) == nil)
    }

    @Test("Centralized logistic regression on the breast-cancer training set reaches the reference's range on the test set")
    func centralized() throws {
        let schema = Fixtures.breastCancerSchema
        let sites = try (1...5).map { try Dataset.load(csv: Fixtures.breastCancer("site\($0)"), schema: schema) }
        var statistics = FeatureStatistics(featureCount: schema.features.count)
        for site in sites { statistics.merge(site.statistics()) }
        let standardization = statistics.standardization()
        let inputs = sites.flatMap { $0.standardized(with: standardization) }
        let labels = sites.flatMap(\.labels)
        var settings = TrainingSettings()
        settings.epochs = 30
        settings.l2 = 1.0 / 455
        let result = try LocalTraining.train(schema: schema, global: schema.initialParameters(seed: 0).values, inputs: inputs, labels: labels, settings: settings)
        let test = try Dataset.load(csv: Fixtures.breastCancer("test"), schema: schema)
        let metrics = EvaluationMetrics.evaluate(schema: schema, parameters: result.parameters, inputs: test.standardized(with: standardization), labels: test.labels)
        // Reference (scikit-learn, L2 C=1): accuracy 0.974, AUC 0.993.
        #expect(metrics.accuracy >= 0.95 && (metrics.rocAUC ?? 0) >= 0.99, "\(metrics)")
    }
}
