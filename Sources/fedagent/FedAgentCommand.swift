import ArgumentParser
import FedAgent
import FedCore
import FedLearn
import FedProtocol
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
        subcommands: [RunCommand.self, CheckCommand.self, SynthCommand.self]
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
    @Option(name: .customLong("log-level"), help: "How much to log.") var logLevel: Logger.Level = .info

    func run() throws {
        let configuration = try loadConfiguration(config, overrides: overrides, port: port)
        var logger = Logger(label: "fedagent") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = logLevel
        WireProcess.tuneAllocatorForLargeBuffers()
        WireProcess.keepFreedHeapMemory()
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

/// Reads agent.json with `--set` overrides; a bad file is a usage error saying what to fix.
func loadConfiguration(_ path: String, overrides: [String], port: UInt16?) throws -> AgentConfiguration {
    do {
        var settings = try StrictConfiguration.overrides(overrides, example: "trainer.delay_seconds=2")
        if let port { settings["coordinator.port"] = "\(port)" }
        return try AgentConfiguration.load(path: path, overrides: settings)
    } catch {
        throw ValidationError("\(error)")
    }
}

/// `fedagent check --config agent.json`
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check the site's data against the federation's model schema and print a summary. Sends no data.",
        discussion: """
            Without --schema, connects to the coordinator (mutual TLS, as `run` does) only to read the model schema it \
            publishes, then disconnects. With --schema, reads the schema from a file instead (the coordinator writes it \
            to schema.json in its state folder). Exits 1 when the data does not match, naming the file, line and column.
            """
    )

    @Option(help: "The agent's JSON configuration file.") var config: String
    @Option(help: "Read the model schema from this file instead of asking the coordinator.") var schema: String?
    @Option(name: .customLong("set"), help: "Override a configuration field: key.path=value (repeatable).") var overrides: [String] = []

    func run() throws {
        let configuration = try loadConfiguration(config, overrides: overrides, port: nil)
        guard configuration.trainer.kind != .benchmark else {
            throw ValidationError("trainer.kind is \"benchmark\": this agent has no data to check; set trainer.kind \"local\" and data.csv")
        }
        let schemaJSON: String
        if let schema {
            guard let data = FileManager.default.contents(atPath: schema) else {
                throw ValidationError("cannot read the schema file '\(schema)'")
            }
            schemaJSON = String(decoding: data, as: UTF8.self)
        } else {
            schemaJSON = try fetchSchema(configuration)
        }
        let modelSchema: ModelSchema
        do { modelSchema = try ModelSchema.decode(json: schemaJSON) } catch { throw ValidationError("\(error)") }
        // validate() has checked that a local or command trainer names its data.
        let trainer = SiteTrainer(files: configuration.data!.files)
        do {
            _ = try trainer.prepare(schema: modelSchema)
        } catch {
            print("✘ the data does not match the federation's model schema:\n  \(error)")
            throw ExitCode(1)
        }
        print("✔ the data matches the federation's model schema (\(modelSchema.kind.rawValue), \(modelSchema.features.count) features, "
            + "label '\(modelSchema.label)')")
        print(try trainer.describe())
        print("Nothing was sent: this summary stays on this screen.")
    }

    /// Joins the coordinator only to read the schema in its Welcome.
    func fetchSchema(_ configuration: AgentConfiguration) throws -> String {
        let context = try TLSContext(configuration: .makeClientConfiguration(
            certificateChainPath: configuration.tls.certificate, privateKeyPath: configuration.tls.privateKey,
            trustRootPath: configuration.tls.ca))
        let logger = Logger(label: "fedagent") { StreamLogHandler.standardError(label: $0) }
        let (connection, welcome) = try WireClient.connect(
            host: configuration.coordinator.host, port: configuration.coordinator.port, context: context,
            hello: Hello(agentName: "fedagent check"), options: ConnectionOptions(), logger: logger
        ) { _ in throw RPCError(.unavailable, "fedagent check takes no calls") }
        connection.close()
        guard !welcome.modelSchemaJSON.isEmpty else {
            throw ValidationError("the coordinator trains a raw tensor model without a data schema; there is nothing to check")
        }
        return welcome.modelSchemaJSON
    }
}

/// `fedagent synth --sites 5 --rows 2000 --seed 7 --out DIR`
struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write synthetic hospital data: one CSV per site (non-IID) and a held-out test.csv.",
        discussion: "Columns: admission_id, \(SyntheticHospitals.featureColumns.joined(separator: ", ")), and the outcome \(SyntheticHospitals.labelColumn)."
    )

    @Option(help: "Number of hospitals.") var sites: Int = 5
    @Option(help: "Patients per hospital (and in test.csv).") var rows: Int = 2000
    @Option(help: "Seed: the same seed writes the same files.") var seed: UInt64 = 7
    @Option(help: "Folder to write into (created if needed).") var out: String

    func run() throws {
        let paths: [String]
        do { paths = try SyntheticHospitals.write(sites: sites, rows: rows, seed: seed, to: out) } catch { throw ValidationError("\(error)") }
        for path in paths { print(path) }
        print("Model schema for these files (coordinator.json \"model\"): " + SyntheticHospitals.schema.canonicalJSON())
    }
}

/// `--log-level` takes swift-log's level names and refuses any other, listing them.
extension Logger.Level: @retroactive ExpressibleByArgument {}
