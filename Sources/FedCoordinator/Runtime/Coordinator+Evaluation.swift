import FedCore
import FedLearn
import FedProtocol
import FedWire
import Foundation

// Federated evaluation: after every `evaluation.every`-th commit, the round's participants
// evaluate the new global model on their holdouts; the coordinator logs the example-weighted
// means. Only aggregate metrics travel.

extension Coordinator {
    /// One site's answer.
    struct SiteEvaluation {
        var examples: UInt64
        var loss: Double
        var accuracy: Double
        var rocAUC: Double?
    }

    /// Evaluates the model committed for `round` on `agents` and appends an `evaluation` record.
    func evaluateGlobalModel(round: UInt64, agents: [String]) {
        guard !agents.isEmpty else { return }
        var results: [String: SiteEvaluation] = [:], failures: [String: String] = [:]
        for (agent, outcome) in fanOut(to: agents, { [self] in try evaluate(on: $0, round: round) }) {
            switch outcome {
            case .success(let result): results[agent] = result
            case .failure(let error): failures[agent] = "\(error)"
            }
        }
        var record = RoundLogEvent.Evaluation(
            round: round, modelVersion: round, reported: results.keys.sorted(), failed: failures.isEmpty ? nil : failures,
            examples: results.mapValues(\.examples))
        let total = results.values.reduce(0) { $0 + $1.examples }
        if total > 0 {
            record.evalExamples = total
            record.evalLoss = results.values.reduce(0) { $0 + $1.loss * Double($1.examples) } / Double(total)
            record.evalAccuracy = results.values.reduce(0) { $0 + $1.accuracy * Double($1.examples) } / Double(total)
            let withAUC = results.values.filter { $0.rocAUC != nil }
            let aucWeight = withAUC.reduce(0) { $0 + $1.examples }
            if aucWeight > 0 { record.evalAUC = withAUC.reduce(0) { $0 + $1.rocAUC! * Double($1.examples) } / Double(aucWeight) }
        }
        appendLog(.evaluation(record))
        logger.info("Global model evaluated", metadata: [
            "round": "\(round)", "eval.accuracy": "\(record.evalAccuracy.map { String(format: "%.4f", $0) } ?? "-")",
            "eval.auc": "\(record.evalAUC.map { String(format: "%.4f", $0) } ?? "-")", "eval.examples": "\(total)",
            "eval.failed": "\(failures.count)",
        ])
    }

    /// Streams the global model to one agent with an EvaluationRequest and reads its metrics.
    private func evaluate(on agent: String, round: UInt64) throws -> SiteEvaluation {
        guard let connection = registry.connection(agent) else {
            throw WireError(.connectionClosed, "the agent is not connected")
        }
        let call = try connection.makeCall(method: Methods.evaluate, timeout: configuration.evaluation.timeoutSeconds)
        defer { call.finish() }
        var request = EvaluationRequest()
        request.roundID = round
        request.modelVersion = round
        request.modelSHA256 = stateLock.withLock { globalSHA256 }
        request.tensorCount = UInt32(layout.tensors.count)
        if let standardization = stateLock.withLock({ standardization }) {
            request.featureMeans = standardization.means
            request.featureScales = standardization.scales
        }
        try call.send(.evaluationRequest(request))
        _ = try streamGlobalModel(to: AbortableSink(call: call) { false })
        try call.finishSending()
        guard case .evaluationResult(let result)? = try call.receive() else {
            throw RPCError(.invalidArgument, "Evaluate did not answer an EvaluationResult")
        }
        try call.expectEnd()
        guard result.exampleCount > 0, result.exampleCount <= configuration.update.maxExampleCount, result.loss.isFinite, result.loss >= 0, (0...1).contains(result.accuracy),
              result.rocAUC.map({ (0...1).contains($0) }) ?? true
        else {
            throw RPCError(.invalidArgument, "the evaluation result is out of range (examples \(result.exampleCount), loss \(result.loss), "
                + "accuracy \(result.accuracy))")
        }
        return SiteEvaluation(examples: result.exampleCount, loss: result.loss, accuracy: result.accuracy, rocAUC: result.rocAUC)
    }
}
