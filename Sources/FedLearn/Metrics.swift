import Foundation

/// How well a model does on a set of rows: mean loss, accuracy and ROC AUC.
public struct EvaluationMetrics: Sendable, Equatable {
    public var exampleCount: Int
    public var loss: Double
    public var accuracy: Double
    /// ROC AUC (binary), or the unweighted mean of one-vs-rest AUCs (multiclass); nil when only
    /// one class is present.
    public var rocAUC: Double?

    /// Evaluates `parameters` on `inputs` (standardized rows) against `labels`.
    public static func evaluate(schema: ModelSchema, parameters: [Float], inputs: [Float], labels: [Int32]) -> EvaluationMetrics {
        let featureCount = schema.features.count
        let batch = 256
        let network = Network(schema: schema, capacity: batch)
        let outputs = network.outputCount
        var scores = [[Double]](repeating: [], count: max(2, outputs))
        var loss = 0.0
        var correct = 0
        parameters.withUnsafeBufferPointer { p in
            inputs.withUnsafeBufferPointer { x in
                var start = 0
                while start < labels.count {
                    let count = min(batch, labels.count - start)
                    let logits = network.forward(parameters: p.baseAddress!, inputs: x.baseAddress! + start * featureCount, count: count)
                    for row in 0..<count {
                        let label = Int(labels[start + row])
                        let z = logits + row * outputs
                        if outputs == 1 {
                            let logit = Double(z[0])
                            loss += max(logit, 0) - logit * Double(label) + log1p(exp(-abs(logit)))
                            if (logit > 0 ? 1 : 0) == label { correct += 1 }
                            scores[1].append(Network.sigmoid(logit))
                        } else {
                            var largest = z[0], best = 0
                            for k in 1..<outputs where z[k] > largest { (largest, best) = (z[k], k) }
                            var total = 0.0
                            for k in 0..<outputs { total += exp(Double(z[k] - largest)) }
                            loss += Double(largest) + log(total) - Double(z[label])
                            if best == label { correct += 1 }
                            for k in 0..<outputs { scores[k].append(exp(Double(z[k] - largest)) / total) }
                        }
                    }
                    start += count
                }
            }
        }
        let n = labels.count
        let auc: Double?
        if outputs == 1 {
            auc = rocAUC(scores: scores[1], positives: labels.map { $0 == 1 })
        } else {
            let perClass = (0..<outputs).compactMap { k in rocAUC(scores: scores[k], positives: labels.map { Int($0) == k }) }
            auc = perClass.count == outputs ? perClass.reduce(0, +) / Double(outputs) : nil
        }
        return EvaluationMetrics(exampleCount: n, loss: n > 0 ? loss / Double(n) : 0, accuracy: n > 0 ? Double(correct) / Double(n) : 0, rocAUC: auc)
    }

    /// The area under the ROC curve: the Mann–Whitney U statistic over average ranks (ties
    /// share their rank), divided by positives × negatives. Nil when either class is absent.
    public static func rocAUC(scores: [Double], positives: [Bool]) -> Double? {
        let positiveCount = positives.filter { $0 }.count
        let negativeCount = positives.count - positiveCount
        guard positiveCount > 0, negativeCount > 0 else { return nil }
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var rankSum = 0.0
        var start = 0
        while start < order.count {
            var end = start
            while end + 1 < order.count && scores[order[end + 1]] == scores[order[start]] { end += 1 }
            let averageRank = Double(start + end + 2) / 2
            for index in order[start...end] where positives[index] { rankSum += averageRank }
            start = end + 1
        }
        let u = rankSum - Double(positiveCount) * Double(positiveCount + 1) / 2
        return u / (Double(positiveCount) * Double(negativeCount))
    }
}
