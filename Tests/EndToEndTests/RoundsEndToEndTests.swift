import FedAgent
@testable import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// Whole rounds over loopback mTLS with a real coordinator and real agents.
@Suite("Rounds end to end", .serialized)
struct RoundsEndToEndTests {
    /// Each hospital's benchmark trainer: its own step and example count.
    static let trainers: [String: BenchmarkTrainer] = [
        "hospital-a": BenchmarkTrainer(step: 0.001, exampleCount: 100),
        "hospital-b": BenchmarkTrainer(step: 0.002, exampleCount: 300),
        "hospital-c": BenchmarkTrainer(step: -0.004, exampleCount: 50),
        "hospital-d": BenchmarkTrainer(step: 0.0005, exampleCount: 1000),
        "hospital-e": BenchmarkTrainer(step: 0.003, exampleCount: 7),
    ]

    /// `rounds` rounds with all five hospitals in every round.
    static func configuration(_ federation: Federation, rounds: Int) throws -> CoordinatorConfiguration {
        try federation.coordinatorConfiguration(rounds: rounds, selection: [
            "target": 5, "min_available": 5, "min_updates": 5, "round_deadline_seconds": 20, "selection_timeout_seconds": 0.2,
        ])
    }

    /// With the default, each round's five updates go from their spools straight into the mean at
    /// the close; when rounds of five count as large, four are added into the sums during the
    /// round and the fifth joins them at the close.
    @Test("5 agents × 5 rounds: the committed model equals the independently computed weighted mean",
          arguments: [Coordinator.defaultSmallRoundUpdates, 4])
    func fiveByFive(smallRoundUpdates: Int) throws {
        let federation = try Federation()
        let configuration = try Self.configuration(federation, rounds: 5)
        #expect(try federation.runToCompletion(configuration, trainers: Self.trainers, seconds: 60, smallRoundUpdates: smallRoundUpdates),
                "5 rounds did not finish")
        // Independent expectation: FedAvg with η = 1 adds the example-weighted mean delta (in
        // Float64) to the Float32 model each round.
        let initial = try configuration.initialModel()
        let count = initial.layout.parameterCount
        let totalExamples = Self.trainers.values.reduce(0.0) { $0 + Double($1.exampleCount) }
        let deltas = Self.trainers.values.map { (Double($0.exampleCount), BenchmarkTrainer.delta(count: count, step: $0.step)) }
        var expected = initial.values
        for _ in 0..<5 {
            for index in 0..<count {
                let sum = deltas.reduce(0.0) { $0 + $1.0 * Double($1.1[index]) }
                expected[index] = Float(Double(expected[index]) + sum / totalExamples)
            }
        }
        let store = try CheckpointStore(directory: configuration.stateDir)
        let committed = try store.readModel(version: 5)
        var errorSquares = 0.0
        var normSquares = 0.0
        for (got, want) in zip(committed.values, expected) {
            errorSquares += (Double(got) - Double(want)) * (Double(got) - Double(want))
            normSquares += Double(want) * Double(want)
        }
        let relativeError = (errorSquares / normSquares).squareRoot()
        #expect(relativeError <= 1e-6, "relative error \(relativeError)")
        let records = try RoundLog.verify(path: store.logPath)
        let rounds = records.committedRounds
        #expect(rounds.map(\.round) == [1, 2, 3, 4, 5])
        #expect(rounds.allSatisfy { $0.reported.count == 5 && $0.status == "committed" })
        #expect(rounds.last?.modelSHA256 == CheckpointStore.modelHash(committed))
    }

    @Test("A checkpoint that cannot be written stops the coordinator with the error; a restart resumes from the last committed round")
    func checkpointWriteFails() throws {
        let federation = try Federation()
        let configuration = try Self.configuration(federation, rounds: 50)
        let coordinator = try RunningCoordinator(configuration)
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: Self.trainers)
        let store = try CheckpointStore(directory: configuration.stateDir)
        let committed = { (try? RoundLog.verify(path: store.logPath))?.committedRounds.map(\.round) ?? [] }
        #expect(eventually(60) { committed().count >= 2 }, "two rounds did not commit")
        // The disk "fails": the checkpoint folder becomes a file (root ignores permissions, not this).
        let moved = store.checkpointDirectory + ".saved"
        try FileManager.default.moveItem(atPath: store.checkpointDirectory, toPath: moved)
        #expect(FileManager.default.createFile(atPath: store.checkpointDirectory, contents: Data("not a folder".utf8)))
        #expect(coordinator.waitUntilFinished(seconds: 60), "the coordinator did not stop")
        let error = try #require(coordinator.runError)
        #expect("\(error)".contains("checkpoints"), "\(error)")
        let last = try #require(committed().last)
        // Every round in the log is durable: its checkpoint exists with the logged hash.
        try FileManager.default.removeItem(atPath: store.checkpointDirectory)
        try FileManager.default.moveItem(atPath: moved, toPath: store.checkpointDirectory)
        let rounds = try RoundLog.verify(path: store.logPath).committedRounds
        #expect(rounds.map(\.round) == Array(1...last))
        #expect(rounds.last?.modelSHA256 == CheckpointStore.modelHash(try store.readModel(version: last)))
        // A restart on the same folder carries on from there.
        for agent in agents.agents.values { agent.stop() }
        var resumed = configuration
        resumed.rounds = last + 1
        let restarted = try RunningCoordinator(resumed)
        let reconnected = try RunningAgents(federation, port: restarted.port, trainers: Self.trainers)
        #expect(restarted.waitUntilFinished(seconds: 60), "the restarted coordinator did not finish its round")
        #expect(committed() == (1...(last + 1)).map { $0 })
        _ = (federation, agents, reconnected)
    }
}
