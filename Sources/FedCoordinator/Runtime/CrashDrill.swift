import Foundation

/// A resilience drill: the coordinator kills itself (SIGKILL, as a power cut would) at a named
/// step of a named round, so that tests and operators can prove a restart resumes from every
/// step of a round's life. Armed only by the environment variable `FEDCOORD_CRASH_AT=STEP:ROUND`;
/// unset (always, in production), every ``reach(_:round:)`` is one comparison.
///
/// Steps: `tasks_sent` (a task and its model delivered), `update_pulled` (an update accepted),
/// `checkpoint_write` (the checkpoint's temporary file written, not yet renamed),
/// `before_record` (checkpoint durable, its record not), `next_setup` (under secure aggregation:
/// the next round's SecureSetup sent while this round's record is not yet durable).
enum CrashDrill {
    enum Step: String, CaseIterable, Sendable {
        case tasksSent = "tasks_sent", updatePulled = "update_pulled", checkpointWrite = "checkpoint_write"
        case beforeRecord = "before_record", nextSetup = "next_setup"
    }

    /// The armed step and round, parsed once.
    static let armed: (step: Step, round: UInt64)? = {
        guard let value = ProcessInfo.processInfo.environment["FEDCOORD_CRASH_AT"] else { return nil }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let step = Step(rawValue: String(parts[0])), let round = UInt64(parts[1]) else {
            FileHandle.standardError.write(Data("FEDCOORD_CRASH_AT must be STEP:ROUND with STEP one of \(Step.allCases.map(\.rawValue)); ignored\n".utf8))
            return nil
        }
        return (step, round)
    }()

    /// Kills the process here if the drill is armed for `step` of `round`.
    static func reach(_ step: Step, round: UInt64) {
        guard let armed, armed.step == step, armed.round == round else { return }
        FileHandle.standardError.write(Data("crash drill: SIGKILL at \(step.rawValue) of round \(round)\n".utf8))
        kill(getpid(), SIGKILL)
    }

    /// Whether the drill waits, at `round`'s record, for the next round's SecureSetup to go out.
    static func waitsForNextSetup(round: UInt64) -> Bool {
        armed.map { $0.step == .nextSetup && $0.round == round } ?? false
    }
}
