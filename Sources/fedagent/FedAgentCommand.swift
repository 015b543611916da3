import ArgumentParser
import FedAgent
import FedWire
import Foundation
import Logging

/// `fedagent`: the agent a partner site runs.
@main
struct FedAgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fedagent",
        abstract: "FedCoord agent: joins the federation from behind the site's firewall (outbound connection only).",
        version: fedcoordSoftwareVersion,
        subcommands: [RunCommand.self]
    )

    static func main() {
        WireProcess.ignoreBrokenPipeSignal()
        WireProcess.lineBufferStandardOutput()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// `fedagent run --config agent.json`
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Join the federation and take part in rounds until stopped (SIGTERM/SIGINT).",
        discussion: "Every field of the configuration file can be overridden with --set key.path=value (values are JSON)."
    )

    @Option(help: "The agent's JSON configuration file.") var config: String
    @Option(name: .customLong("set"), help: "Override a configuration field: key.path=value (repeatable).") var overrides: [String] = []
    @Option(help: "Override coordinator.port.") var port: UInt16?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, warning or error.") var logLevel: String = "info"

    func run() throws {
        var settings: [String: String] = [:]
        for item in overrides {
            guard let equals = item.firstIndex(of: "=") else {
                throw ValidationError("--set takes key.path=value, for example --set trainer.delay_seconds=2; got '\(item)'")
            }
            settings[String(item[..<equals])] = String(item[item.index(after: equals)...])
        }
        if let port { settings["coordinator.port"] = "\(port)" }
        let configuration: AgentConfiguration
        do { configuration = try AgentConfiguration.load(path: config, overrides: settings) } catch {
            throw ValidationError("\(error)")
        }
        var logger = Logger(label: "fedagent") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        WireProcess.tuneAllocatorForLargeBuffers()
        let agent = try Agent(configuration: configuration, logger: logger)
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { agent.stop() }
            source.resume()
            sources.append(source)
        }
        agent.run()
        withExtendedLifetime(sources) {}
    }
}
