import ArgumentParser
import FedCoordinator
import Foundation

/// `fedcoord rounds …`: what the round log says.
struct RoundsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rounds",
        abstract: "Read the round log of a state folder.",
        subcommands: [ListCommand.self, VerifyCommand.self],
        defaultSubcommand: ListCommand.self
    )

    struct StateOption: ParsableArguments {
        @Option(help: "The coordinator's state folder (its state_dir).")
        var state: String

        var logPath: String { state + "/rounds.jsonl" }
    }

    /// `fedcoord rounds [--json] --state DIR`
    struct ListCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Print the round table (default).")
        @OptionGroup var options: StateOption
        @Flag(help: "Print the round records as JSON instead of a table.") var json = false

        func run() throws {
            let records: [RoundLogRecord]
            do { records = try RoundLog.verify(path: options.logPath) } catch {
                throw ValidationError("\(error) (run `fedcoord rounds verify --state \(options.state)` for details)")
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let rounds = records.filter { $0.type == "round" || $0.type == "attempt_failed" }
                print(String(decoding: try encoder.encode(rounds), as: UTF8.self))
            } else {
                print(RoundTable.render(records))
            }
        }
    }

    /// `fedcoord rounds verify --state DIR`
    struct VerifyCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify", abstract: "Check the round log's hash chain; exit 1 naming the first bad record.")
        @OptionGroup var options: StateOption

        func run() throws {
            var committed = 0, count: UInt64 = 0, last: UInt64 = 0
            do {
                var history = LogHistory()
                let scan = try RoundLog.scan(path: options.logPath) { record in
                    history.take(record)
                    if record.type == "round" && record.status == "committed" { committed += 1 }
                }
                count = scan.count
                last = history.resumeVersion ?? 0
                if scan.incompleteTail {
                    FileHandle.standardError.write(Data(("note: the last line is incomplete (the coordinator stopped while writing it: a "
                        + "full disk or a crash); it was never committed and the next serve removes it\n").utf8))
                }
            } catch let error as RoundLogError {
                FileHandle.standardError.write(Data("TAMPERED: \(error.message)\n".utf8))
                throw ExitCode(1)
            }
            // The checkpoints vouch for rounds the log may have lost from its end.
            let store = try CheckpointStore(directory: options.state)
            if let newest = store.modelVersions().last, newest > last + 1 {
                FileHandle.standardError.write(Data(("TRUNCATED: the log ends at round \(last) but checkpoints go up to round \(newest): "
                    + "records were removed from its end\n").utf8))
                throw ExitCode(1)
            }
            print("OK: \(count) records, \(committed) committed rounds, hash chain intact (\(options.logPath))")
        }
    }
}
