import FedAgent
import FedCoordinator
import FedCore
import FedLearn
import FedWire
import Foundation
import Testing

/// Bring your own trainer: a site trains with its own program (here a Python script using only
/// the standard library), and every way such a program can go wrong is caught and reported.
@Suite("Bring-your-own trainer end to end", .serialized)
struct CommandTrainerEndToEndTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/Fixtures/byo_trainer.py"

    @Test("The site's command trains; failing, hanging, wrong shapes, NaN, missing tensors or result are refused and the site stays")
    func misbehaviours() throws {
        let federation = try Federation()
        let modes: [String: String] = ["2": "fail", "3": "hang", "4": "shape", "5": "nan", "6": "names", "7": "noresult"]
        let modesFile = federation.directory + "/modes.json"
        try JSONSerialization.data(withJSONObject: modes).write(to: URL(fileURLWithPath: modesFile))
        let configuration = try LearningEndToEndTests.configuration(federation, rounds: 8, selection: [
            "target": 5, "min_available": 5, "min_updates": 4, "round_deadline_seconds": 20, "selection_timeout_seconds": 0.2,
            "failure_backoff_seconds": 0,
        ], evaluateEvery: 0)
        let coordinator = try RunningCoordinator(configuration)
        var trainers = LearningEndToEndTests.trainers(holdout: nil)
        trainers["hospital-b"] = CommandTrainer(
            command: ["python3", Self.script, modesFile], timeoutSeconds: 2, workDirectory: federation.directory + "/byo",
            files: .init(csv: LearningEndToEndTests.site(2), holdoutFraction: 0))
        let agents = try RunningAgents(federation, port: coordinator.port, trainers: trainers)
        #expect(coordinator.waitUntilFinished(seconds: 120), "8 rounds did not finish")
        let records = try RoundLog.verify(path: CheckpointStore(directory: configuration.stateDir).logPath)
        let rounds = Dictionary(uniqueKeysWithValues: records.committedRounds.map { ($0.round, $0) })
        #expect(rounds.count == 8)
        // Rounds 1 and 8: the script's update is used like anyone's.
        for round: UInt64 in [1, 8] {
            #expect(rounds[round]?.reported.contains("hospital-b") == true, "round \(round): \(String(describing: rounds[round]?.failed))")
            #expect(rounds[round]?.examples?["hospital-b"] == 131)
        }
        let expected: [UInt64: String] = [
            2: "exited with status 3; its last error output: byo_trainer: the GPU is on fire",
            3: "did not finish within 2.0 s",
            4: "tensor 'layer0.weight' came back with shape [30, 1]; the model's is [1, 30]",
            5: "non-finite value (NaN or infinity) at element 3",
            6: "the updated weights hold tensors [\"layer0.weight\"]",
            7: "wrote no JSON result",
        ]
        for (round, reason) in expected {
            let failure = rounds[round]?.failed["hospital-b"] ?? ""
            #expect(failure.contains(reason), "round \(round): \(failure)")
            #expect(rounds[round]?.reported.count == 4)
            #expect(records.events(RoundLogEvent.UpdateRefused.self).contains { $0.round == round && $0.agent == "hospital-b" })
        }
        // It never left the federation.
        #expect(agents.agents["hospital-b"]?.joinCount == 1)
        // The hang was stopped: no python process of this test is left.
        let leftover = Process()
        leftover.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        leftover.arguments = ["-f", modesFile]
        leftover.standardOutput = FileHandle.nullDevice
        try leftover.run()
        leftover.waitUntilExit()
        #expect(leftover.terminationStatus == 1, "a training command is still running")
    }
}
