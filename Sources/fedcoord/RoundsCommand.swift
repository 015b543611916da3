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
                let rounds = records.filter { $0.committedRound != nil || $0.failedAttempt != nil }
                print(String(decoding: try encoder.encode(rounds), as: UTF8.self))
            } else {
                print(RoundTable.render(records))
            }
        }
    }

    /// `fedcoord rounds verify --state DIR`
    struct VerifyCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify", abstract: "Check the round log's hash chain; exit 1 naming the first bad record.",
            discussion: """
                Also checks the log against the checkpoints (a log that ends before the newest one was cut) and, with                 --witness, against the chain heads sites were shown (each agent's witness.jsonl): a log cut or                 rewritten after a site saw a head fails, even with every later hash recomputed.
                """)
        @OptionGroup var options: StateOption
        @Option(name: .customLong("witness"), help: "A site's witness file (repeatable).") var witnesses: [String] = []

        func run() throws {
            var committed = 0, count: UInt64 = 0, last: UInt64 = 0
            do {
                var history = LogHistory()
                let scan = try RoundLog.scan(path: options.logPath) { record in
                    history.take(record)
                    if record.committedRound != nil { committed += 1 }
                }
                count = scan.count
                last = history.resumeVersion ?? 0
                if scan.incompleteTail {
                    FileHandle.standardError.write(Data(("note: incomplete last record (interrupted write): the coordinator stopped while writing the last line (a "
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
            var witnessed = ""
            if !witnesses.isEmpty {
                let report: WitnessCheck.Report
                do { report = try WitnessCheck.check(logPath: options.logPath, witnessPaths: witnesses) } catch {
                    throw ValidationError("\(error)")
                }
                guard report.problems.isEmpty else {
                    for problem in report.problems { FileHandle.standardError.write(Data("WITNESS: \(problem)\n".utf8)) }
                    throw ExitCode(1)
                }
                witnessed = "; all \(report.heads) heads seen by \(witnesses.count) site file(s) present"
            }
            print("OK: \(count) records, \(committed) committed rounds, hash chain intact\(witnessed) (\(options.logPath))")
        }
    }
}
