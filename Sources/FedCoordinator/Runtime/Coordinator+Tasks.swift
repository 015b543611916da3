import FedCore
import FedHashing
import FedProtocol
import FedSecAgg
import FedWire
import Foundation

// Sending a round's task: the task itself, stage 0 of a secure round ahead of the model, and the
// model streamed from memory (its CRC-32C computed once per round) with bounded concurrency.

extension Coordinator {
    /// Sends the task and the global model (streamed from memory, its CRC-32C computed once per round).
    func sendTask(_ agent: String, _ attempt: RoundStateMachine.Attempt, secure: SecureRound?) {
        let task = makeTask(for: agent, attempt, secure: secure)
        if let secure {
            // Stage 0 before any model byte, so that the key stages overlap the broadcast.
            let advertised = secureSetup(agent, task: task, round: secure)
            drive { [self] in $0.secureAnswered(agent, stage: .advertisingKeys, roundID: attempt.roundID, attempt: attempt.attempt, now: now) }
            // Without keys the agent cannot take part; the stage's close drops it from the round.
            guard advertised else { return }
        }
        broadcastSlots.wait()
        defer { broadcastSlots.signal() }
        do {
            let call = try registry.connected(agent).makeCall(method: Methods.train, timeout: max(1, attempt.deadline - now))
            defer { call.finish() }
            try call.send(.trainTask(task))
            let sink = AbortableSink(call: call) { [self] in stateLock.withLock { broadcastAborts.contains(agent) } }
            let sent = try streamGlobalModel(to: sink)
            try call.finishSending()
            try call.expectEnd()
            CrashDrill.reach(.tasksSent, round: attempt.roundID)
            drive { [self] _ in
                stats.bytesSent[agent] = sent
                return []
            }
        } catch {
            logger.warning("Task not delivered", metadata: ["agent": "\(agent)", "round": "\(attempt.roundID)", "error": "\(error)"])
            drive { [self] in $0.taskFailed(agent, roundID: attempt.roundID, reason: "\(error)", now: now) }
        }
    }

    /// Streams the global model as it is now, tensor by tensor; returns the bytes sent.
    ///
    /// Sends from a snapshot taken under the model's read lock, not under the lock: a peer that
    /// stops reading stalls only its own send (until `limits.send_stall_seconds`), never the
    /// commit that needs the write lock. The snapshot shares the model's storage; a commit that
    /// steps while a send still holds it writes into a copy. It is released on return, so
    /// hold no reference to it past the last chunk.
    func streamGlobalModel(to sink: any MessageSink) throws -> UInt64 {
        let (snapshot, crcs) = modelLock.withReadLock { (model.parameters, model.tensorCRCs) }
        var sent: UInt64 = 0
        try snapshot.values.withUnsafeBufferPointer { values in
            for (index, spec) in snapshot.layout.tensors.enumerated() {
                try TensorStream.send(
                    name: spec.name, shape: spec.shape, floats: UnsafeBufferPointer(rebasing: values[snapshot.layout.range(of: index)]),
                    to: sink, knownCRC32C: crcs[index])
                sent += UInt64(spec.count * 4)
            }
        }
        return sent
    }

    /// Stage 0 of a secure round: the task goes ahead of the model; the agent answers its keys.
    func secureSetup(_ agent: String, task: TrainTask, round: SecureRound) -> Bool {
        do {
            let connection = try registry.connected(agent)
            let reply = try connection.unary(Methods.secureSetup, .trainTask(task), timeout: configuration.secureAggregation.keysTimeoutSeconds)
            guard case .advertiseKeys(let advertised) = reply, advertised.roundID == round.config.roundID else {
                throw RPCError(.invalidArgument, "SecureSetup answered \(reply.name), not this round's keys")
            }
            try round.withSession { try $0.receiveKeys(advertised.keys, from: agent) }
            stateLock.withLock { lastSetupRound = max(lastSetupRound, task.roundID) }
            stateChanged.notify()
            return true
        } catch {
            logger.warning("No keys from an agent", metadata: ["agent": "\(agent)", "round": "\(task.roundID)", "error": "\(error)"])
            // Out of the attempt now, with the agent's own reason (a policy refusal, say), not at the key deadline.
            let id = round.id
            drive { [self] in $0.secureDropped([agent], reason: "\(error)", roundID: id.round, attempt: id.attempt, now: now) }
            return false
        }
    }

    /// The task an agent gets: round, model hash, hyper-parameters, standardization, and the
    /// secure-aggregation parameters with its index when the round runs under secure aggregation.
    func makeTask(for agent: String, _ attempt: RoundStateMachine.Attempt, secure: SecureRound?) -> TrainTask {
        modelLock.withReadLock {
            var task = TrainTask()
            task.roundID = attempt.roundID
            task.modelVersion = attempt.modelVersion
            // A secure round binds the model's digest (computed before its broadcast); a
            // plaintext task goes without, its tensors checked by their CRC-32C.
            if secure != nil { task.modelSHA256 = stateLock.withLock { globalSHA256 } }
            task.localEpochs = configuration.task.localEpochs
            task.batchSize = configuration.task.batchSize
            task.learningRate = configuration.task.learningRate
            task.proximalMu = configuration.task.proximalMu
            task.deadlineUnixMs = UInt64((Date().timeIntervalSince1970 + attempt.deadline - now) * 1000)
            task.seed = attempt.seed
            (task.logSeq, task.logHeadSHA256) = logLock.withLock { (roundLog.count, roundLog.lastHashBytes) }
            task.tensorCount = UInt32(layout.tensors.count)
            task.localOptimizer = configuration.task.localOptimizer.rawValue
            task.momentum = configuration.task.momentum
            task.l2 = configuration.task.l2
            if let standardization = stateLock.withLock({ standardization }) {
                task.featureMeans = standardization.means
                task.featureScales = standardization.scales
            }
            if let secure, let index = secure.withSession({ $0.index(of: agent) }) {
                task.secureAggregation = SecureAggregationTask(
                    config: secure.config, index: index, projectedEpsilon: secure.projectedEpsilon,
                    delta: secure.projectedEpsilon == nil ? nil : configuration.secureAggregation.dp.delta)
            }
            return task
        }
    }
}

/// Stops a broadcast between chunks once its agent's task has been cancelled.
struct AbortableSink: MessageSink {
    let call: ClientCall
    let isAborted: () -> Bool
    func send(_ message: Message) throws {
        if isAborted() { throw RPCError(.cancelled, "the round closed while the model was being sent") }
        try call.send(message, endOfStream: false)
    }
}
