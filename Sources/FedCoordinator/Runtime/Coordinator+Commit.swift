import FedCore
import FedWire
import Foundation
import Logging

// The commit pipeline: the close of the round's aggregator into the model, under the model's
// write lock; then the checkpoint and the round record, written by the commit writer while the
// next round starts.

extension Coordinator {
    /// Mean → server optimizer → checkpoint → round record (the commit point) → next round.
    ///
    /// The checkpoint and the record are written by ``commitWriter`` while the next round starts;
    /// the previous round's writing has finished before this round's mean is applied.
    /// `secure` is the attempt's secure round, if it was secure; `stats` its figures as the
    /// driver had them when the engine asked for the commit.
    func commit(_ outcome: RoundStateMachine.Outcome, secure: SecureRound?, stats: RoundStats) {
        let round = outcome.attempt.roundID
        commitWriter.waitUntilIdle()
        pendingAdds.wait()
        guard !isStopped else { return }
        do {
            // A secure attempt's stage 3 has collected its shares before the engine asked for
            // this commit: nothing here waits on the network.
            let (combination, committed): (RoundCombination, GlobalModel) = try modelLock.withWriteLock {
                let combination = try accumulatorLock.withLock { try (secure ?? plaintext).close(into: &model) }
                guard combination.fingerprint.allFinite else {
                    try restoreCommittedModel(version: outcome.attempt.modelVersion)
                    throw ModelError("the server step gave a model that is not finite (NaN or infinity); the model stays at version "
                        + "\(outcome.attempt.modelVersion); lower optimizer.learning_rate or update.max_abs")
                }
                // A plaintext close leaves the digest to the commit writer.
                stateLock.withLock { globalSHA256 = combination.fingerprint.digest ?? [] }
                model.adopt(combination.fingerprint)
                // Shared storage, not copies: nothing writes them until the commit writer is idle again.
                return (combination, model)
            }
            var record = roundRecord(outcome, status: "committed", stats: stats)
            if let unmasked = combination.unmasked {
                record.secureAggregation = true
                record.survivors = unmasked.survivors
                record.recoveredDropouts = unmasked.recovered
                record.totalWeight = UInt64(unmasked.totalWeight)
                if !unmasked.recovered.isEmpty { record.recoverySeconds = unmasked.recoverySeconds }
                let dp = configuration.secureAggregation.dp
                if dp.enabled, let secure {
                    let epsilon: Double = stateLock.withLock {
                        accountant.compose(q: secure.samplingRate, noiseMultiplier: dp.noiseMultiplier)
                        return accountant.epsilon(delta: dp.delta).epsilon
                    }
                    record.dpEpsilon = epsilon
                    record.dpDelta = dp.delta
                    record.dpNoiseMultiplier = dp.noiseMultiplier
                    record.dpSamplingRate = secure.samplingRate
                }
                // The per-site weights travelled masked; only their total is known.
                record.examples = nil
            }
            if let combined = combination.combined {
                record.strategy = configuration.strategy.rawValue
                record.combined = combined
            }
            record.modelVersion = round
            let metadata = checkpointMetadata(round: round).merging(
                [CheckpointStore.logRecordsKey: "\(logLock.withLock { roundLog.count })"]) { $1 }
            let accepted = outcome.accepted.count, late = outcome.late.count, failed = outcome.failed.count
            commitWriter.submit { [self, record] in
                var record = record
                let digest = combination.fingerprint.digest ?? CheckpointStore.modelDigest(committed.parameters)
                stateLock.withLock { globalSHA256 = digest }
                record.modelSHA256 = digest.hexString
                do {
                    try store.writeModel(committed.parameters, version: round, metadata: metadata) { CrashDrill.reach(.checkpointWrite, round: round) }
                    try store.writeOptimizer(committed.optimizer, layout: committed.layout, version: round)
                    CrashDrill.reach(.beforeRecord, round: round)
                    if CrashDrill.waitsForNextSetup(round: round) {
                        let deadline = Deadline.after(seconds: 10)
                        stateChanged.wait(until: deadline) { stateLock.withLock { lastSetupRound } > round }
                        CrashDrill.reach(.nextSetup, round: round)
                    }
                    _ = try logLock.withLock { try roundLog.append(RoundLogRecord(.round(record))) }
                } catch {
                    // The model in memory has moved on without a durable round: stop, so that a restart
                    // resumes from the last committed round once the disk is fixed.
                    logger.critical("Cannot make the round durable; stopping (a restart resumes from the last committed round)",
                                    metadata: ["round": "\(round)", "error": "\(error)", "state": "\(configuration.stateDir)"])
                    stateLock.withLock { stopError = error }
                    stop()
                    return
                }
                store.prune(committed: round)
                logger.info("Round committed", metadata: [
                    "round": "\(round)", "round.reported": "\(accepted)", "round.late": "\(late)", "round.failed": "\(failed)",
                    "round.seconds": "\(String(format: "%.2f", record.durationSeconds))",
                ])
            }
            if schema != nil, configuration.evaluation.every > 0, round % UInt64(configuration.evaluation.every) == 0 {
                commitWriter.waitUntilIdle()
                evaluateGlobalModel(round: round, agents: outcome.accepted.keys.sorted())
            }
            // Past the last round nothing starts: the next round's actions are not queued.
            let done: Bool = driver.perform { [self] engine in
                let next = engine.committed(roundID: round, now: now)
                let done = isLastRound(engine.modelVersion)
                return (done, done ? [] : next)
            }
            if done {
                commitWriter.waitUntilIdle()
                stop()
            }
        } catch {
            logger.error("Commit failed", metadata: ["round": "\(round)", "error": "\(error)"])
            drive { [self] in $0.aggregationFailed(roundID: round, reason: "\(error)", now: now) }
        }
    }

    /// Puts the last committed model and optimizer state back from their checkpoint, after a
    /// step that was not committed has written over them. Under the model's write lock.
    private func restoreCommittedModel(version: UInt64) throws {
        model.parameters = try store.readModel(version: version)
        model.optimizer = store.readOptimizer(settings: configuration.optimizer, version: version)
    }

    func roundRecord(_ outcome: RoundStateMachine.Outcome, status: String, stats: RoundStats) -> RoundLogEvent.RoundClosed {
        let attempt = outcome.attempt
        var record = RoundLogEvent.RoundClosed(round: attempt.roundID, attempt: attempt.attempt, status: status)
        record.seed = attempt.seed
        let wallNow = Date()
        record.startedAt = RoundLog.timestamp(wallNow.addingTimeInterval(attempt.startedAt - now))
        record.endedAt = RoundLog.timestamp(wallNow.addingTimeInterval(outcome.closedAt - now))
        record.durationSeconds = outcome.closedAt - attempt.startedAt
        record.selected = attempt.invited
        record.reported = outcome.accepted.keys.sorted()
        record.late = outcome.late
        record.cancelled = outcome.cancelled
        record.failed = outcome.failed
        record.examples = outcome.accepted
        record.bytesSent = stats.bytesSent
        record.bytesReceived = stats.bytesReceived.filter { outcome.accepted[$0.key] != nil }
        record.trainSeconds = stats.trainSeconds
        record.transferSeconds = stats.transferSeconds
        let losses = stats.trainLoss.filter { outcome.accepted[$0.key] != nil }.values
        let weight = losses.reduce(0.0) { $0 + Double($1.1) }
        if weight > 0 { record.trainLoss = losses.reduce(0.0) { $0 + $1.0 * Double($1.1) } / weight }
        record.optimizer = configuration.optimizer.kind.rawValue
        return record
    }

    func appendLog(_ event: RoundLogEvent) {
        logLock.withLock {
            do { try roundLog.append(RoundLogRecord(event)) } catch {
                logger.error("Cannot append to the round log", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Per-round transfer and training figures, for the round record.
struct RoundStats {
    var bytesSent: [String: UInt64] = [:]
    var bytesReceived: [String: UInt64] = [:]
    var trainSeconds: [String: Double] = [:]
    var transferSeconds: [String: Double] = [:]
    var trainLoss: [String: (Double, UInt64)] = [:]
}
