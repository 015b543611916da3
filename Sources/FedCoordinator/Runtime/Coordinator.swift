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
/// Threads: the ``RoundDriver``'s one thread owns the round engine. The listener's connection
/// threads and the I/O workers (tasks, pulls, cancels, commits, secure-stage calls, each on a
/// thread of its own) post events to it (``drive(_:)``), or send one and wait for the engine's
/// answer (an announcement's verdict, a pulled update's); the driver applies them in order,
/// executes each one's actions before the next, and ticks the engine every 50 ms. The model sits
/// behind `modelLock` (broadcasts read it under it as a reader-writer lock); the aggregators
/// behind `accumulatorLock` (pulls add, the commit closes). What a round holds besides the
/// engine, its secure session, its figures and the waiting announcements, is the driver
/// thread's: workers change it through events and get the session with their action (the
/// waiters keep `stateLock` for ``stop()``, which answers them from any thread). The joined
/// agents are in their ``AgentRegistry``; the round log behind `logLock`.
/// Locks nest only this way round: `modelLock` → `accumulatorLock`, `modelLock` → `stateLock`,
/// the driver's engine lock (held while it applies an event) → `stateLock` → the registry's.
///
/// One file per part: this one (start-up, the listener's callbacks, executing the engine's
/// actions), `+Tasks` (a task and the model to each agent), `+Updates` (announcements and
/// pulls), `+SecureAggregation` (the FLSECAGG-v1 stages), `+Commit` (aggregate, checkpoint,
/// round record), `+Data` (data reports and federated statistics), `+Evaluation`.
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

    /// The event loop: owns the round engine, applies every change posted to it in order and
    /// executes the actions each returns (``drive(_:)``, ``RoundDriver/perform(_:)``).
    let driver: RoundDriver

    let modelLock = ReadWriteLock()
    var model: GlobalModel  // modelLock
    /// The global model's digest; empty from a plaintext round's close until the commit writer has
    /// hashed the new model (no plaintext task carries it: their tensors are checked by CRC).
    var globalSHA256: [UInt8]  // stateLock
    let accumulatorLock = NSLock()
    /// The plaintext rounds' aggregator (a secure attempt's is its ``SecureRound``).
    let plaintext: any RoundAggregator  // accumulatorLock
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
    var secureRound: SecureRound?  // the driver's thread only
    /// How many times a coordinator has started on this state folder (this start included),
    /// from a counter that only rises (``CheckpointStore/nextEpoch()``); leads every secure round id.
    let startCount: UInt64
    /// Distributed DP: the Rényi accountant over every committed round.
    var accountant = PrivacyAccountant()  // stateLock
    /// Secure statistics sessions so far (their ids must increase).
    var statisticsAttempts = 0  // the statistics thread only

    let stateLock = NSLock()
    /// The joined agents and their current connections.
    let registry = AgentRegistry()
    /// Changed on the driver's thread only; the lock is for ``stop()``, which answers them all.
    var waiters: [String: AnnouncementWaiter] = [:]  // stateLock
    var stats = RoundStats()  // the driver's thread only
    private var stopped = false  // stateLock
    var broadcastAborts: Set<String> = []  // stateLock
    private var refusals: RefusalLimiter  // stateLock
    /// The last round whose SecureSetup went out (for ``CrashDrill``).
    var lastSetupRound: UInt64 = 0  // stateLock
    /// Notified whenever `registry`, `pendingAgents`, `lastSetupRound` or `stopped` change,
    /// for the threads that wait on them (the statistics rounds, a crash drill).
    let stateChanged = WaitSignal()

    let logLock = NSLock()
    let roundLog: RoundLog  // logLock
    private var server: WireServer?  // stateLock (set by run(), read from any thread)
    private let finished = DispatchSemaphore(value: 0)
    /// Writes each round's checkpoint and record while the next round starts.
    let commitWriter = CommitWriter()
    /// Why the coordinator stopped on its own, if it had to (``run()`` throws it).
    var stopError: (any Error)?  // stateLock
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
        driver = RoundDriver(engine: RoundStateMachine(
            policy: configuration.selection, committedRounds: version,
            secureTimeouts: configuration.secureAggregation.enabled
                ? SecureStages.Timeouts(keys: configuration.secureAggregation.keysTimeoutSeconds, unmask: configuration.secureAggregation.unmaskTimeoutSeconds)
                : nil,
            now: 0))
        for spend in history.privacySpend { accountant.compose(q: spend.samplingRate, noiseMultiplier: spend.noiseMultiplier) }
        if roundLog.removedTailBytes > 0 {
            logger.warning("Removed an incomplete last record from the round log (an interrupted write: a crash or a full disk)",
                           metadata: ["bytes": "\(roundLog.removedTailBytes)", "log": "\(store.logPath)"])
            try roundLog.append(RoundLogRecord(.stateRepaired(.init(
                reason: "fedcoord serve: incomplete last record (interrupted write)",
                repaired: ["removed the incomplete last line (\(roundLog.removedTailBytes) bytes) a crash or a full disk left; it was never committed"]))))
        }
        try roundLog.append(RoundLogRecord(.coordinatorStarted(.init(
            modelVersion: version, modelSHA256: globalSHA256.hexString, optimizer: configuration.optimizer.kind.rawValue))))
        startCount = try store.nextEpoch(atLeast: UInt64(history.starts))
        if version > 0 { logger.info("Resumed", metadata: ["model.version": "\(version)", "state": "\(configuration.stateDir)"]) }
    }

    var now: Double { -startUptime.remainingSeconds }

    /// Committed rounds so far.
    public var committedRounds: UInt64 { driver.read(\.modelVersion) }

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
        let server: WireServer
        do {
            server = try WireServer(configuration: wire, delegate: self, logger: logger)
        } catch let error as WireError where error.code == .addressUnusable || error.code == .system {
            throw StrictConfiguration.ConfigurationError("listen.host \"\(wire.host)\", listen.port \(wire.port): \(error.message)")
        }
        stateLock.withLock { self.server = server }
        server.start()
        if isDone { stop() }
        let driverThread = Thread { [self] in
            driver.run(tick: { [self] engine in engine.tick(now: now) }, execute: execute)
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
    func isLastRound(_ version: UInt64) -> Bool { configuration.rounds > 0 && version >= configuration.rounds }

    /// Re-reads the CRL without restarting.
    public func reloadRevocationList() throws { try stateLock.withLock { server }?.reloadRevocationList() }

    // MARK: WireServerDelegate

    public func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome {
        let agent = peer.commonName
        let previous = registry.register(agent, connection)
        stateChanged.notify()
        if let previous, previous !== connection { previous.close(error: WireError(.connectionClosed, "replaced by a new connection")) }
        appendLog(.agentConnected(.init(agent: agent, address: connection.tls.remoteAddress?.description)))
        return Welcome(agentID: agent, federation: configuration.federation, modelSchemaJSON: schemaJSON)
    }

    /// The engine learns of an agent only once its Welcome is sent, so that no task can reach
    /// it before it counts as connected.
    public func connectionJoined(_ connection: RPCConnection) {
        let agent = connection.peer.commonName
        guard registry.isCurrent(agent, connection) else { return }
        // With a data schema, an agent becomes eligible once its data report matches.
        guard schema == nil else { return }
        drive { [self] in $0.agentConnected(agent, now: now) }
    }

    public func connectionClosed(_ connection: RPCConnection, error: WireError?) {
        let agent = connection.peer.commonName
        let wasCurrent: Bool = stateLock.withLock {
            guard registry.remove(agent, ifCurrent: connection) else { return false }
            pendingAgents.remove(agent)
            return true
        }
        guard wasCurrent else { return }
        stateChanged.notify()
        appendLog(.agentDisconnected(.init(agent: agent, reason: error?.message ?? "closed")))
        drive { [self] in $0.agentDisconnected(agent, now: now) }
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

    // MARK: Actions

    /// Posts a change of the engine to the driver, which applies it after every change posted
    /// before and executes the actions it returns; does not wait.
    func drive(_ change: @escaping (inout RoundStateMachine) -> [RoundStateMachine.Action]) {
        driver.post(change)
    }

    /// Executes one of the engine's actions; only the driver's thread calls it.
    private func execute(_ action: RoundStateMachine.Action) {
        // Once stopping, nothing new starts: the round in flight is abandoned, committed state stays.
        if isStopped { return }
        switch action {
        case .attemptStarted(let attempt):
            pendingAdds.wait()
            resetAccumulator()
            stats = RoundStats()
            secureRound = nil
            stateLock.withLock { broadcastAborts = [] }
            startSecureRound(attempt)
            logger.info("Round started", metadata: [
                "round": "\(attempt.roundID)", "round.attempt": "\(attempt.attempt)", "round.seed": "\(attempt.seed)",
                "round.selected": "\(attempt.invited.joined(separator: ","))",
            ])
        case .sendTask(let agent, let attempt):
            let secure = currentSecureRound(attempt.roundID, attempt: attempt.attempt)
            Thread { [self] in sendTask(agent, attempt, secure: secure) }.start()
        case .pull(let agent, let roundID, let attempt):
            let secure = currentSecureRound(roundID, attempt: attempt)
            Thread { [self] in pull(agent, roundID: roundID, attempt: attempt, secure: secure) }.start()
        case .cancel(let agent, let roundID, let attempt, let reason):
            stateLock.withLock { _ = broadcastAborts.insert(agent) }
            resolveWaiter(agent, round: roundID, attempt: attempt, RPCStatus(.deadlineExceeded, reason))
            sendCancel(agent, roundID: roundID, reason: reason)
        case .aggregate(let outcome):
            let (secure, stats) = (currentSecureRound(outcome.attempt.roundID, attempt: outcome.attempt.attempt), stats)
            Thread { [self] in commit(outcome, secure: secure, stats: stats) }.start()
        case .closeSecureStage(let stage, let roundID, let attempt):
            closeSecureStage(stage, roundID: roundID, attempt: attempt)
        case .unmask(let outcome):
            openUnmaskStage(outcome)
        case .attemptFailed(let outcome, let reason, let willRetry):
            pendingAdds.wait()
            resetAccumulator()
            for agent in outcome.attempt.invited { resolveWaiter(agent, round: outcome.attempt.roundID, attempt: outcome.attempt.attempt, RPCStatus(.aborted, reason)) }
            var record = roundRecord(outcome, status: "failed", stats: stats)
            record.reason = reason + (willRetry ? "; retrying with a fresh selection" : "; retries exhausted, waiting for agents")
            appendLog(.attemptFailed(record))
            logger.warning("Round attempt failed", metadata: [
                "round": "\(outcome.attempt.roundID)", "round.attempt": "\(outcome.attempt.attempt)", "reason": "\(reason)",
                "round.retry": "\(willRetry)",
            ])
        }
    }

    /// Forgets the updates of the attempt that ended, plaintext or masked (see ``SecureRound/reset()``).
    private func resetAccumulator() {
        accumulatorLock.withLock {
            plaintext.reset()
            secureRound?.reset()
        }
    }
}
