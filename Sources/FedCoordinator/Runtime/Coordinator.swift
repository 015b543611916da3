import FedCore
import FedHashing
import FedLearn
import FedProtocol
import FedSecAgg
import FedWire
import Foundation
import Logging

/// The coordinator's runtime: wires the pure ``RoundStateMachine`` to the network, the
/// ``GlobalModel``, the round's ``RoundAggregator``, the checkpoints and the round log.
///
/// Threads: the listener's connection threads and the I/O workers (tasks, pulls, cancels,
/// commits, each on a thread of its own) change the engine under `engineLock` and queue the
/// actions it returns, in that same critical section, for the ``RoundDriver``; the driver's one
/// thread executes them in the engine's order and ticks the engine every 50 ms. The model sits
/// behind `modelLock` (broadcasts read it under it as a reader-writer lock); the aggregators
/// behind `accumulatorLock` (pulls add, the commit closes).
///
/// Memory: the global model (4 bytes per parameter), the optimizer's moments if it has any, an
/// aggregator's sums (see ``MeanAggregator`` and ``SecureRound``), and bounded chunk buffers.
/// Updates are spooled to disk as they are pulled; nothing grows with the number of agents.
public final class Coordinator: WireServerDelegate, @unchecked Sendable {
    // @unchecked: every mutable field is guarded by the lock named beside it.
    public let configuration: CoordinatorConfiguration
    let logger: Logger
    let store: CheckpointStore
    private let startUptime = Deadline.now

    let engineLock = NSLock()
    var engine: RoundStateMachine  // engineLock
    /// Executes the engine's actions in order; see ``drive(_:)``.
    let driver = RoundDriver()

    let modelLock = ReadWriteLock()
    var model: GlobalModel  // modelLock
    /// The global model's digest; empty from a plaintext round's close until the commit writer has
    /// hashed the new model (no plaintext task carries it: their tensors are checked by CRC).
    var globalSHA256: [UInt8]  // stateLock
    /// Lock order: engineLock → accumulatorLock, and modelLock → accumulatorLock.
    let accumulatorLock = NSLock()
    /// The plaintext rounds' aggregator (a secure attempt's is its ``SecureRound``).
    private let plaintext: any RoundAggregator  // accumulatorLock
    /// Updates the engine accepted whose add into the sum has not finished: a commit, and any reset
    /// of the sum, waits for them first (the add runs outside the engine lock).
    let pendingAdds = DispatchGroup()
    /// Spool files reused from pull to pull.
    let spools: SpoolPool
    /// Rounds whose target is at most this many updates never touch the sums: their updates all
    /// go from their spools straight into the mean at the close (10M parameters × 8 agents: no
    /// 80 MB of sums, nor 0.48 GB of traffic through them, per round).
    static let defaultSmallRoundUpdates = 8
    let layout: ModelLayout
    /// The federation's data schema (nil for a raw tensor model), as published in every Welcome.
    let schema: ModelSchema?
    let schemaJSON: String
    let schemaSHA256: [UInt8]
    /// Frozen before round 1 when the schema asks for standardization.
    var standardization: Standardization?  // stateLock
    /// Agents whose data matches, waiting for the standardization before they can be selected.
    var pendingAgents: Set<String> = []  // stateLock
    /// The attempt in flight under secure aggregation.
    var secureRound: SecureRound?  // stateLock
    /// How many times a coordinator has started on this state folder (this start included),
    /// from a counter that only rises (``CheckpointStore/nextEpoch()``); leads every secure round id.
    let startCount: UInt64
    /// Distributed DP: the Rényi accountant over every committed round.
    var accountant = PrivacyAccountant()  // stateLock
    /// Secure statistics sessions so far (their ids must increase).
    var statisticsAttempts = 0  // the statistics thread only

    let stateLock = NSLock()
    var connections: [String: RPCConnection] = [:]  // stateLock
    private var waiters: [String: AnnouncementWaiter] = [:]  // stateLock
    var stats = RoundStats()  // stateLock
    private var stopped = false  // stateLock
    var broadcastAborts: Set<String> = []  // stateLock
    private var refusals: RefusalLimiter  // stateLock
    /// The last round whose SecureSetup went out (for ``CrashDrill``).
    var lastSetupRound: UInt64 = 0  // stateLock
    /// Notified whenever `connections`, `pendingAgents`, `lastSetupRound` or `stopped` change,
    /// for the threads that wait on them (the statistics rounds, a crash drill).
    let stateChanged = WaitSignal()

    let logLock = NSLock()
    let roundLog: RoundLog  // logLock
    private var server: WireServer?  // stateLock (set by run(), read from any thread)
    private let finished = DispatchSemaphore(value: 0)
    /// Writes each round's checkpoint and record while the next round starts.
    private let commitWriter = CommitWriter()
    /// Why the coordinator stopped on its own, if it had to (``run()`` throws it).
    private var stopError: (any Error)?  // stateLock
    let broadcastSlots = DispatchSemaphore(value: 4)

    /// Opens (or resumes from) the state folder. Does not listen yet.
    public convenience init(configuration: CoordinatorConfiguration, logger: Logger) throws {
        try self.init(configuration: configuration, logger: logger, smallRoundUpdates: Self.defaultSmallRoundUpdates)
    }

    /// - Parameter smallRoundUpdates: ``defaultSmallRoundUpdates`` unless a test asks for fewer
    ///   (to add into the sums during a small round).
    init(configuration: CoordinatorConfiguration, logger: Logger, smallRoundUpdates: Int) throws {
        self.configuration = configuration
        self.logger = logger
        refusals = RefusalLimiter(interval: configuration.limits.refusalLogIntervalSeconds)
        store = try CheckpointStore(directory: configuration.stateDir, keep: configuration.keepCheckpoints)
        var history = LogHistory()
        do {
            roundLog = try RoundLog(path: store.logPath) { history.take($0) }
        } catch let error as RoundLogError {
            throw StateFolderError(.logBroken, "the round log \(store.logPath) does not verify (\(error.message)); nothing was changed. "
                + "See `fedcoord rounds verify --state \(configuration.stateDir)`; restore the log from a backup, or run "
                + "`fedcoord state repair --state \(configuration.stateDir)` to cut it before the first bad record (the cut lines are kept "
                + "beside it) and resume from the last round a checkpoint agrees with")
        }
        try StateFolder.check(store: store, logRecords: roundLog.count, history: history)
        // A pull's spool is in use until its update has been added, while the next pulls stream.
        spools = SpoolPool(directory: store.directory + "/spool", idleLimit: configuration.selection.maxConcurrentPulls + max(MeanAggregator.updatesPerAdd, smallRoundUpdates))
        let layout = try configuration.model.layout()
        self.layout = layout
        schema = configuration.model.schema
        schemaJSON = schema?.canonicalJSON() ?? ""
        schemaSHA256 = schema == nil ? [] : Array(schemaJSON.utf8).withUnsafeBytes { SHA256Hasher.hash($0) }
        if let frozen = history.standardization {
            standardization = Standardization(means: frozen.featureMeans, scales: frozen.featureScales)
            try standardization?.validate(featureCount: schema?.features.count ?? frozen.featureMeans.count)
        }
        // Resume: the last committed round record (or a repair's adopted checkpoint) is the commit point.
        let version = history.resumeVersion ?? 0
        if let round = history.resumeVersion {
            let model = try store.readModel(version: round)
            guard model.layout == layout else {
                throw StrictConfiguration.ConfigurationError(
                    "the state folder '\(configuration.stateDir)' holds a model with tensors \(model.layout.tensors.map(\.name)); "
                        + "the configuration describes \(layout.tensors.map(\.name)); use a new state_dir for a new model")
            }
            let digest = CheckpointStore.modelDigest(model)
            guard digest.hexString == history.resumeSHA256 else {
                throw StateFolderError(.checkpointMismatch, "checkpoint \(store.modelPath(version: round)) does not match the hash the round "
                    + "log recorded for round \(round); nothing was changed. Restore the checkpoint from a backup, or run `fedcoord state "
                    + "repair --state \(configuration.stateDir)` to resume from the last round a checkpoint agrees with")
            }
            self.model = GlobalModel(parameters: model, optimizer: store.readOptimizer(settings: configuration.optimizer, version: round))
            globalSHA256 = digest
        } else {
            let initial = try configuration.initialModel()
            globalSHA256 = CheckpointStore.modelDigest(initial)
            try store.writeModel(initial, version: 0, metadata: ["round": "0"])
            model = GlobalModel(parameters: initial, optimizer: ServerOptimizer(settings: configuration.optimizer))
        }
        store.prune(committed: version)
        // The published schema, for `fedagent check --schema` at sites that check offline.
        if schema != nil { try Data((schemaJSON + "\n").utf8).write(to: URL(fileURLWithPath: store.directory + "/schema.json"), options: .atomic) }
        plaintext = configuration.strategy == .mean
            ? MeanAggregator(layout: layout, spools: spools, addsDuringRound: configuration.selection.target > smallRoundUpdates)
            : RobustAggregator(strategy: configuration.strategy, settings: configuration.robust, spools: spools)
        engine = RoundStateMachine(
            policy: configuration.selection, committedRounds: version,
            secureTimeouts: configuration.secureAggregation.enabled
                ? SecureStages.Timeouts(keys: configuration.secureAggregation.keysTimeoutSeconds, unmask: configuration.secureAggregation.unmaskTimeoutSeconds)
                : nil,
            now: 0)
        for spend in history.privacySpend { accountant.compose(q: spend.samplingRate, noiseMultiplier: spend.noiseMultiplier) }
        try roundLog.append(RoundLogRecord(.coordinatorStarted(.init(
            modelVersion: version, modelSHA256: globalSHA256.hexString, optimizer: configuration.optimizer.kind.rawValue))))
        startCount = try store.nextEpoch(atLeast: UInt64(history.starts))
        if version > 0 { logger.info("Resumed", metadata: ["model.version": "\(version)", "state": "\(configuration.stateDir)"]) }
    }

    var now: Double { -startUptime.remainingSeconds }

    /// Committed rounds so far.
    public var committedRounds: UInt64 { engineLock.withLock { engine.modelVersion } }

    // MARK: Running

    /// Listens and runs rounds until ``stop()`` or until the configured number of rounds is committed.
    public func run() throws {
        var wire = WireServer.Configuration(tls: .makeServerConfiguration(
            certificateChainPath: configuration.tls.certificate, privateKeyPath: configuration.tls.privateKey,
            trustRootPath: configuration.tls.ca, revocationListPath: configuration.tls.crl))
        wire.host = configuration.listen.host
        wire.port = configuration.listen.port
        wire.federation = configuration.federation
        wire.connection.maxFrameBytes = configuration.maxFrameBytes
        wire.connection.heartbeatInterval = configuration.heartbeatIntervalSeconds
        wire.connection.livenessTimeout = 3 * configuration.heartbeatIntervalSeconds
        wire.connection.writeStallTimeout = configuration.limits.sendStallSeconds
        wire.connection.maxPeerCalls = configuration.limits.maxCallsPerConnection
        wire.joinTimeout = configuration.limits.joinTimeoutSeconds
        wire.maxConnections = configuration.limits.maxConnections
        let server = try WireServer(configuration: wire, delegate: self, logger: logger)
        stateLock.withLock { self.server = server }
        server.start()
        if isDone { stop() }
        let driverThread = Thread { [self] in
            driver.run(tick: { drive { $0.tick(now: now) } }, execute: execute)
        }
        driverThread.name = "fedcoord-driver"
        driverThread.start()
        if needsStandardization {
            Thread { [self] in gatherStatisticsUntilFrozen() }.start()
        }
        finished.wait()
        // The last aggregated round becomes durable before the process may exit.
        commitWriter.waitUntilIdle()
        server.stop()
        if let error = stateLock.withLock({ stopError }) { throw error }
    }

    /// The port the coordinator listens on (after ``run()`` has started).
    public var port: UInt16 { stateLock.withLock { server }?.port ?? 0 }

    /// Connections open now: handshaking, joining or joined.
    public var openConnectionCount: Int { stateLock.withLock { server }?.openConnectionCount ?? 0 }

    /// Stops: the round in flight is abandoned; committed state stays. Safe from any thread.
    public func stop() {
        let first: Bool = stateLock.withLock {
            defer { stopped = true }
            return !stopped
        }
        if first {
            logger.info("Stopping", metadata: ["model.version": "\(committedRounds)"])
            driver.stop()
            stateChanged.notify()
            let pending = stateLock.withLock { Array(waiters.values) }
            for waiter in pending { waiter.resolve(RPCStatus(.unavailable, "the coordinator is shutting down")) }
            finished.signal()
        }
    }

    var isStopped: Bool { stateLock.withLock { stopped } }
    private var isDone: Bool { isLastRound(committedRounds) }
    /// Whether committing model `version` finishes the configured rounds.
    private func isLastRound(_ version: UInt64) -> Bool { configuration.rounds > 0 && version >= configuration.rounds }

    /// Re-reads the CRL without restarting.
    public func reloadRevocationList() throws { try stateLock.withLock { server }?.reloadRevocationList() }

    // MARK: WireServerDelegate

    public func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome {
        let agent = peer.commonName
        let previous: RPCConnection? = stateLock.withLock {
            let old = connections[agent]
            connections[agent] = connection
            return old
        }
        stateChanged.notify()
        if let previous, previous !== connection { previous.close(error: WireError(.connectionClosed, "replaced by a new connection")) }
        appendLog(.agentConnected(.init(agent: agent, address: connection.tls.remoteAddress?.description)))
        return Welcome(agentID: agent, federation: configuration.federation, modelSchemaJSON: schemaJSON)
    }

    /// The engine learns of an agent only once its Welcome is sent, so that no task can reach
    /// it before it counts as connected.
    public func connectionJoined(_ connection: RPCConnection) {
        let agent = connection.peer.commonName
        guard stateLock.withLock({ connections[agent] === connection }) else { return }
        // With a data schema, an agent becomes eligible once its data report matches.
        guard schema == nil else { return }
        drive { $0.agentConnected(agent, now: now) }
    }

    public func connectionClosed(_ connection: RPCConnection, error: WireError?) {
        let agent = connection.peer.commonName
        let wasCurrent: Bool = stateLock.withLock {
            guard connections[agent] === connection else { return false }
            connections.removeValue(forKey: agent)
            pendingAgents.remove(agent)
            return true
        }
        guard wasCurrent else { return }
        stateChanged.notify()
        appendLog(.agentDisconnected(.init(agent: agent, reason: error?.message ?? "closed")))
        drive { $0.agentDisconnected(agent, now: now) }
    }

    public func connectionRefused(_ refusal: ConnectionRefusal) {
        let reason = "\(refusal.stage.rawValue): \(refusal.reason)"
        let key = RefusalLimiter.Key(host: refusal.address?.host ?? "?", reason: reason)
        guard let count = stateLock.withLock({ refusals.admit(key, now: now) }) else { return }
        appendLog(.agentRefused(.init(
            agent: refusal.commonName, address: refusal.address?.description, reason: reason, count: count > 1 ? count : nil)))
    }

    public func handle(_ call: ServerCall) throws {
        switch call.method {
        case Methods.announceUpdate: try announce(call)
        case Methods.reportData: try receiveDataReport(call)
        default: throw RPCError(.unimplemented, "\(call.method) is not a coordinator method")
        }
    }

    // MARK: Updates

    /// AnnounceUpdate: the verdict comes back only once the update has been pulled and either
    /// added to the aggregate or refused, so that the agent learns what became of its work.
    private func announce(_ call: ServerCall) throws {
        let agent = call.peer.commonName
        guard case .updateReady(let ready) = try call.receiveOnly() else {
            throw RPCError(.invalidArgument, "\(Methods.announceUpdate) takes an UpdateReady message")
        }
        if !ready.failure.isEmpty {
            let reason = "the site's training failed: \(SiteText.clean(ready.failure))"
            refuseUpdate(agent: agent, round: ready.roundID, reason: reason)
            drive { $0.trainingFailed(agent, roundID: ready.roundID, reason: reason, now: now) }
            try call.send(.empty)
            return
        }
        if let problem = Self.problem(with: ready, bounds: configuration.update) {
            refuseUpdate(agent: agent, round: ready.roundID, reason: problem)
            drive { $0.trainingFailed(agent, roundID: ready.roundID, reason: problem, now: now) }
            throw RPCError(.invalidArgument, problem)
        }
        var waiter: AnnouncementWaiter?
        let verdict: RoundStateMachine.Verdict = engineLock.withLock {
            let (verdict, actions) = engine.updateAnnounced(
                agent, roundID: ready.roundID, modelVersion: ready.modelVersion, examples: ready.exampleCount, now: now)
            if verdict == .accept, let attempt = engine.current {
                let accepted = AnnouncementWaiter(round: attempt.roundID, attempt: attempt.attempt)
                waiter = accepted
                stateLock.withLock {
                    waiters[agent] = accepted
                    stats.trainSeconds[agent] = ready.trainSeconds
                    stats.trainLoss[agent] = (ready.trainLoss, ready.exampleCount)
                }
            }
            driver.post(actions)
            return verdict
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
    /// keeps the round id, and a stale pull or cancel must not answer the retry's call).
    private func resolveWaiter(_ agent: String, round: UInt64, attempt: Int, _ status: RPCStatus) {
        let waiter: AnnouncementWaiter? = stateLock.withLock {
            guard let waiter = waiters[agent], waiter.round == round, waiter.attempt == attempt else { return nil }
            waiters.removeValue(forKey: agent)
            return waiter
        }
        waiter?.resolve(status)
    }

    /// Pulls one announced update into a spool file, checking names, shapes, sizes, finiteness
    /// and hashes; then asks the engine whether it still counts, and adds it if so.
    private func pull(_ agent: String, roundID: UInt64, attempt: Int) {
        let started = Deadline.now
        let version = engineLock.withLock { engine.modelVersion }
        let deadline = engineLock.withLock { engine.current?.collectUntil ?? now }
        do {
            guard let connection = stateLock.withLock({ connections[agent] }) else {
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
            let announced = engineLock.withLock { engine.announcedExamples(of: agent) }
            guard header.exampleCount == announced else {
                throw PullFailure(reason: "the update claims \(header.exampleCount) examples; \(announced ?? 0) were announced", refused: true)
            }
            let secure = currentSecureRound(roundID, attempt: attempt)
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
            stateLock.withLock {
                stats.bytesReceived[agent] = UInt64(spool.bytesWritten)
                stats.transferSeconds[agent] = -started.remainingSeconds
            }
            // The engine decides; an accepted update is counted in `pendingAdds` before the engine
            // lock is released, and every reader or reset of the sum (the close, a failed or new
            // attempt) waits for it, so that none can slip in between the decision and the add.
            // The next pulls start while this update is added.
            let (verdict, actions): (RoundStateMachine.Verdict, [RoundStateMachine.Action]) = engineLock.withLock {
                let result = engine.updateReceived(agent, roundID: roundID, attempt: attempt, now: now)
                if result.0 == .accept { pendingAdds.enter() }
                driver.post(result.1)
                return result
            }
            if verdict == .accept { CrashDrill.reach(.updatePulled, round: roundID) }
            if verdict == .accept {
                defer { pendingAdds.leave() }
                handedOver = true
                let closes = actions.contains { if case .aggregate = $0 { true } else { false } }
                do {
                    try accumulatorLock.withLock {
                        try aggregator.add(AcceptedUpdate(agent: agent, spool: spool, weight: header.exampleCount), closesRound: closes)
                    }
                } catch {
                    logger.error("Cannot read a spooled update back", metadata: ["error": "\(error)"])
                }
            }
            switch verdict {
            case .accept: resolveWaiter(agent, round: roundID, attempt: attempt, .ok)
            case .refuse(let error): resolveWaiter(agent, round: roundID, attempt: attempt, Self.status(for: error))
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
            resolveWaiter(agent, round: roundID, attempt: attempt, RPCStatus(failure.refused ? .invalidArgument : .aborted, failure.reason))
            drive { $0.pullFailed(agent, roundID: roundID, attempt: attempt, reason: failure.reason, now: now) }
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

    // MARK: Actions

    /// Changes the engine and queues the actions it returns for the driver, under `engineLock`:
    /// the driver executes them in the order the engine produced them, whoever called.
    func drive(_ change: (inout RoundStateMachine) -> [RoundStateMachine.Action]) {
        engineLock.withLock { driver.post(change(&engine)) }
    }

    /// Executes one of the engine's actions; only the driver's thread calls it.
    private func execute(_ action: RoundStateMachine.Action) {
        // Once stopping, nothing new starts: the round in flight is abandoned, committed state stays.
        if isStopped { return }
        switch action {
        case .attemptStarted(let attempt):
            pendingAdds.wait()
            resetAccumulator()
            stateLock.withLock {
                stats = RoundStats()
                broadcastAborts = []
                secureRound = nil
            }
            startSecureRound(attempt)
            logger.info("Round started", metadata: [
                "round": "\(attempt.roundID)", "round.attempt": "\(attempt.attempt)", "round.seed": "\(attempt.seed)",
                "round.selected": "\(attempt.invited.joined(separator: ","))",
            ])
        case .sendTask(let agent, let attempt):
            Thread { [self] in sendTask(agent, attempt) }.start()
        case .pull(let agent, let roundID, let attempt):
            Thread { [self] in pull(agent, roundID: roundID, attempt: attempt) }.start()
        case .cancel(let agent, let roundID, let attempt, let reason):
            stateLock.withLock { _ = broadcastAborts.insert(agent) }
            resolveWaiter(agent, round: roundID, attempt: attempt, RPCStatus(.deadlineExceeded, reason))
            sendCancel(agent, roundID: roundID, reason: reason)
        case .aggregate(let outcome):
            Thread { [self] in commit(outcome) }.start()
        case .closeSecureStage(let stage, let roundID, let attempt):
            closeSecureStage(stage, roundID: roundID, attempt: attempt)
        case .unmask(let outcome):
            openUnmaskStage(outcome)
        case .attemptFailed(let outcome, let reason, let willRetry):
            pendingAdds.wait()
            resetAccumulator()
            for agent in outcome.attempt.invited { resolveWaiter(agent, round: outcome.attempt.roundID, attempt: outcome.attempt.attempt, RPCStatus(.aborted, reason)) }
            var record = roundRecord(outcome, status: "failed")
            record.reason = reason + (willRetry ? "; retrying with a fresh selection" : "; retries exhausted, waiting for agents")
            appendLog(.attemptFailed(record))
            logger.warning("Round attempt failed", metadata: [
                "round": "\(outcome.attempt.roundID)", "round.attempt": "\(outcome.attempt.attempt)", "reason": "\(reason)",
                "round.retry": "\(willRetry)",
            ])
        }
    }

    /// Mean → server optimizer → checkpoint → round record (the commit point) → next round.
    ///
    /// The checkpoint and the record are written by ``commitWriter`` while the next round starts;
    /// the previous round's writing has finished before this round's mean is applied.
    private func commit(_ outcome: RoundStateMachine.Outcome) {
        let round = outcome.attempt.roundID
        commitWriter.waitUntilIdle()
        pendingAdds.wait()
        guard !isStopped else { return }
        do {
            // A secure attempt's stage 3 has collected its shares before the engine asked for
            // this commit: nothing here waits on the network.
            let secure = currentSecureRound(round, attempt: outcome.attempt.attempt)
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
            var record = roundRecord(outcome, status: "committed")
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
            let done: Bool = engineLock.withLock {
                let next = engine.committed(roundID: round, now: now)
                let done = isLastRound(engine.modelVersion)
                if !done { driver.post(next) }
                return done
            }
            if done {
                commitWriter.waitUntilIdle()
                stop()
            }
        } catch {
            logger.error("Commit failed", metadata: ["round": "\(round)", "error": "\(error)"])
            drive { $0.aggregationFailed(roundID: round, reason: "\(error)", now: now) }
        }
    }

    /// Puts the last committed model and optimizer state back from their checkpoint, after a
    /// step that was not committed has written over them. Under the model's write lock.
    private func restoreCommittedModel(version: UInt64) throws {
        model.parameters = try store.readModel(version: version)
        model.optimizer = store.readOptimizer(settings: configuration.optimizer, version: version)
    }

    /// Forgets the updates of the attempt that ended, plaintext or masked (see ``SecureRound/reset()``).
    private func resetAccumulator() {
        let ended = stateLock.withLock { secureRound }
        accumulatorLock.withLock {
            plaintext.reset()
            ended?.reset()
        }
    }

    private func roundRecord(_ outcome: RoundStateMachine.Outcome, status: String) -> RoundLogEvent.RoundClosed {
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
        stateLock.withLock {
            record.bytesSent = stats.bytesSent
            record.bytesReceived = stats.bytesReceived.filter { outcome.accepted[$0.key] != nil }
            record.trainSeconds = stats.trainSeconds
            record.transferSeconds = stats.transferSeconds
            let losses = stats.trainLoss.filter { outcome.accepted[$0.key] != nil }.values
            let weight = losses.reduce(0.0) { $0 + Double($1.1) }
            if weight > 0 { record.trainLoss = losses.reduce(0.0) { $0 + $1.0 * Double($1.1) } / weight }
        }
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

/// Stops a broadcast between chunks once its agent's task has been cancelled.
struct AbortableSink: MessageSink {
    let call: ClientCall
    let isAborted: () -> Bool
    func send(_ message: Message) throws {
        if isAborted() { throw RPCError(.cancelled, "the round closed while the model was being sent") }
        try call.send(message, endOfStream: false)
    }
}

