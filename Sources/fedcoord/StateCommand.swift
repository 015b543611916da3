import ArgumentParser
import FedCoordinator
import Foundation

/// `fedcoord state …`: the state folder itself.
struct StateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Check and repair a coordinator's state folder.",
        subcommands: [RepairCommand.self]
    )

    /// `fedcoord state repair --state DIR [--new]`
    struct RepairCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "repair",
            abstract: "Make a state folder whose round log and checkpoints disagree consistent again; nothing is deleted.",
            discussion: """
                Keeps the round log up to the last committed round whose checkpoint exists and matches its hash (or, \
                when no record vouches for one, adopts the newest checkpoint), moves the cut lines to \
                rounds.cut-TIME.jsonl and newer checkpoints to checkpoints/set-aside-TIME/, and appends a \
                state_repaired record saying so. With --new, moves the whole state into archive-TIME/ instead, so \
                that the next `fedcoord serve` starts a new federation. Run it with the coordinator stopped.
                """
        )
        @Option(help: "The coordinator's state folder (its state_dir).") var state: String
        @Flag(help: "Set the whole state aside and start a new federation on the next serve.") var new = false

        func run() throws {
            guard FileManager.default.fileExists(atPath: state) else {
                throw ValidationError("there is no state folder at '\(state)'; pass the coordinator's state_dir")
            }
            do {
                let repair = try StateFolder.repair(directory: state, startOver: new)
                for action in repair.actions { print(action) }
                if let version = repair.resumeVersion {
                    print("The next `fedcoord serve` resumes from model version \(version).")
                } else {
                    print("The next `fedcoord serve` starts a new federation.")
                }
            } catch let error as StateFolderError where error.code == .nothingToRepair {
                print(error.message)
            }
        }
    }
}
