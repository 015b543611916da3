import FedCore
import FedLearn
import FedProtocol
import FedSecAgg
import FedWire
import Foundation

// The data side of a federation with a model schema: agents report whether their data matches,
// and before round 1 a statistics round freezes the federation's standardization.

extension Coordinator {
    var needsStandardization: Bool { schema?.standardize == true && stateLock.withLock { standardization == nil } }

    /// Metadata written into every checkpoint: enough to use the model without this project
    /// (the feature order and the standardization to apply first).
    func checkpointMetadata(round: UInt64) -> [String: String] {
        var metadata = ["round": "\(round)", "federation": configuration.federation]
        if let schema {
            metadata["schema"] = schemaJSON
            metadata["features"] = schema.features.joined(separator: ",")
        }
        if let standardization = stateLock.withLock({ standardization }),
           let json = try? JSONEncoder().encode(standardization) {
            metadata["standardization"] = String(decoding: json, as: UTF8.self)
        }
        return metadata
    }

    /// ReportData: the agent's data check. A match makes the agent eligible (after the
    /// standardization is frozen); a mismatch is logged and answered FAILED_PRECONDITION.
    func receiveDataReport(_ call: ServerCall) throws {
        let agent = call.peer.commonName
        guard case .dataReport(let report) = try call.receiveOnly() else {
            throw RPCError(.invalidArgument, "\(Methods.reportData) takes a DataReport message")
        }
        guard let schema else {
            throw RPCError(.failedPrecondition, "this federation trains a raw tensor model without a data schema; there is nothing to report")
        }
        var problem = report.problem
        if problem.isEmpty {
            let summary = report.summary
            if summary.schemaSHA256 != schemaSHA256 {
                problem = "the data was checked against another model schema than this federation's (schema hash differs)"
            } else if summary.featureColumns != schema.features || summary.labelColumn != schema.label {
                problem = "the columns reported (\(summary.featureColumns.joined(separator: ",")) → \(summary.labelColumn)) are not the schema's"
            } else if summary.rowCount == 0 {
                problem = "the site has no usable rows"
            }
        }
        // A site's text (its problem, its column names) is cleaned and capped before it is logged or answered.
        problem = SiteText.clean(problem)
        guard problem.isEmpty else {
            logger.warning("Agent's data does not match the model schema; it will not be selected", metadata: [
                "agent": "\(agent)", "problem": "\(problem)",
            ])
            appendLog(.agentIneligible(.init(agent: agent, reason: "data does not match the model schema: \(problem)")))
            throw RPCError(.failedPrecondition, "this site will not be selected: its data does not match the federation's model schema: \(problem)")
        }
        appendLog(.agentEligible(.init(agent: agent, rows: report.summary.rowCount)))
        let current = registry.isCurrent(agent, call.connection)
        if current {
            let waits: Bool = stateLock.withLock {
                guard schema.standardize && standardization == nil else { return false }
                pendingAgents.insert(agent)
                return true
            }
            if waits { stateChanged.notify() }
            if !waits { drive { [self] in $0.agentConnected(agent, now: now) } }
        }
        try call.send(.empty)
    }

    /// Waits a second before a statistics round is tried again (at once when stopping).
    private func pauseBeforeRetry() {
        stateChanged.wait(until: .after(seconds: 1)) { isStopped }
    }

    /// Runs statistics rounds until the standardization is frozen: as soon as `min_available`
    /// eligible agents wait, each is asked for its per-feature count, mean and M2; the answers
    /// are merged exactly, frozen and logged, and the waiting agents become selectable.
    func gatherStatisticsUntilFrozen() {
        guard let schema else { return }
        while !isStopped && needsStandardization {
            let readyAgents = { self.stateLock.withLock { self.pendingAgents.filter { self.registry.connection($0) != nil }.sorted() } }
            stateChanged.wait(until: .distantFuture) { isStopped || readyAgents().count >= configuration.selection.minAvailable }
            if isStopped { return }
            let ready = readyAgents()
            var merged = FeatureStatistics(featureCount: schema.features.count)
            var contributors: [String] = []
            if configuration.secureAggregation.enabled {
                statisticsAttempts += 1
                do {
                    (merged, contributors) = try secureStatistics(from: ready, featureCount: schema.features.count, attempt: statisticsAttempts)
                } catch {
                    logger.warning("Secure statistics round failed; retrying", metadata: ["error": "\(error)"])
                    pauseBeforeRetry()
                    continue
                }
            } else {
                let answers = collectStatistics(from: ready, featureCount: schema.features.count)
                for agent in answers.keys.sorted() { merged.merge(answers[agent]!) }
                contributors = answers.keys.sorted()
            }
            guard contributors.count >= configuration.selection.minAvailable else {
                logger.warning("Too few agents answered the statistics round; retrying", metadata: [
                    "answered": "\(contributors.count)", "min_available": "\(configuration.selection.minAvailable)",
                ])
                pauseBeforeRetry()
                continue
            }
            let frozen = merged.standardization()
            let rows = merged.counts.max() ?? 0
            let record = RoundLogRecord(.standardization(.init(
                selected: contributors, secureAggregation: configuration.secureAggregation.enabled ? true : nil,
                rows: rows, featureMeans: frozen.means, featureScales: frozen.scales)))
            do {
                _ = try logLock.withLock { try roundLog.append(record) }
            } catch {
                logger.error("Cannot record the standardization; retrying", metadata: ["error": "\(error)"])
                pauseBeforeRetry()
                continue
            }
            logger.info("Federated standardization frozen", metadata: [
                "agents": "\(contributors.count)", "rows": "\(rows)", "features": "\(frozen.means.count)",
                "secure_aggregation": "\(configuration.secureAggregation.enabled)",
            ])
            let waiting: [String] = stateLock.withLock {
                standardization = frozen
                defer { pendingAgents = [] }
                return pendingAgents.sorted()
            }
            for agent in waiting { drive { [self] in $0.agentConnected(agent, now: now) } }
        }
    }

    /// The statistics round under secure aggregation: each site's count, sum and sum of squares
    /// per feature travel masked as exact fixed-point sums; the coordinator learns only the
    /// totals, from which the pooled means and sums of squared deviations follow exactly.
    private func secureStatistics(from agents: [String], featureCount: Int, attempt: Int) throws -> (FeatureStatistics, [String]) {
        let settings = configuration.secureAggregation
        let length = featureCount * 3 * ExactSums.limbsPerValue
        let id = SecureRoundID(epoch: startCount, round: 0, attempt: attempt)
        let config = try SecureRound.configuration(
            invited: agents, id: id, settings: settings, modelSHA256: schemaSHA256, parameterCount: length,
            deadlineSeconds: settings.keysTimeoutSeconds)
        let round = try SecureRound(config: config, id: id, spools: spools)
        let advertised = fanOut(to: round.invited) { [self] agent in
            let connection = try registry.connected(agent)
            let index = round.withSession { $0.index(of: agent)! }
            let reply = try connection.unary(
                Methods.statistics, .statisticsRequest(StatisticsRequest(
                    featureCount: UInt32(featureCount), secureAggregation: SecureAggregationTask(config: config, index: index))),
                timeout: settings.keysTimeoutSeconds)
            guard case .advertiseKeys(let keys) = reply, keys.roundID == config.roundID else {
                throw RPCError(.invalidArgument, "Statistics answered \(reply.name), not AdvertiseKeys")
            }
            try round.withSession { try $0.receiveKeys(keys.keys, from: agent) }
        }
        logFailures(advertised, "No keys for the statistics from an agent")
        // Every call above and below ends within keys_timeout_seconds, the stage's deadline.
        let keys = try round.withSession { try $0.closeAdvertising() }
        let u1 = round.withSession { session in session.u1.map { session.agent(at: $0) }.sorted() }
        logFailures(fanOut(to: u1) { [self] agent in try requestShares(from: agent, keys: keys, round: round) }, "No shares from an agent")
        let (incoming, u2) = try round.withSession { session in (try session.closeSharing(), session.u2.sorted()) }
        let requested = round.withSession { session in u2.map { session.agent(at: $0) } }
        let replies = fanOut(to: requested) { [self] agent in try requestMaskedInput(from: agent, survivors: u2, incoming: incoming, round: round) }
        var survivors: [String] = []
        accumulatorLock.withLock {
            for (agent, outcome) in replies.sorted(by: { $0.key < $1.key }) {
                guard case .success(.maskedVector(let vector)) = outcome, vector.roundID == config.roundID, vector.elements.count == length + 2 else { continue }
                vector.elements.withUnsafeBufferPointer { round.add($0, at: 0) }
                survivors.append(agent)
            }
        }
        let (unmasking, request) = try closeMaskedInput(round, accepted: survivors)
        logFailures(fanOut(to: unmasking) { [self] agent in try requestUnmask(from: agent, request, round: round) }, "No unmask answer from an agent")
        let sums = try accumulatorLock.withLock { try round.unmaskedSum { z, count in try ExactSums.decode(Array(z), survivors: count) } }
        var counts: [UInt64] = [], means: [Double] = [], m2: [Double] = []
        for f in 0..<featureCount {
            let n = sums[3 * f], s1 = sums[3 * f + 1], s2 = sums[3 * f + 2]
            counts.append(UInt64(max(0, n.rounded())))
            let mean = n > 0 ? s1 / n : 0
            means.append(mean)
            m2.append(max(0, s2 - s1 * mean))
        }
        return (try FeatureStatistics(counts: counts, means: means, m2: m2), unmasking)
    }

    /// Asks `agents` for their statistics at once; returns the valid answers by agent.
    private func collectStatistics(from agents: [String], featureCount: Int) -> [String: FeatureStatistics] {
        let outcomes = fanOut(to: agents) { [self] agent -> FeatureStatistics in
            let connection = try registry.connected(agent)
            let reply = try connection.unary(
                Methods.statistics, .statisticsRequest(StatisticsRequest(featureCount: UInt32(featureCount))),
                timeout: configuration.selection.roundDeadline)
            guard case .featureStatistics(let message) = reply else {
                throw RPCError(.invalidArgument, "Statistics answered \(reply.name), not FeatureStatistics")
            }
            let statistics = try FeatureStatistics(counts: message.counts, means: message.means, m2: message.m2)
            guard statistics.featureCount == featureCount else {
                throw RPCError(.invalidArgument, "statistics for \(statistics.featureCount) features; the model has \(featureCount)")
            }
            return statistics
        }
        logFailures(outcomes, "No usable statistics from an agent")
        return outcomes.compactMapValues { try? $0.get() }
    }
}
