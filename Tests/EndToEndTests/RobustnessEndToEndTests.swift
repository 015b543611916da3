import FedAgent
import FedProtocol
@testable import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// Stragglers, broken uploads, failed quorums and hostile agents, over loopback mTLS.
@Suite("Robustness end to end", .serialized)
struct RobustnessEndToEndTests {
    static let honest: [String: any LocalTrainer] = [
        "hospital-a": BenchmarkTrainer(step: 0.001, exampleCount: 100),
        "hospital-b": BenchmarkTrainer(step: 0.002, exampleCount: 200),
        "hospital-c": BenchmarkTrainer(step: 0.003, exampleCount: 300),
    ]

    /// Rounds of the four sites (three honest, one played by the test): all four must be
    /// connected, three updates make the quorum, the round closes at `deadline` seconds at the latest.
    static func fourSiteConfiguration(
        _ federation: Federation, rounds: Int = 1, deadline: Double, extra selection: [String: Any] = [:], top: [String: Any] = [:]
    ) throws -> CoordinatorConfiguration {
        try federation.coordinatorConfiguration(rounds: rounds, selection: [
            "target": 4, "min_available": 4, "min_updates": 3, "round_deadline_seconds": deadline, "selection_timeout_seconds": 5,
        ].merging(selection) { $1 }, extra: top)
    }

    static func records(_ configuration: CoordinatorConfiguration) throws -> [RoundLogRecord] {
        try RoundLog.verify(path: configuration.stateDir + "/rounds.jsonl")
    }

    /// The model after one FedAvg round of the three honest agents only.
    static func expectedAfterHonestRound(_ configuration: CoordinatorConfiguration) throws -> [Float] {
        let initial = try configuration.initialModel()
        let count = initial.layout.parameterCount
        let trainers = honest.values.compactMap { $0 as? BenchmarkTrainer }
        let total = trainers.reduce(0.0) { $0 + Double($1.exampleCount) }
        let deltas = trainers.map { (Double($0.exampleCount), BenchmarkTrainer.delta(count: count, step: $0.step)) }
        return (0..<count).map { index in
            Float(Double(initial.values[index]) + deltas.reduce(0.0) { $0 + $1.0 * Double($1.1[index]) } / total)
        }
    }

    static func relativeError(_ got: [Float], _ want: [Float]) -> Double {
        var error = 0.0
        var norm = 0.0
        for (g, w) in zip(got, want) {
            error += (Double(g) - Double(w)) * (Double(g) - Double(w))
            norm += Double(w) * Double(w)
        }
        return (error / norm).squareRoot()
    }

    @Test("A straggler is cut at the deadline, its late update gets DEADLINE_EXCEEDED, the round commits with the others")
    func straggler() throws {
        let federation = try Federation()
        let configuration = try Self.fourSiteConfiguration(federation, rounds: 2, deadline: 2)
        let coordinator = try RunningCoordinator(configuration)
        let slow = try ScriptedAgent(federation, name: "hospital-d", port: coordinator.port, upload: .honest(0.5))
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: Self.honest)
        let task = try #require(slow.waitForTask())
        // The straggler finishes after round 1 has closed at its deadline.
        #expect(eventually(20) { (try? Self.records(configuration))?.contains { $0.type == "round" } == true })
        let late = slow.announce(round: task.roundID, version: task.modelVersion)
        #expect(late.code == .deadlineExceeded, "\(late)")
        #expect(coordinator.waitUntilFinished(seconds: 30))
        _ = agents
        let round = try #require(try Self.records(configuration).committedRounds.first)
        #expect(round.reported == ["hospital-a", "hospital-b", "hospital-c"])
        #expect(round.late == ["hospital-d"])
        #expect(round.durationSeconds >= 2)
        let model = try CheckpointStore(directory: configuration.stateDir).readModel(version: 1)
        #expect(Self.relativeError(model.values, try Self.expectedAfterHonestRound(configuration)) <= 1e-6)
    }

    @Test("An agent killed mid-upload leaves the aggregate exactly as if it never took part")
    func killedMidUpload() throws {
        let federation = try Federation()
        // The round closes as soon as nobody can still contribute; the deadline is only a bound
        // (generous: on a loaded CI machine a 5 s one once cut the honest agents too).
        let configuration = try Self.fourSiteConfiguration(federation, deadline: 20, extra: ["max_concurrent_pulls": 1])
        let coordinator = try RunningCoordinator(configuration)
        let broken = try ScriptedAgent(federation, name: "hospital-d", port: coordinator.port, upload: .breakMidway)
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: Self.honest)
        let task = try #require(broken.waitForTask())
        let status = broken.announce(round: task.roundID, version: task.modelVersion)
        #expect(!status.isOK)
        #expect(coordinator.waitUntilFinished(seconds: 60), "records: \((try? Self.records(configuration))?.map { "\($0.type) \($0.event)" } ?? [])")
        _ = agents
        let round = try #require(try Self.records(configuration).committedRounds.first)
        #expect(round.reported == ["hospital-a", "hospital-b", "hospital-c"])
        #expect(round.failed["hospital-d"] != nil, "\(String(describing: round.failed))")
        let model = try CheckpointStore(directory: configuration.stateDir).readModel(version: 1)
        #expect(model.values == (try Self.expectedAfterHonestRound(configuration)), "bit for bit as without hospital-d")
    }

    @Test("An agent whose trainer returns a NaN withdraws its update mid-upload; the round commits without it")
    func trainerReturnsNaN() throws {
        let federation = try Federation()
        let configuration = try Self.fourSiteConfiguration(federation, deadline: 10)
        let coordinator = try RunningCoordinator(configuration)
        // The NaN is the first tensor's last value: found by the upload's check, not before.
        let layout = try configuration.initialModel().layout
        let element = layout.range(of: 0).upperBound - 1
        var trainers = Self.honest
        trainers["hospital-d"] = NaNTrainer(element: element)
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: trainers)
        #expect(coordinator.waitUntilFinished(seconds: 30))
        let round = try #require(try Self.records(configuration).committedRounds.first)
        #expect(round.reported == ["hospital-a", "hospital-b", "hospital-c"])
        let reason = try #require(round.failed["hospital-d"], "\(String(describing: round.failed))")
        #expect(reason.contains("non-finite value (NaN or infinity) in tensor '\(layout.tensors[0].name)' at element \(element)"), "\(reason)")
        let agent = try #require(agents.agents["hospital-d"])
        #expect(eventually(10) { agent.announcementOutcomes[round.round]?.code == .aborted }, "\(agent.announcementOutcomes)")
        let model = try CheckpointStore(directory: configuration.stateDir).readModel(version: 1)
        #expect(model.values == (try Self.expectedAfterHonestRound(configuration)), "bit for bit as without hospital-d")
    }

    @Test("Quorum not reached: the attempt fails, the model is unchanged, and a fresh selection retries and commits")
    func quorumRetry() throws {
        let federation = try Federation()
        let configuration = try federation.coordinatorConfiguration(rounds: 1, selection: [
            "target": 3, "min_available": 3, "min_updates": 3, "round_deadline_seconds": 1.5, "selection_timeout_seconds": 0,
            "max_retries": 3,
        ])
        let coordinator = try RunningCoordinator(configuration)
        // hospital-d takes tasks and never answers; with a and b it makes the first selection.
        let silent = try ScriptedAgent(federation, name: "hospital-d", port: coordinator.port, upload: .honest(0))
        let first = try RunningAgents(federation, port: coordinator.port, trainers: ["hospital-a": Self.honest["hospital-a"]!,
                                                                                    "hospital-b": Self.honest["hospital-b"]!])
        #expect(eventually(20) { (try? Self.records(configuration))?.contains { $0.failedAttempt != nil } == true })
        silent.connection.close()
        let second = try RunningAgents(federation, port: coordinator.port, trainers: ["hospital-c": Self.honest["hospital-c"]!])
        #expect(coordinator.waitUntilFinished(seconds: 30))
        _ = (first, second)
        let records = try Self.records(configuration)
        let failed = try #require(records.compactMap(\.failedAttempt).first)
        #expect(failed.round == 1 && failed.attempt == 0)
        #expect(failed.late.contains("hospital-d"))
        #expect(failed.reason?.contains("min_updates") == true)
        let committed = try #require(records.committedRounds.first)
        #expect(committed.round == 1 && committed.attempt >= 1 && committed.seed != failed.seed)
        #expect(committed.reported == ["hospital-a", "hospital-b", "hospital-c"])
        let model = try CheckpointStore(directory: configuration.stateDir).readModel(version: 1)
        #expect(Self.relativeError(model.values, try Self.expectedAfterHonestRound(configuration)) <= 1e-6)
    }

    @Test("A server step whose result is not finite fails the round with the model unchanged; the next attempt commits")
    func nonFiniteStep() throws {
        let federation = try Federation()
        // Bounds opened up so that the values pass and the step itself overflows (2 × 3.4e38).
        let configuration = try Self.fourSiteConfiguration(
            federation, deadline: 10, extra: ["failure_backoff_seconds": 0],
            top: ["update": ["max_abs": 3.4028234e38], "optimizer": ["kind": "fedavgm", "learning_rate": 2, "momentum": 0]])
        let coordinator = try RunningCoordinator(configuration)
        let initial = try configuration.initialModel()
        let hostile = try ScriptedAgent(federation, name: "hospital-d", port: coordinator.port, upload: .honest(Float.greatestFiniteMagnitude))
        hostile.headerExamples = 10_000_000
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: Self.honest)
        let task = try #require(hostile.waitForTask())
        _ = hostile.announce(round: task.roundID, version: task.modelVersion, examples: 10_000_000)
        #expect(eventually(20) { (try? Self.records(configuration))?.contains { $0.failedAttempt != nil } == true })
        let failed = try #require(try Self.records(configuration).compactMap(\.failedAttempt).first)
        #expect(failed.reason?.contains("not finite") == true, "\(failed.reason ?? "")")
        let model = coordinator.coordinator.modelLock.withReadLock { coordinator.coordinator.model.parameters }
        #expect(model.values == initial.values, "the model stays at version 0")
        hostile.connection.close()
        // The retry, without the hostile site, commits a finite model.
        let more = try RunningAgents(federation, port: coordinator.port, trainers: ["hospital-e": BenchmarkTrainer(step: 0.001, exampleCount: 100)])
        #expect(coordinator.waitUntilFinished(seconds: 40))
        _ = (agents, more)
        let committed = try CheckpointStore(directory: configuration.stateDir).readModel(version: 1)
        let finite = committed.values.allSatisfy { $0.isFinite }
        #expect(finite)
    }

    enum Hostility: String, CaseIterable, Sendable {
        case notSelected, duplicate, wrongShape, notFinite, staleRound, staleModel, lyingSize, zeroExamples
        /// `train_seconds` NaN: JSON cannot hold it; once it stopped the coordinator.
        case nanTrainSeconds
        /// An example count near 2^63: once trapped the accumulator's total.
        case overflowingExamples
        /// 2^40 examples: one site would carry the whole mean.
        case heavyExamples
        /// Finite values near Float.greatestFiniteMagnitude: their mean overflowed into the checkpoint.
        case hugeValues
        /// A failure message of 4 MiB with control characters: kept whole in the log before.
        case longFailure
        /// The pulled update's header claims more examples than were announced.
        case headerExamples
    }

    @Test("Hostile agent inputs are refused with a status and logged; the round completes",
          arguments: ProcessInfo.processInfo.environment["ONLY_HOSTILITY"].flatMap { Hostility(rawValue: $0) }.map { [$0] } ?? Hostility.allCases)
    func hostile(_ hostility: Hostility) throws {
        let federation = try Federation()
        let configuration = try Self.fourSiteConfiguration(federation, deadline: 8)
        let coordinator = try RunningCoordinator(configuration)
        let upload: ScriptedAgent.Upload = switch hostility {
        case .wrongShape: .wrongShape
        case .notFinite: .notFinite
        case .lyingSize: .lyingSize
        case .hugeValues: .honest(3e38)
        default: .honest(0.25)
        }
        let hostile = try ScriptedAgent(federation, name: "hospital-d", port: coordinator.port, upload: upload)
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: Self.honest)
        let task = try #require(hostile.waitForTask())
        let expectedCode: RPCStatus.Code
        let status: RPCStatus
        switch hostility {
        case .notSelected:
            let outsider = try ScriptedAgent(federation, name: "hospital-e", port: coordinator.port, upload: .honest(9))
            status = outsider.announce(round: task.roundID, version: task.modelVersion)
            expectedCode = .permissionDenied
        case .duplicate:
            hostile.uploadDelay = 1.0
            let first = DispatchSemaphore(value: 0)
            let hostileAgent = hostile
            startThread {
                _ = hostileAgent.announce(round: task.roundID, version: task.modelVersion)
                first.signal()
            }
            usleep(300_000)
            status = hostile.announce(round: task.roundID, version: task.modelVersion)
            _ = first.wait(timeout: .now() + 30)
            expectedCode = .alreadyExists
        case .staleRound:
            status = hostile.announce(round: task.roundID + 5, version: task.modelVersion)
            expectedCode = .failedPrecondition
        case .staleModel:
            status = hostile.announce(round: task.roundID, version: task.modelVersion + 3)
            expectedCode = .failedPrecondition
        case .zeroExamples:
            status = hostile.announce(round: task.roundID, version: task.modelVersion, examples: 0)
            expectedCode = .invalidArgument
        case .wrongShape, .notFinite, .lyingSize, .hugeValues:
            status = hostile.announce(round: task.roundID, version: task.modelVersion)
            expectedCode = .invalidArgument
        case .nanTrainSeconds:
            status = hostile.announce(round: task.roundID, version: task.modelVersion) { $0.trainSeconds = .nan }
            expectedCode = .invalidArgument
        case .overflowingExamples:
            status = hostile.announce(round: task.roundID, version: task.modelVersion, examples: UInt64.max - 5)
            expectedCode = .invalidArgument
        case .heavyExamples:
            status = hostile.announce(round: task.roundID, version: task.modelVersion, examples: 1 << 40)
            expectedCode = .invalidArgument
        case .headerExamples:
            hostile.headerExamples = 1 << 30
            status = hostile.announce(round: task.roundID, version: task.modelVersion)
            expectedCode = .invalidArgument
        case .longFailure:
            let message = String(repeating: "trainer crashed\n\u{1B}[2J", count: 4 << 20 / 20)
            status = hostile.announce(round: task.roundID, version: task.modelVersion) { $0.failure = message }
            expectedCode = .ok
        }
        #expect(status.code == expectedCode, "\(hostility): \(status)")
        #expect(coordinator.waitUntilFinished(seconds: 30))
        _ = agents
        let records = try Self.records(configuration)
        let round = try #require(records.committedRounds.first)
        #expect(round.status == "committed")
        #expect(Set(round.reported).isSuperset(of: ["hospital-a", "hospital-b", "hospital-c"]),
                "\(hostility): reported \(round.reported), late \(round.late), failed \(round.failed)")
        let refusal = records.events(RoundLogEvent.UpdateRefused.self).first
        if hostility != .duplicate {
            #expect(refusal?.reason.isEmpty == false, "\(hostility): no update_refused record")
            #expect(!round.reported.contains(refusal?.agent ?? "?"))
        }
        if let reason = refusal?.reason {
            #expect(reason.utf8.count <= SiteText.maxBytes && !reason.contains("\n") && !reason.contains("\u{1B}"), "\(hostility)")
        }
        let logBytes = try FileManager.default.attributesOfItem(atPath: configuration.stateDir + "/rounds.jsonl")[.size] as? Int ?? 0
        #expect(logBytes < 64 << 10, "\(hostility): the round log holds \(logBytes) bytes")
        if [.wrongShape, .notFinite, .lyingSize, .hugeValues, .nanTrainSeconds, .overflowingExamples, .heavyExamples, .headerExamples,
            .longFailure].contains(hostility) {
            let model = try CheckpointStore(directory: configuration.stateDir).readModel(version: 1)
            #expect(Self.relativeError(model.values, try Self.expectedAfterHonestRound(configuration)) <= 1e-6)
        }
    }
}

/// A trainer whose update is finite except for one NaN at `element`.
struct NaNTrainer: LocalTrainer {
    let element: Int
    func train(task: TrainTask, global: ModelParameters, cancellation: Cancellation) throws -> TrainingResult {
        var delta = [Float](repeating: 0.001, count: global.layout.parameterCount)
        delta[element] = .nan
        return TrainingResult(delta: delta, exampleCount: 50, loss: 0)
    }
}
