import FedCore
import FedHashing
import FedProtocol
import FedWire
import Foundation
import Logging

// Updates: an agent's announcement, the pull of its spooled update, and the verdict its
// AnnounceUpdate call waits for.

extension Coordinator {
    /// AnnounceUpdate: the verdict comes back only once the update has been pulled and either
    /// added to the aggregate or refused, so that the agent learns what became of its work.
    func announce(_ call: ServerCall) throws {
        let agent = call.peer.commonName
        guard case .updateReady(let ready) = try call.receiveOnly() else {
            throw RPCError(.invalidArgument, "\(Methods.announceUpdate) takes an UpdateReady message")
        }
        if !ready.failure.isEmpty {
            let reason = "the site's training failed: \(SiteText.clean(ready.failure))"
            refuseUpdate(agent: agent, round: ready.roundID, reason: reason)
            drive { [self] in $0.trainingFailed(agent, roundID: ready.roundID, reason: reason, now: now) }
            try call.send(.empty)
            return
        }
        if let problem = Self.problem(with: ready, bounds: configuration.update) {
            refuseUpdate(agent: agent, round: ready.roundID, reason: problem)
            drive { [self] in $0.trainingFailed(agent, roundID: ready.roundID, reason: problem, now: now) }
            throw RPCError(.invalidArgument, problem)
        }
        let (verdict, waiter): (RoundStateMachine.Verdict, AnnouncementWaiter?) = driver.perform { [self] engine in
            let (verdict, actions) = engine.updateAnnounced(
                agent, roundID: ready.roundID, modelVersion: ready.modelVersion, examples: ready.exampleCount, now: now)
            var waiter: AnnouncementWaiter?
            if verdict == .accept, let attempt = engine.current {
                let accepted = AnnouncementWaiter(round: attempt.roundID, attempt: attempt.attempt)
                waiter = accepted
                stateLock.withLock { waiters[agent] = accepted }
                stats.trainSeconds[agent] = ready.trainSeconds
                stats.trainLoss[agent] = (ready.trainLoss, ready.exampleCount)
            }
            return ((verdict, waiter), actions)
        }
        guard let waiter else {
            let error = if case .refuse(let error) = verdict { error } else { EngineError(.stale, "round \(ready.roundID) is not running") }
            refuseUpdate(agent: agent, round: ready.roundID, reason: error.message)
            throw RPCError(status: Self.status(for: error))
        }
        let status = waiter.wait(until: call.deadline)
        if !status.isOK { throw RPCError(status: status) }
        try call.send(.empty)
    }

    /// What is wrong with the figures an UpdateReady claims, if anything: each is checked here,
    /// where it enters, before the engine, the round record or the mean can use it.
    static func problem(with ready: UpdateReady, bounds: UpdateBounds) -> String? {
        if ready.exampleCount > bounds.maxExampleCount {
            return "example_count \(ready.exampleCount) is above update.max_example_count (\(bounds.maxExampleCount)); "
                + "a site's weight in the mean is its example count, so the coordinator refuses counts it cannot believe"
        }
        guard ready.trainSeconds.isFinite, ready.trainSeconds >= 0, ready.trainSeconds <= 1e7 else {
            return "train_seconds \(ready.trainSeconds) is not a duration (it must be finite, between 0 and 1e7)"
        }
        guard ready.trainLoss.isFinite else { return "train_loss \(ready.trainLoss) is not finite" }
        return nil
    }

    static func status(for error: EngineError) -> RPCStatus {
        switch error.code {
        case .late: RPCStatus(.deadlineExceeded, error.message)
        case .notSelected: RPCStatus(.permissionDenied, error.message)
        case .duplicate: RPCStatus(.alreadyExists, error.message)
        case .stale: RPCStatus(.failedPrecondition, error.message)
        default: RPCStatus(.invalidArgument, error.message)
        }
    }

    func refuseUpdate(agent: String, round: UInt64, reason: String) {
        logger.warning("Update refused", metadata: ["agent": "\(agent)", "round": "\(round)", "reason": "\(reason)"])
        appendLog(.updateRefused(.init(agent: agent, round: round, reason: reason)))
    }

    /// Answers `agent`'s AnnounceUpdate call if it is waiting on this round and attempt (a retry
    /// keeps the round id, and a stale pull or cancel must not answer the retry's call). On the
    /// driver's thread.
    func resolveWaiter(_ agent: String, round: UInt64, attempt: Int, _ status: RPCStatus) {
        let waiter: AnnouncementWaiter? = stateLock.withLock {
            guard let waiter = waiters[agent], waiter.round == round, waiter.attempt == attempt else { return nil }
            waiters.removeValue(forKey: agent)
            return waiter
        }
        waiter?.resolve(status)
    }

    /// Pulls one announced update into a spool file, checking names, shapes, sizes, finiteness
    /// and hashes; then asks the engine whether it still counts, and adds it if so.
    func pull(_ agent: String, roundID: UInt64, attempt: Int, secure: SecureRound?) {
        let started = Deadline.now
        let (version, deadline) = driver.read { [self] in ($0.modelVersion, $0.current?.collectUntil ?? now) }
        do {
            guard let connection = registry.connection(agent) else {
                throw PullFailure(reason: "the agent is not connected", refused: false)
            }
            let spool = try spools.take()
            var handedOver = false
            defer { if !handedOver { spools.give(spool) } }
            let call = try connection.makeCall(method: Methods.pullUpdate, timeout: max(1, deadline - now))
            defer { call.finish() }
            try call.send(.fetchUpdate(FetchUpdate(roundID: roundID, modelVersion: version)), endOfStream: true)
            guard case .updateReady(let header)? = try call.receive() else {
                throw PullFailure(reason: "the update did not start with its UpdateReady header", refused: true)
            }
            guard header.roundID == roundID, header.modelVersion == version else {
                throw PullFailure(reason: "the update is for round \(header.roundID) / model \(header.modelVersion), not \(roundID) / \(version)", refused: true)
            }
            // Its weight in the mean is the count the engine accepted at the announcement, not a new one.
            let announced = driver.read { $0.announcedExamples(of: agent) }
            guard header.exampleCount == announced else {
                throw PullFailure(reason: "the update claims \(header.exampleCount) examples; \(announced ?? 0) were announced", refused: true)
            }
            let aggregator: any RoundAggregator = secure ?? plaintext
            if let secure {
                try receiveMaskedInput(from: call, into: spool, length: Int(secure.config.vectorLength))
            } else {
                try receivePlaintextUpdate(from: call, into: spool)
            }
            try call.expectEnd()
            let expectedBytes = secure.map { Int($0.config.vectorLength) * 4 } ?? layout.byteCount
            guard spool.bytesWritten == expectedBytes else {
                throw PullFailure(reason: "the update holds \(spool.bytesWritten) bytes; \(expectedBytes) were expected", refused: true)
            }
            let (bytes, seconds) = (UInt64(spool.bytesWritten), -started.remainingSeconds)
            drive { [self] _ in
                stats.bytesReceived[agent] = bytes
                stats.transferSeconds[agent] = seconds
                return []
            }
            // The engine decides; an accepted update is counted in `pendingAdds` before the driver
            // executes the actions of that decision, and every reader or reset of the sum (the
            // close, a failed or new attempt) waits for it, so that none can slip in between the
            // decision and the add. The next pulls start while this update is added.
            let (verdict, closes): (RoundStateMachine.Verdict, Bool) = driver.perform { [self] engine in
                let (verdict, actions) = engine.updateReceived(agent, roundID: roundID, attempt: attempt, now: now)
                if verdict == .accept { pendingAdds.enter() }
                return ((verdict, actions.contains { if case .aggregate = $0 { true } else { false } }), actions)
            }
            if verdict == .accept { CrashDrill.reach(.updatePulled, round: roundID) }
            if verdict == .accept {
                defer { pendingAdds.leave() }
                handedOver = true
                do {
                    try accumulatorLock.withLock {
                        try aggregator.add(AcceptedUpdate(agent: agent, spool: spool, weight: header.exampleCount), closesRound: closes)
                    }
                } catch {
                    logger.error("Cannot read a spooled update back", metadata: ["error": "\(error)"])
                }
            }
            let status = switch verdict {
            case .accept: RPCStatus.ok
            case .refuse(let error): Self.status(for: error)
            }
            drive { [self] _ in
                resolveWaiter(agent, round: roundID, attempt: attempt, status)
                return []
            }
        } catch {
            let failure: PullFailure
            switch error {
            case let error as PullFailure: failure = error
            case let error as RPCError where [.invalidArgument, .dataLoss, .resourceExhausted].contains(error.code):
                failure = PullFailure(reason: error.message, refused: true)
            case let error as RPCError: failure = PullFailure(reason: "the upload broke: \(error.message)", refused: false)
            default: failure = PullFailure(reason: "the upload broke: \(error)", refused: false)
            }
            if failure.refused { refuseUpdate(agent: agent, round: roundID, reason: failure.reason) }
            let status = RPCStatus(failure.refused ? .invalidArgument : .aborted, failure.reason)
            drive { [self] engine in
                resolveWaiter(agent, round: roundID, attempt: attempt, status)
                return engine.pullFailed(agent, roundID: roundID, attempt: attempt, reason: failure.reason, now: now)
            }
        }
    }

    /// Reads a plaintext update tensor by tensor into `spool`, each chunk checked before it is
    /// spooled: finiteness in the CRC's pass, then `update.max_abs` (and, when set,
    /// `update.max_l2_norm` over the whole update) while the chunk is in cache.
    private func receivePlaintextUpdate(from call: ClientCall, into spool: UpdateSpool) throws {
        let bounds = configuration.update
        let maxAbs = Float(bounds.maxAbs)
        var sumOfSquares = 0.0
        for (index, spec) in layout.tensors.enumerated() {
            guard case .tensorHeader(let tensor)? = try call.receive() else {
                throw PullFailure(reason: "the update has \(index) tensor(s); the model has \(layout.tensors.count)", refused: true)
            }
            guard tensor.name == spec.name, tensor.shape == spec.shape.map({ UInt64($0) }) else {
                throw PullFailure(reason: "tensor \(index) is '\(tensor.name)' \(tensor.shape); the model expects '\(spec.name)' \(spec.shape)", refused: true)
            }
            _ = try TensorStream.receive(from: call, header: tensor, maxTotalBytes: UInt64(spec.count * 4), nonFinite: { element in
                throw PullFailure(reason: "tensor '\(spec.name)' holds a non-finite value (NaN or infinity) at element \(element)", refused: true)
            }) { offset, bytes in
                if let beyond = FloatBounds.firstBeyond(bytes, bound: maxAbs) {
                    throw PullFailure(reason: "tensor '\(spec.name)' holds a value beyond update.max_abs (\(bounds.maxAbs)) at element "
                        + "\(offset / 4 + UInt64(beyond))", refused: true)
                }
                if bounds.maxL2Norm > 0 {
                    sumOfSquares += FloatBounds.sumOfSquares(bytes)
                    if sumOfSquares > bounds.maxL2Norm * bounds.maxL2Norm {
                        throw PullFailure(reason: "the update's L2 norm exceeds update.max_l2_norm (\(bounds.maxL2Norm))", refused: true)
                    }
                }
                try spool.append(bytes)
            }
        }
    }

    /// Reads a masked input: one UINT32 tensor "masked_input" of `length` elements (no finiteness
    /// check: masked values are uniform in Z_2^32).
    private func receiveMaskedInput(from call: ClientCall, into spool: UpdateSpool, length: Int) throws {
        guard case .tensorHeader(let tensor)? = try call.receive() else {
            throw PullFailure(reason: "the masked input did not start with its tensor header", refused: true)
        }
        guard tensor.name == "masked_input", tensor.dtype == .uint32, tensor.shape == [UInt64(length)] else {
            throw PullFailure(reason: "the masked input is '\(tensor.name)' \(tensor.shape); expected 'masked_input' [\(length)] of UINT32", refused: true)
        }
        _ = try TensorStream.receive(from: call, header: tensor, maxTotalBytes: UInt64(length * 4)) { _, bytes in try spool.append(bytes) }
    }

    struct PullFailure: Error {
        var reason: String
        var refused: Bool
    }
}

/// Where an AnnounceUpdate call waits for its update's fate.
final class AnnouncementWaiter: @unchecked Sendable {
    // @unchecked: guarded by `condition`.
    let round: UInt64
    let attempt: Int
    private let condition = NSCondition()
    private var status: RPCStatus?

    init(round: UInt64, attempt: Int) {
        self.round = round
        self.attempt = attempt
    }

    func resolve(_ status: RPCStatus) {
        condition.lock()
        if self.status == nil { self.status = status }
        condition.broadcast()
        condition.unlock()
    }

    func wait(until deadline: Deadline) -> RPCStatus {
        condition.lock()
        defer { condition.unlock() }
        while status == nil {
            if deadline.isDistantFuture {
                condition.wait()
            } else if !condition.wait(until: Date(timeIntervalSinceNow: max(0, deadline.remainingSeconds))) {
                return RPCStatus(.deadlineExceeded, "the update was not collected before the call's deadline")
            }
        }
        return status!
    }
}
