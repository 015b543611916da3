import ArgumentParser
import FedCoordinator
import FedCore
import FedWire
import Foundation
import Logging

/// `fedcoord serve --config coordinator.json`
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the coordinator: accept agents, run rounds, commit checkpoints and the round log.",
        discussion: """
            Every field of the configuration file can be overridden: --set selection.target=3 (values are JSON). \
            On an existing state folder it resumes after the last committed round. SIGTERM or SIGINT stop it \
            gracefully: the round in flight is abandoned, committed state stays.
            """
    )

    @Option(help: "The coordinator's JSON configuration file.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a configuration field: key.path=value (repeatable).")
    var overrides: [String] = []

    @Option(help: "Override listen.port.") var port: UInt16?
    @Option(name: .customLong("state-dir"), help: "Override state_dir.") var stateDir: String?
    @Option(help: "Override rounds (stop after this many committed rounds; 0 runs until stopped).") var rounds: UInt64?
    @Option(name: .customLong("log-level"), help: "How much to log.") var logLevel: Logger.Level = .info

    func run() throws {
        let configuration: CoordinatorConfiguration
        do {
            var settings = try StrictConfiguration.overrides(overrides, example: "selection.target=3")
            if let port { settings["listen.port"] = "\(port)" }
            if let stateDir { settings["state_dir"] = "\"\(stateDir)\"" }
            if let rounds { settings["rounds"] = "\(rounds)" }
            configuration = try CoordinatorConfiguration.load(path: config, overrides: settings)
        } catch {
            throw ValidationError("\(error)")
        }
        let logger = makeLogger(label: "fedcoord", level: logLevel)
        WireProcess.tuneAllocatorForLargeBuffers()
        let descriptors = WireProcess.raiseDescriptorLimit()
        logger.debug("Descriptor limit", metadata: ["limit": "\(descriptors)"])
        let coordinator = try Coordinator(configuration: configuration, logger: logger)
        let signals = SignalStopper { coordinator.stop() }
        try coordinator.run()
        withExtendedLifetime(signals) {}
    }
}

/// Stops something on SIGTERM or SIGINT (once), without killing the process mid-commit.
final class SignalStopper: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []

    init(_ stop: @escaping @Sendable () -> Void) {
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop() }
            source.resume()
            sources.append(source)
        }
    }
}

/// Logs to standard error, data in metadata.
func makeLogger(label: String, level: Logger.Level) -> Logger {
    var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = level
    return logger
}

/// `--log-level` takes swift-log's level names and refuses any other, listing them.
extension Logger.Level: @retroactive ExpressibleByArgument {}
