import FedAgent
import FedCoordinator
import FedCore
import FedWire
import Foundation
import Testing

/// The real `fedcoord` killed (SIGKILL) at each step of a round's life, in plaintext and under
/// secure aggregation; each time a restart commits the next rounds with the same agents, never
/// restarted (secure round ids keep rising across restarts, whatever the agents remember).
@Suite("Crash points", .serialized)
struct CrashPointEndToEndTests {
    static let steps = ["tasks_sent", "update_pulled", "checkpoint_write", "before_record"]

    static func start(_ fedcoord: String, _ config: String, crashAt: String?) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: fedcoord)
        process.arguments = ["serve", "--config", config, "--log-level", "error"]
        var environment = ProcessInfo.processInfo.environment
        environment["FEDCOORD_CRASH_AT"] = crashAt
        process.environment = environment
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test("Killed at each step of round 2, a restart commits rounds 2–4 once each, agents untouched",
          arguments: [false, true])
    func killAtEachStep(secure: Bool) throws {
        let fedcoord = try executable("fedcoord")
        let steps = Self.steps + (secure ? ["next_setup"] : [])
        for step in steps {
            let federation = try Federation()
            let port = try freePort()
            let config = try ProcessEndToEndTests.writeConfiguration(federation, port: port, rounds: 4, secure: secure)
            let trainers: [String: any LocalTrainer] = Dictionary(uniqueKeysWithValues: federation.agents.enumerated().map { index, name in
                (name, BenchmarkTrainer(step: 0.001 * Float(index + 1), exampleCount: UInt64(10 * (index + 1))))
            })
            let agents = try RunningAgents(federation, port: port, trainers: trainers)
            let crashed = try Self.start(fedcoord, config, crashAt: "\(step):2")
            crashed.waitUntilExit()
            #expect(crashed.terminationReason == .uncaughtSignal && crashed.terminationStatus == SIGKILL, "\(step): killed by the drill")
            let restarted = try Self.start(fedcoord, config, crashAt: nil)
            let finished = eventually(60) { !restarted.isRunning }
            if !finished { restarted.terminate() }
            restarted.waitUntilExit()
            #expect(finished && restarted.terminationStatus == 0, "\(step) secure=\(secure): the restart did not finish its rounds")
            let rounds = ProcessEndToEndTests.committedRounds(federation.stateDir)
            #expect(rounds == [1, 2, 3, 4], "\(step) secure=\(secure): \(rounds)")
            #expect(try runProcess(fedcoord, ["rounds", "verify", "--state", federation.stateDir]).0 == 0)
            for agent in agents.agents.values { #expect(agent.joinCount >= 2) }
            _ = agents
        }
    }
}
