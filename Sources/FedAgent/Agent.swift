import FedCore
import FedHashing
import FedLearn
import FedProtocol
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
    /// The round-log heads this site was shown (``AgentConfiguration/witnessFile``).
    let witness: WitnessFile?
    let trainer: any LocalTrainer
    let logger: Logger
    private let context: TLSContext

    let lock = NSLock()
    var connection: RPCConnection?
    var job: Job?
    private var stopped = false
    /// Notified when `stopped` is set: wakes the reconnect backoff.
    private let stopSignal = WaitSignal()
    private var joins = 0
    private var outcomes: [UInt64: RPCStatus] = [:]
    private var dataProblem: String?
    /// The last secure round id seen: older or repeated ones are replays.
    var lastSecureRoundID: UInt64?
    let secureRandomness: any SecAggRandomness
    /// This agent's identity as the coordinator establishes it: its certificate's CN.
    let identity: String
    var plannedDropout: SecureStage?
    /// SHA-256 of the schema JSON this agent checked its data against (binds secure statistics).
    var schemaHash: [UInt8] = []
    /// Secure sessions (rounds and statistics) set up at stage 0 and not yet finished, by secure round id.
    var secureRounds: [UInt64: SecureState] = [:]
    /// The storage of the last model let go of, for the next one.
    private let modelStorage = ModelStorageRecycler()

    /// One task: the global model it starts from, and its update once trained.
    final class Job: @unchecked Sendable {
        // @unchecked: `update` is guarded by the agent's lock; `cancellation` guards itself.
        let task: TrainTask
        let global: ModelParameters
        /// The connection the task arrived on: the update is announced there. (Not the agent's
        /// `connection`, which is set only once the join has returned, and the coordinator may
        /// send a task, and the trainer finish it, before that.)
        let connection: RPCConnection
        let cancellation = Cancellation()
        var update: TrainingResult?
        var trainSeconds = 0.0
        /// Under secure aggregation: the attempt's protocol state (its own lock serializes it),
        /// and the masked input once computed.
        let secure: SecureState?
        var masked: [UInt32]?
        /// Where the model's storage goes when the job ends.
        private let recycler: ModelStorageRecycler?
        init(task: TrainTask, global: ModelParameters, connection: RPCConnection, secure: SecureState? = nil,
             recycler: ModelStorageRecycler? = nil) {
            self.task = task
            self.global = global
            self.connection = connection
            self.secure = secure
            self.recycler = recycler
        }
        deinit { recycler?.give(global.values) }
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
        witness = try configuration.witnessFile.map { try WitnessFile(path: $0) }
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
                let stopping: Bool = lock.withLock {
                    self.connection = connection
                    joins += 1
                    return stopped
                }
                logger.info("Joined the federation", metadata: [
                    "agent": "\(welcome.agentID)", "federation": "\(welcome.federation)", "coordinator": "\(welcome.softwareVersion)",
                ])
                backoff = configuration.reconnectInitialSeconds
                if !welcome.modelSchemaJSON.isEmpty { reportData(welcome.modelSchemaJSON, on: connection) }
                // stop() closes the connection it finds; one made after it is closed here.
                if stopping { connection.close() }
                let closed = DispatchSemaphore(value: 0)
                connection.whenClosed { _ in closed.signal() }
                closed.wait()
                logger.warning("Disconnected from the coordinator", metadata: ["reason": "\(connection.closeReason?.message ?? "closed")"])
            } catch {
                logger.warning("Cannot reach the coordinator; will retry", metadata: [
                    "error": "\(error)", "retry.seconds": "\(String(format: "%.1f", backoff))",
                ])
            }
            if lock.withLock({ stopped }) { break }
            let jittered = backoff * Double.random(in: 0.5...1.5, using: &generator)
            let until = Deadline.after(seconds: jittered)
            stopSignal.wait(until: until) { lock.withLock { stopped } }
            backoff = min(backoff * 2, configuration.reconnectMaxSeconds)
        }
    }

    /// Stops the agent and closes its connection.
    public func stop() {
        let current: RPCConnection? = lock.withLock {
            stopped = true
            job?.cancellation.cancel()
            return connection
        }
        stopSignal.notify()
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
            // Only the problem's structure leaves the site: never a cell's content or a local path.
            let shareable = (error as? LearnError)?.shareable ?? "the site's data could not be checked; the site's own log says why"
            report = DataReport(summary: DataSchemaSummary(schemaSHA256: hash), problem: shareable)
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
                job.cancellation.cancel()
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

    private func evaluate(_ call: ServerCall) throws {
        guard case .evaluationRequest(let request) = try call.receive() else {
            throw RPCError(.invalidArgument, "Evaluate starts with an EvaluationRequest")
        }
        let model = try receiveModel(from: call, tensorCount: request.tensorCount)
        defer { modelStorage.give(model.values) }
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
        do {
            try witness?.record(seq: task.logSeq, sha256: task.logHeadSHA256, round: task.roundID, logger: logger)
        } catch {
            logger.error("Cannot write the witness file", metadata: ["witness": "\(witness?.path ?? "")", "error": "\(error)"])
        }
        // A secure round is bound to the model's SHA-256: check the bytes against it.
        let global = try receiveModel(from: call, tensorCount: task.tensorCount, expectedSHA256: task.secureAggregation == nil ? nil : task.modelSHA256)
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
            let policy = configuration.policy.requireSecureAggregation ? "policy.require_secure_aggregation"
                : "policy.max_epsilon, which needs differentially private secure rounds"
            throw RPCError(.permissionDenied, "this site's policy requires secure aggregation (\(policy)); "
                + "round \(task.roundID) was offered without it and is refused")
        }
        let job = Job(task: task, global: global, connection: call.connection, secure: session, recycler: modelStorage)
        lock.withLock {
            self.job?.cancellation.cancel()
            self.job = job
        }
        logger.info("Task received", metadata: [
            "round": "\(task.roundID)", "model.version": "\(task.modelVersion)", "secure_aggregation": "\(session != nil)",
        ])
        Thread { [self] in train(job) }.start()
    }

    /// Reads a model streamed after a call's first message, checking every tensor's CRC-32C and,
    /// when `expectedSHA256` is given, the model's SHA-256 (``ModelDigest``) against it.
    private func receiveModel(from call: ServerCall, tensorCount: UInt32, expectedSHA256: [UInt8]? = nil) throws -> ModelParameters {
        var specs: [TensorSpec] = []
        // Tensors are received one after the other into one buffer: the storage of a model this
        // agent let go of when it is large enough (the usual case from the second round on).
        var values = modelStorage.take()
        var total = 0
        var digests: [[UInt8]] = []
        for _ in 0..<tensorCount {
            let header = try TensorStream.readHeader(from: call)
            try TensorStream.validate(header)
            let count = Int(header.totalBytes / 4)
            guard count > 0, count <= 1 << 31 - total else {
                throw RPCError(.invalidArgument, "tensor '\(header.name)' announces \(header.totalBytes) bytes for shape \(header.shape)")
            }
            if values.count < total + count { values = Self.grown(values, to: total + count, keeping: total) }
            try values.withUnsafeMutableBufferPointer { buffer in
                let summary = try TensorStream.receive(
                    from: call, header: header, into: UnsafeMutableBufferPointer(rebasing: buffer[total..<(total + count)]),
                    sha256: expectedSHA256 != nil)
                if let digest = summary.sha256 { digests.append(digest) }
            }
            total += count
            specs.append(TensorSpec(name: header.name, shape: header.shape.map { Int($0) }))
        }
        if values.count > total { values.removeLast(values.count - total) }
        guard try call.receive() == nil else { throw RPCError(.invalidArgument, "unexpected message after the model's tensors") }
        if let expectedSHA256, ModelDigest.combine(digests) != expectedSHA256 {
            throw RPCError(.dataLoss, "the model received does not match the model hash announced")
        }
        do { return try ModelParameters(layout: try ModelLayout(specs), values: values) } catch {
            throw RPCError(.invalidArgument, "the model's tensors are not a valid model: \(error)")
        }
    }

    /// `values` with room for `count` elements, its first `keep` kept: a new buffer, backed by huge
    /// pages where the system allows (its first page-faulting write costs 20 faults per 40 MB).
    private static func grown(_ values: [Float], to count: Int, keeping keep: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            LargeBuffer.adviseHugePages(UnsafeMutableRawBufferPointer(buffer))
            values.withUnsafeBufferPointer { old in
                _ = buffer.initialize(fromContentsOf: UnsafeBufferPointer(rebasing: old[..<keep]))
            }
            // Float is trivial: the rest is written by the receive before anyone reads it.
            initialized = count
        }
    }

    /// Whether an update fits the model: its size, a positive example count and, when
    /// `checkingValues`, every value finite (one pass over it). A plaintext update's values are
    /// checked by its upload instead, in the pass that computes its CRCs chunk by chunk just before
    /// each chunk is encrypted: one read of the update from memory instead of two.
    private static func fits(_ result: TrainingResult, layout: ModelLayout, checkingValues: Bool) -> Bool {
        guard result.delta.count == layout.parameterCount, result.exampleCount > 0 else { return false }
        guard checkingValues else { return true }
        return result.delta.withUnsafeBufferPointer { CRC32C.tensorChecksums($0, ranges: layout.ranges).allFinite }
    }

    func train(_ job: Job) {
        let started = Deadline.now
        let result: TrainingResult
        do {
            result = try trainer.train(task: job.task, global: job.global, cancellation: job.cancellation)
        } catch is TrainingCancelled {
            return
        } catch {
            logger.error("Local training failed; the update is refused here and the coordinator told", metadata: [
                "round": "\(job.task.roundID)", "error": "\(error)",
            ])
            announceFailure(job, reason: "local training failed: \(error)")
            return
        }
        guard Self.fits(result, layout: job.global.layout, checkingValues: job.secure != nil) else {
            logger.error("The trainer returned an update that does not fit the model (size, example count or a non-finite value); not sent",
                         metadata: ["round": "\(job.task.roundID)"])
            announceFailure(job, reason: "the trainer returned an update that does not fit the model")
            return
        }
        let proceed: Bool = lock.withLock {
            guard !job.cancellation.isCancelled else { return false }
            job.update = result
            job.trainSeconds = -started.remainingSeconds
            return true
        }
        guard proceed else { return }
        if job.secure != nil { maskAndAnnounce(job) } else { announce(job) }
    }

    /// Tells the coordinator the update is ready, on the connection the task came on; the answer
    /// arrives once it has been pulled.
    func announce(_ job: Job) {
        guard let update = lock.withLock({ job.update }) else { return }
        let ready = Self.header(job, update)
        let status: RPCStatus
        do {
            _ = try job.connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 600)
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
        guard !job.cancellation.isCancelled else { return }
        var ready = UpdateReady()
        ready.roundID = job.task.roundID
        ready.modelVersion = job.task.modelVersion
        ready.failure = reason
        let status: RPCStatus
        do {
            _ = try job.connection.unary(Methods.announceUpdate, .updateReady(ready), timeout: 30)
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
                // A NaN or infinity stops the upload before its chunk leaves: the update is withdrawn
                // (the coordinator records this site as failed for the round, with this reason).
                _ = try TensorStream.send(
                    name: spec.name, shape: spec.shape, floats: UnsafeBufferPointer(rebasing: delta[layout.range(of: index)]), to: call
                ) { element in
                    let reason = "the trainer's update holds a non-finite value (NaN or infinity) in tensor '\(spec.name)' at element \(element); "
                        + "it is withdrawn, not sent"
                    self.logger.error("Update withdrawn", metadata: ["round": "\(job.task.roundID)", "reason": "\(reason)"])
                    throw RPCError(.aborted, reason)
                }
            }
        }
    }
}
