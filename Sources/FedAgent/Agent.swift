import FedCore
import FedLearn
import FedSecAgg
import FedWire
import Foundation
import Logging

/// The agent's runtime at a partner site: dials the coordinator (never listens), keeps the
/// connection up with exponential back-off and jitter, receives tasks, trains on a dedicated
/// thread, announces its update and streams it when the coordinator pulls it. Never sends
/// training data: only the update and its example count.
public final class Agent: @unchecked Sendable {
    // @unchecked: mutable state is guarded by `lock`.
    public let configuration: AgentConfiguration
    private let trainer: any LocalTrainer
    private let logger: Logger
    private let context: TLSContext

    private let lock = NSLock()
    private var connection: RPCConnection?
    private var job: Job?
    private var stopped = false
    private var joins = 0
    private var outcomes: [UInt64: RPCStatus] = [:]
    private var dataProblem: String?
    /// The last secure round id seen: older or repeated ones are replays.
    private var lastSecureRoundID: UInt64?
    private let secureRandomness: any SecAggRandomness
    /// This agent's identity as the coordinator establishes it: its certificate's CN.
    private let identity: String
    private var plannedDropout: SecureStage?
    /// SHA-256 of the schema JSON this agent checked its data against (binds secure statistics).
    private var schemaHash: [UInt8] = []
    /// A secure statistics session in progress: the session, its encoded input, its lock.
    private var statisticsSession: (session: SecAggAgentSession, input: [UInt32], lock: NSLock)?
    /// Secure rounds set up (stage 0) and not yet finished, by secure round id.
    private var secureRounds: [UInt64: SecureState] = [:]

    /// One secure round at this agent: the protocol session (not thread-safe: `lock` serializes
    /// it) and the encoded update waiting for the stage-2 request.
    final class SecureState: @unchecked Sendable {
        // @unchecked: `session` calls and `encoded` are guarded by `lock`.
        let session: SecAggAgentSession
        let lock = NSLock()
        var encoded: [UInt32]?
        init(_ session: SecAggAgentSession) { self.session = session }
    }

    /// The stages of a secure round, for dropout drills.
    public enum SecureStage: Int, Sendable, CaseIterable {
        case advertiseKeys, shareKeys, maskedInput, unmask

        /// From its configuration name ("masked_input").
        public init?(name: String) {
            guard let stage = ["advertise_keys": Self.advertiseKeys, "share_keys": .shareKeys, "masked_input": .maskedInput, "unmask": .unmask][name]
            else { return nil }
            self = stage
        }
    }

    /// Drills and tests: in the next secure round, drop the connection (as a crash or a network
    /// cut would) when the coordinator reaches `stage`, then reconnect as usual.
    public func planDropout(at stage: SecureStage) { lock.withLock { plannedDropout = stage } }

    /// Drops out at `stage` if planned: a planned dropout (once) drops the connection, as a crash
    /// would; the configured drill (every round) answers UNAVAILABLE and stays connected, so that
    /// benchmarks measure the round, not the reconnection. Returns whether it dropped out.
    private func dropIfPlanned(_ stage: SecureStage) -> Bool {
        if configuration.drill.secureDropoutStage.flatMap(SecureStage.init(name:)) == stage {
            logger.warning("Dropping out of the secure round (drill)", metadata: ["stage": "\(stage)"])
            return true
        }
        let connection: RPCConnection? = lock.withLock {
            guard plannedDropout == stage else { return nil }
            plannedDropout = nil
            return self.connection
        }
        guard let connection else { return false }
        logger.warning("Dropping out of the secure round as planned", metadata: ["stage": "\(stage)"])
        connection.close()
        return true
    }

    /// One task: the global model it starts from, and its update once trained.
    final class Job: @unchecked Sendable {
        // @unchecked: `cancelled` and `update` are guarded by the agent's lock.
        let task: TrainTask
        let global: ModelParameters
        var cancelled = false
        var update: TrainingResult?
        var trainSeconds = 0.0
        /// Under secure aggregation: the attempt's protocol state (its own lock serializes it),
        /// and the masked input once computed.
        let secure: SecureState?
        var masked: [UInt32]?
        init(task: TrainTask, global: ModelParameters, secure: SecureState? = nil) {
            self.task = task
            self.global = global
            self.secure = secure
        }
    }

    public init(configuration: AgentConfiguration, trainer: (any LocalTrainer)? = nil, logger: Logger,
                secureRandomness: any SecAggRandomness = SystemSecAggRandomness()) throws {
        self.configuration = configuration
        self.secureRandomness = secureRandomness
        identity = try Certificate(pemFile: configuration.tls.certificate).identity.commonName
        self.trainer = trainer ?? configuration.makeTrainer()
        self.logger = logger
        context = try TLSContext(configuration: .makeClientConfiguration(
            certificateChainPath: configuration.tls.certificate, privateKeyPath: configuration.tls.privateKey,
            trustRootPath: configuration.tls.ca))
    }

    /// Times this agent has joined the coordinator (reconnections count).
    public var joinCount: Int { lock.withLock { joins } }
    public var isConnected: Bool { lock.withLock { connection.map { !$0.isClosed } ?? false } }
    /// Why the coordinator will not select this agent (its data does not match the federation's
    /// schema), or nil.
    public var dataRefusal: String? { lock.withLock { dataProblem } }
    /// What the coordinator answered to each announced update, by round.
    public var announcementOutcomes: [UInt64: RPCStatus] { lock.withLock { outcomes } }

    /// Connects and serves until ``stop()``; reconnects after any failure.
    public func run() {
        var backoff = configuration.reconnectInitialSeconds
        var generator = SystemRandomNumberGenerator()
        while !lock.withLock({ stopped }) {
            do {
                var options = ConnectionOptions()
                options.maxFrameBytes = configuration.maxFrameBytes
                options.heartbeatInterval = configuration.heartbeatIntervalSeconds
                options.livenessTimeout = 3 * configuration.heartbeatIntervalSeconds
                let (connection, welcome) = try WireClient.connect(
                    host: configuration.coordinator.host, port: configuration.coordinator.port, context: context,
                    hello: Hello(agentName: "fedagent"), options: options, logger: logger
                ) { [weak self] call in try self?.handle(call) }
                lock.withLock {
                    self.connection = connection
                    joins += 1
                }
                logger.info("Joined the federation", metadata: [
                    "agent": "\(welcome.agentID)", "federation": "\(welcome.federation)", "coordinator": "\(welcome.softwareVersion)",
                ])
                backoff = configuration.reconnectInitialSeconds
                if !welcome.modelSchemaJSON.isEmpty { reportData(welcome.modelSchemaJSON, on: connection) }
                let closed = DispatchSemaphore(value: 0)
                connection.whenClosed { _ in closed.signal() }
                while closed.wait(timeout: .now() + 0.2) == .timedOut {
                    if lock.withLock({ stopped }) { connection.close() }
                }
                logger.warning("Disconnected from the coordinator", metadata: ["reason": "\(connection.closeReason?.message ?? "closed")"])
            } catch {
                logger.warning("Cannot reach the coordinator; will retry", metadata: [
                    "error": "\(error)", "retry.seconds": "\(String(format: "%.1f", backoff))",
                ])
            }
            if lock.withLock({ stopped }) { break }
            let jittered = backoff * Double.random(in: 0.5...1.5, using: &generator)
            let until = Deadline.after(seconds: jittered)
            while !until.hasPassed && !lock.withLock({ stopped }) { usleep(20_000) }
            backoff = min(backoff * 2, configuration.reconnectMaxSeconds)
        }
    }

    /// Stops the agent and closes its connection.
    public func stop() {
        let current: RPCConnection? = lock.withLock {
            stopped = true
            job?.cancelled = true
            return connection
        }
        current?.close()
    }

    /// Checks the local data against the federation's schema and tells the coordinator the
    /// verdict (a summary or the problem, never the data).
    private func reportData(_ schemaJSON: String, on connection: RPCConnection) {
        let hash = Array(schemaJSON.utf8).withUnsafeBytes { SHA256Hasher.hash($0) }
        lock.withLock { schemaHash = hash }
        var report: DataReport
        do {
            let schema = try ModelSchema.decode(json: schemaJSON)
            var summary = try trainer.prepare(schema: schema)
            summary.schemaSHA256 = hash
            report = DataReport(summary: summary)
            logger.info("Local data matches the federation's model schema", metadata: [
                "rows": "\(summary.rowCount)", "features": "\(schema.features.count)", "model": "\(schema.kind.rawValue)",
            ])
        } catch {
            report = DataReport(summary: DataSchemaSummary(schemaSHA256: hash), problem: "\(error)")
            logger.error("Local data does not match the federation's model schema; this site will not be selected until it is fixed (check it with `fedagent check`, then restart the agent)",
                         metadata: ["problem": "\(error)"])
        }
        do {
            _ = try connection.unary(Methods.reportData, .dataReport(report), timeout: 30)
            lock.withLock { dataProblem = nil }
        } catch let error as RPCError {
            lock.withLock { dataProblem = error.message }
            logger.error("The coordinator will not select this site", metadata: ["status": "\(error.status)"])
        } catch {
            logger.warning("Could not report the data check", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Calls from the coordinator

    private func handle(_ call: ServerCall) throws {
        switch call.method {
        case Methods.train: try receiveTask(call)
        case Methods.pullUpdate: try sendUpdate(call)
        case Methods.cancel:
            guard case .cancelTask(let cancel) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "CancelTask expected") }
            let cancelled: Job? = lock.withLock {
                guard let job, job.task.roundID == cancel.roundID else { return nil }
                job.cancelled = true
                return job
            }
            if let secure = cancelled?.secure {
                secure.lock.withLock { secure.session.erase() }
                lock.withLock { _ = secureRounds.removeValue(forKey: secure.session.config.roundID) }
            }
            logger.info("Task cancelled", metadata: ["round": "\(cancel.roundID)", "reason": "\(cancel.reason)"])
            try call.send(.empty)
        case Methods.evaluate: try evaluate(call)
        case Methods.secureSetup: try secureSetup(call)
        case Methods.shareKeys, Methods.maskedInput, Methods.unmask: try handleSecureStage(call)
        case Methods.statistics:
            guard case .statisticsRequest(let request) = try call.receiveOnly() else {
                throw RPCError(.invalidArgument, "StatisticsRequest expected")
            }
            let statistics: FeatureStatistics
            do { statistics = try trainer.statistics() } catch { throw RPCError(.failedPrecondition, "\(error)") }
            guard statistics.featureCount == Int(request.featureCount) else {
                throw RPCError(.failedPrecondition, "this site has \(statistics.featureCount) features; the request counts \(request.featureCount)")
            }
            if let secure = request.secureAggregation {
                try startSecureStatistics(statistics, secure, call: call)
                return
            }
            if configuration.policy.requireSecureAggregation {
                throw RPCError(.permissionDenied, "this site's policy requires secure aggregation (policy.require_secure_aggregation); "
                    + "plaintext statistics are refused")
            }
            logger.info("Feature statistics sent for federated standardization")
            try call.send(.featureStatistics(FeatureStatisticsMessage(counts: statistics.counts, means: statistics.means, m2: statistics.m2)))
        default:
            throw RPCError(.unimplemented, "\(call.method) is not an agent method")
        }
    }

    /// Secure statistics: the count, sum and sum of squares per feature, as exact fixed-point sums,
    /// go through the same masking as updates; the answer is this agent's keys.
    private func startSecureStatistics(_ statistics: FeatureStatistics, _ secure: SecureAggregationTask, call: ServerCall) throws {
        var values: [Double] = []
        for f in 0..<statistics.featureCount {
            let n = Double(statistics.counts[f]), mean = statistics.means[f]
            values += [n, n * mean, statistics.m2[f] + n * mean * mean]
        }
        let session: SecAggAgentSession
        let input: [UInt32]
        do {
            input = try ExactSums.encode(values)
            session = try SecAggAgentSession(
                config: secure.config, index: secure.index, agentID: identity, receivedModelSHA256: lock.withLock { schemaHash },
                parameterCount: input.count - 2, lastRoundID: lock.withLock { lastSecureRoundID }, randomness: secureRandomness)
        } catch {
            throw RPCError(.failedPrecondition, "secure statistics refused: \(error)")
        }
        lock.withLock {
            lastSecureRoundID = secure.config.roundID
            statisticsSession = (session, input, NSLock())
        }
        logger.info("Feature statistics entering secure aggregation", metadata: ["features": "\(statistics.featureCount)"])
        try call.send(.advertiseKeys(AdvertiseKeysMessage(roundID: secure.config.roundID, keys: session.keys)))
    }

    private func evaluate(_ call: ServerCall) throws {
        guard case .evaluationRequest(let request) = try call.receive() else {
            throw RPCError(.invalidArgument, "Evaluate starts with an EvaluationRequest")
        }
        let model = try receiveModel(from: call, tensorCount: request.tensorCount, sha256: request.modelSHA256)
        let metrics: EvaluationMetrics
        do { metrics = try trainer.evaluate(request: request, model: model) } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(.failedPrecondition, "\(error)")
        }
        var result = EvaluationResult()
        result.roundID = request.roundID
        result.exampleCount = UInt64(metrics.exampleCount)
        result.loss = metrics.loss
        result.accuracy = metrics.accuracy
        result.rocAUC = metrics.rocAUC
        logger.info("Model evaluated on the local holdout", metadata: [
            "round": "\(request.roundID)", "accuracy": "\(String(format: "%.3f", metrics.accuracy))", "examples": "\(metrics.exampleCount)",
        ])
        try call.send(.evaluationResult(result))
    }

    private func receiveTask(_ call: ServerCall) throws {
        guard case .trainTask(let task) = try call.receive() else { throw RPCError(.invalidArgument, "Train starts with a TrainTask") }
        let global = try receiveModel(from: call, tensorCount: task.tensorCount, sha256: task.modelSHA256)
        var session: SecureState?
        if let secure = task.secureAggregation {
            guard let state = lock.withLock({ secureRounds[secure.config.roundID] }) else {
                throw RPCError(.failedPrecondition, "secure round \(secure.config.roundID) was not set up here (SecureSetup first)")
            }
            // The model received (its hash checked against the task's) must be the one bound into the round.
            guard task.modelSHA256 == state.session.config.modelSHA256,
                  UInt64(global.layout.parameterCount + 2) == state.session.config.vectorLength
            else {
                throw RPCError(.failedPrecondition, "the model received is not the one the secure round's configuration names")
            }
            session = state
        } else if configuration.policy.requireSecureAggregation || configuration.policy.maxEpsilon != nil {
            logger.warning("Plaintext round refused by this site's policy", metadata: ["round": "\(task.roundID)"])
            throw RPCError(.permissionDenied, "this site's policy requires secure aggregation (policy.require_secure_aggregation); "
                + "round \(task.roundID) was offered without it and is refused")
        }
        let job = Job(task: task, global: global, secure: session)
        lock.withLock {
            self.job?.cancelled = true
            self.job = job
        }
        logger.info("Task received", metadata: [
            "round": "\(task.roundID)", "model.version": "\(task.modelVersion)", "secure_aggregation": "\(session != nil)",
        ])
        Thread { [self] in train(job) }.start()
    }

    /// Stage 0 of a secure round: checks the task's secure-aggregation parameters and this site's
    /// policy, draws the keys and answers them; the model follows in the Train call.
    private func secureSetup(_ call: ServerCall) throws {
        guard case .trainTask(let task) = try call.receiveOnly(), let secure = task.secureAggregation else {
            throw RPCError(.invalidArgument, "SecureSetup takes a TrainTask with secure_aggregation set")
        }
        if let cap = configuration.policy.maxEpsilon {
            guard let projected = secure.projectedEpsilon, projected <= cap else {
                let what = secure.projectedEpsilon.map { String(format: "would bring the federation's ε to %.3f (δ = %g)", $0, secure.delta ?? 0) }
                    ?? "runs without differential privacy"
                logger.warning("Round refused by this site's privacy budget", metadata: ["round": "\(task.roundID)", "cap": "\(cap)"])
                throw RPCError(.permissionDenied, "round \(task.roundID) \(what), above this site's cap policy.max_epsilon = \(cap)")
            }
        }
        let session: SecAggAgentSession
        do {
            // The model hash is the one the task names; the model itself is checked against it when it arrives.
            session = try SecAggAgentSession(
                config: secure.config, index: secure.index, agentID: identity, receivedModelSHA256: task.modelSHA256,
                parameterCount: max(0, Int(secure.config.vectorLength) - 2), lastRoundID: lock.withLock { lastSecureRoundID },
                randomness: secureRandomness)
        } catch {
            logger.warning("Secure aggregation refused", metadata: ["round": "\(task.roundID)", "reason": "\(error)"])
            throw RPCError(.failedPrecondition, "secure aggregation refused: \(error)")
        }
        let stale: [SecureState] = lock.withLock {
            lastSecureRoundID = secure.config.roundID
            let old = Array(secureRounds.values)
            secureRounds = [secure.config.roundID: SecureState(session)]
            return old
        }
        for state in stale { state.lock.withLock { state.session.erase() } }
        if dropIfPlanned(.advertiseKeys) { throw RPCError(.unavailable, "dropped out") }
        try call.send(.advertiseKeys(AdvertiseKeysMessage(roundID: secure.config.roundID, keys: session.keys)))
    }

    /// Reads a model streamed after a call's first message, checking every tensor's hash and the model's.
    private func receiveModel(from call: ServerCall, tensorCount: UInt32, sha256: [UInt8]) throws -> ModelParameters {
        var specs: [TensorSpec] = []
        var values: [Float] = []
        var digests: [[UInt8]] = []
        for _ in 0..<tensorCount {
            let header = try TensorStream.readHeader(from: call)
            let shape = header.shape.map { Int($0) }
            let count = shape.reduce(1, *)
            guard header.totalBytes == UInt64(count * 4), count > 0, values.count + count <= 1 << 31 else {
                throw RPCError(.invalidArgument, "tensor '\(header.name)' announces \(header.totalBytes) bytes for shape \(header.shape)")
            }
            let start = values.count
            values.append(contentsOf: repeatElement(0, count: count))
            let summary = try values.withUnsafeMutableBufferPointer { buffer in
                try TensorStream.receive(from: call, header: header, into: UnsafeMutableBufferPointer(rebasing: buffer[start..<start + count]))
            }
            digests.append(summary.sha256)
            specs.append(TensorSpec(name: header.name, shape: shape))
        }
        guard try call.receive() == nil else { throw RPCError(.invalidArgument, "unexpected message after the model's tensors") }
        // Each tensor's bytes were checked against its own digest as they arrived.
        guard ModelDigest.combine(digests) == sha256 else {
            throw RPCError(.dataLoss, "the model received does not match the model hash announced")
        }
        do { return try ModelParameters(layout: try ModelLayout(specs), values: values) } catch {
            throw RPCError(.invalidArgument, "the model's tensors are not a valid model: \(error)")
        }
    }

    private func train(_ job: Job) {
        let started = Deadline.now
        let result: TrainingResult
        do {
            result = try trainer.train(task: job.task, global: job.global) { [self] in lock.withLock { job.cancelled } }
        } catch is TrainingCancelled {
            return
        } catch {
            logger.error("Local training failed; the update is refused here and the coordinator told", metadata: [
                "round": "\(job.task.roundID)", "error": "\(error)",
            ])
            announceFailure(job, reason: "local training failed: \(error)")
            return
        }
        guard result.delta.count == job.global.layout.parameterCount, result.exampleCount > 0, result.delta.allSatisfy(\.isFinite) else {
            logger.error("The trainer returned an update that does not fit the model (size, example count or a non-finite value); not sent",
                         metadata: ["round": "\(job.task.roundID)"])
            announceFailure(job, reason: "the trainer returned an update that does not fit the model")
            return
        }
        let proceed: Bool = lock.withLock {
            guard !job.cancelled else { return false }
            job.update = result
            job.trainSeconds = -started.remainingSeconds
            return true
        }
        guard proceed else { return }
        if job.secure != nil { maskAndAnnounce(job) } else { announce(job) }
    }

    /// Under secure aggregation the update is announced once it is trained and the masked-input
    /// request has arrived, whichever comes last; it is masked exactly once.
    private func maskAndAnnounce(_ job: Job) {
        guard let state = job.secure, let update = lock.withLock({ job.cancelled ? nil : job.update }) else { return }
        let secure = state.session
        let masked: [UInt32]? = state.lock.withLock {
            do {
                // Encode as soon as possible (it overlaps the other agents' work), mask once the request is in.
                if state.encoded == nil && secure.canEncode {
                    state.encoded = try update.delta.withUnsafeBufferPointer { try secure.encode(delta: $0, examples: update.exampleCount) }
                }
                guard secure.canMask, let encoded = state.encoded else { return nil }
                state.encoded = nil
                return try secure.maskedInput(encoded: encoded)
            } catch {
                logger.error("Cannot mask the update", metadata: ["round": "\(job.task.roundID)", "error": "\(error)"])
                return nil
            }
        }
        guard let masked else { return }
        lock.withLock { job.masked = masked }
        announce(job)
    }

    /// The stages of a secure statistics session: the masked vector answers MaskedInput directly.
    private func handleStatisticsStage(_ request: Message, _ statistics: (session: SecAggAgentSession, input: [UInt32], lock: NSLock),
                                       call: ServerCall) throws {
        let session = statistics.session
        let roundID = session.config.roundID
        do {
            switch request {
            case .shareKeysRequest(let r):
                let (commitment, outgoing) = try statistics.lock.withLock { try session.shareKeys(r.keys) }
                try call.send(.shareKeysResponse(ShareKeysResponse(roundID: roundID, index: session.index, commitment: commitment, outgoing: outgoing)))
            case .maskedInputRequest(let r):
                let y = try statistics.lock.withLock {
                    try session.receiveMaskedInputRequest(survivors: r.survivors, incoming: r.incoming)
                    return try session.maskedInput(encoded: statistics.input)
                }
                try call.send(.maskedVector(MaskedVector(roundID: roundID, elements: y)))
            case .unmaskRequest(let r):
                let shares = try statistics.lock.withLock { try session.unmask(survivors: r.survivors, dropped: r.dropped) }
                try call.send(.unmaskResponse(UnmaskResponse(roundID: roundID, index: session.index, shares: shares)))
                lock.withLock { statisticsSession = nil }
            default: break
            }
        } catch let error as SecAggError {
            logger.warning("Secure statistics request refused; nothing revealed", metadata: ["reason": "\(error)"])
            throw RPCError(.failedPrecondition, "refused: \(error)")
        }
    }

    /// ShareKeys, MaskedInput and Unmask: the stages of the secure round in flight.
    private func handleSecureStage(_ call: ServerCall) throws {
        let request = try call.receiveOnly()
        let roundID: UInt64
        switch request {
        case .shareKeysRequest(let r): roundID = r.roundID
        case .maskedInputRequest(let r): roundID = r.roundID
        case .unmaskRequest(let r): roundID = r.roundID
        default: throw RPCError(.invalidArgument, "\(call.method) does not take \(request.name)")
        }
        if let statistics = lock.withLock({ statisticsSession }), statistics.session.config.roundID == roundID {
            try handleStatisticsStage(request, statistics, call: call)
            return
        }
        guard let state = lock.withLock({ secureRounds[roundID] }) else {
            throw RPCError(.failedPrecondition, "no secure round \(roundID) is in progress here")
        }
        let secure = state.session
        /// The job of this round, once its Train call has arrived (the key stages may come first).
        let job: () -> Job? = { [self] in lock.withLock { self.job?.secure === state ? self.job : nil } }
        let stage: SecureStage = switch request {
        case .shareKeysRequest: .shareKeys
        case .maskedInputRequest: .maskedInput
        default: .unmask
        }
        if dropIfPlanned(stage) { throw RPCError(.unavailable, "dropped out") }
        do {
            switch request {
            case .shareKeysRequest(let r):
                let (commitment, outgoing) = try state.lock.withLock { try secure.shareKeys(r.keys) }
                try call.send(.shareKeysResponse(ShareKeysResponse(roundID: roundID, index: secure.index, commitment: commitment, outgoing: outgoing)))
                // If training is already done, encode now, before the stage-2 request.
                if let job = job() { Thread { [self] in maskAndAnnounce(job) }.start() }
            case .maskedInputRequest(let r):
                try state.lock.withLock { try secure.receiveMaskedInputRequest(survivors: r.survivors, incoming: r.incoming) }
                try call.send(.empty)
                if let job = job() { Thread { [self] in maskAndAnnounce(job) }.start() }
            case .unmaskRequest(let r):
                let shares = try state.lock.withLock { try secure.unmask(survivors: r.survivors, dropped: r.dropped) }
                logger.info("Unmask answered", metadata: ["secure.round": "\(roundID)", "survivors": "\(r.survivors.count)", "dropped": "\(r.dropped.count)"])
                try call.send(.unmaskResponse(UnmaskResponse(roundID: roundID, index: secure.index, shares: shares)))
            default: break
            }
        } catch let error as SecAggError {
            logger.warning("Secure aggregation request refused; nothing revealed", metadata: ["secure.round": "\(roundID)", "reason": "\(error)"])
            throw RPCError(.failedPrecondition, "refused: \(error)")
        }
    }

    /// Tells the coordinator the update is ready; the answer arrives once it has been pulled.
    private func announce(_ job: Job) {
        guard let connection = lock.withLock({ self.connection }), let update = lock.withLock({ job.update }) else { return }
        let ready = Self.header(job, update)
        let status: RPCStatus
        do {
            _ = try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 600)
            status = .ok
            logger.info("Update accepted", metadata: ["round": "\(job.task.roundID)"])
        } catch let error as RPCError {
            status = error.status
            logger.warning("Update not used", metadata: ["round": "\(job.task.roundID)", "status": "\(error.status)"])
        } catch {
            status = RPCStatus(.unavailable, "\(error)")
        }
        lock.withLock {
            outcomes[job.task.roundID] = status
            if self.job === job { job.update = nil }
        }
    }

    /// Tells the coordinator that this site's training failed for the round, so that it does not
    /// wait for it; the agent stays connected.
    private func announceFailure(_ job: Job, reason: String) {
        guard let connection = lock.withLock({ self.connection }), !lock.withLock({ job.cancelled }) else { return }
        var ready = UpdateReady()
        ready.roundID = job.task.roundID
        ready.modelVersion = job.task.modelVersion
        ready.failure = reason
        let status: RPCStatus
        do {
            _ = try connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 30)
            status = .ok
        } catch let error as RPCError {
            status = error.status
        } catch {
            status = RPCStatus(.unavailable, "\(error)")
        }
        lock.withLock { outcomes[job.task.roundID] = RPCStatus(.aborted, status.isOK ? reason : status.message) }
    }

    /// The UpdateReady that announces an update and heads its upload.
    private static func header(_ job: Job, _ update: TrainingResult) -> UpdateReady {
        var ready = UpdateReady()
        ready.roundID = job.task.roundID
        ready.modelVersion = job.task.modelVersion
        ready.exampleCount = update.exampleCount
        ready.updateBytes = UInt64(update.delta.count * 4)
        ready.trainLoss = update.loss
        ready.trainSeconds = job.trainSeconds
        ready.tensorCount = UInt32(job.global.layout.tensors.count)
        if let masked = job.masked {
            // The weight travels masked inside the vector; the announcement does not reveal it.
            ready.exampleCount = 1
            ready.updateBytes = UInt64(masked.count * 4)
            ready.tensorCount = 1
        }
        return ready
    }

    private func sendUpdate(_ call: ServerCall) throws {
        guard case .fetchUpdate(let fetch) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "FetchUpdate expected") }
        guard let (job, update) = lock.withLock({ () -> (Job, TrainingResult)? in
            guard let job, job.task.roundID == fetch.roundID, let update = job.update else { return nil }
            return (job, update)
        }) else {
            throw RPCError(.notFound, "no update for round \(fetch.roundID) is held here")
        }
        try call.send(.updateReady(Self.header(job, update)))
        if let masked = lock.withLock({ job.masked }) {
            _ = try masked.withUnsafeBufferPointer { try TensorStream.send(name: "masked_input", words: $0, to: call) }
            return
        }
        let layout = job.global.layout
        try update.delta.withUnsafeBufferPointer { delta in
            for (index, spec) in layout.tensors.enumerated() {
                _ = try TensorStream.send(
                    name: spec.name, shape: spec.shape, floats: UnsafeBufferPointer(rebasing: delta[layout.range(of: index)]), to: call)
            }
        }
    }
}
